"""Augmentation keeps ImageDataGenerator's meanings (shear in degrees, centred transforms)."""

import numpy as np
import pytest

from cnnclf.config import load_config
from cnnclf.data.augment import make_augmenter


def augment(overrides, images, seed=(1, 2)):
    import tensorflow as tf

    config = load_config(None, overrides)
    fn = make_augmenter(config.augment, images.shape[1:3])
    return fn(tf.constant(images, tf.float32), tf.constant(seed, tf.int64)).numpy()


def gradient_batch(n=8, size=32):
    y, x = np.mgrid[0:size, 0:size]
    image = (x * 4 + y * 2).astype(np.float32)[..., None]
    return np.repeat(image[None], n, axis=0)


@pytest.mark.slow  # imports TensorFlow
def test_tutorial_shear_is_degrees_so_barely_changes_pixels():
    images = gradient_batch()
    out = augment(["augment.shear_range=0.2"], images)
    assert np.abs(out - images).max() < 1.0  # 0.2 degrees: sub-pixel moves only
    strong = augment(["augment.shear_range=30"], images)
    assert np.abs(strong - images).max() > 10


@pytest.mark.slow  # imports TensorFlow
def test_zoom_is_about_the_centre():
    images = np.zeros((4, 33, 33, 1), np.float32)
    images[:, 16, 16] = 255.0
    out = augment(["augment.zoom_range=[0.5, 0.9]"], images)
    assert (out[:, 16, 16, 0] > 200).all()  # centre pixel stays put
    assert not np.allclose(out, images)


@pytest.mark.slow  # imports TensorFlow
def test_flip_gives_original_or_mirror_and_repeats_with_seed():
    images = gradient_batch(16)
    out = augment(["augment.horizontal_flip=true"], images)
    mirrored = images[:, :, ::-1]
    for got, original, mirror in zip(out, images, mirrored):
        assert np.array_equal(got, original) or np.array_equal(got, mirror)
    assert any(np.array_equal(g, m) for g, m in zip(out, mirrored))
    assert np.array_equal(out, augment(["augment.horizontal_flip=true"], images))


@pytest.mark.slow  # imports TensorFlow
@pytest.mark.parametrize("flip, axis", [("horizontal_flip", 2), ("vertical_flip", 1)])
def test_flip_with_zoom_mirrors_the_zoomed_image(flip, axis):
    """As ImageDataGenerator: transform first, then flip (the flip rides in the matrix)."""
    images = gradient_batch(16, 33)
    zoom = "augment.zoom_range=[0.6, 0.9]"
    zoomed = augment([zoom], images)
    out = augment([zoom, f"augment.{flip}=true"], images)
    mirrored = np.flip(zoomed, axis=axis)
    flipped = [np.allclose(got, m, atol=1e-3) for got, m in zip(out, mirrored)]
    kept = [np.allclose(got, z, atol=1e-3) for got, z in zip(out, zoomed)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert any(flipped) and any(kept)


@pytest.mark.slow  # imports TensorFlow
def test_brightness_multiplies_and_clips():
    images = np.full((8, 4, 4, 3), 100.0, np.float32)
    out = augment(["augment.brightness_range=[2.0, 3.0]"], images)
    assert (out >= 200).all() and (out <= 255).all()


@pytest.mark.parametrize(
    "override",
    ["augment.rotation_range=20", "augment.width_shift_range=0.2", "augment.height_shift_range=3"],
)
@pytest.mark.slow  # imports TensorFlow
def test_geometric_transforms_keep_shape_and_range(override):
    images = gradient_batch()
    out = augment([override], images)
    assert out.shape == images.shape
    assert out.min() >= images.min() - 1e-3 and out.max() <= images.max() + 1e-3


def dot_after(size, dot, **params):
    """Where a single bright pixel lands after one explicit affine transform."""
    import tensorflow as tf

    from cnnclf.data.augment import affine_matrices, apply_affine

    image = np.zeros((1, size, size, 1), np.float32)
    image[0, dot[0], dot[1]] = 255.0
    values = {
        "rotation": 0.0,
        "shift_x": 0.0,
        "shift_y": 0.0,
        "shear": 0.0,
        "zoom_x": 1.0,
        "zoom_y": 1.0,
        **params,
    }
    m = affine_matrices(
        **{k: tf.constant([v], tf.float32) for k, v in values.items()}, image_size=(size, size)
    )
    out = apply_affine(tf.constant(image), m, fill_mode="constant").numpy()[0, :, :, 0]
    return tuple(int(i) for i in np.unravel_index(np.argmax(out), out.shape))


@pytest.mark.slow  # imports TensorFlow
def test_width_shift_moves_pixels_horizontally_and_height_shift_vertically():
    # Output pixel x samples input x + shift, as ImageDataGenerator's matrices do.
    assert dot_after(21, (10, 15), shift_x=4.0) == (10, 11)
    assert dot_after(21, (10, 15), shift_y=4.0) == (6, 15)


@pytest.mark.slow  # imports TensorFlow
def test_shear_is_along_x_about_the_centre():
    # 20 degrees: a dot 8 rows above the centre lands ~2.9 columns left, ~0.5 rows higher.
    row, col = dot_after(21, (2, 10), shear=20.0)
    assert row in (1, 2) and col in (7, 8)
    assert dot_after(21, (10, 10), shear=20.0) == (10, 10)


@pytest.mark.slow  # imports TensorFlow
def test_rotation_turns_about_the_centre():
    assert dot_after(21, (10, 10), rotation=90.0) == (10, 10)
    row, col = dot_after(21, (10, 18), rotation=90.0)  # 8 px right of centre
    assert (abs(row - 10), col) in ((8, 10),)


def random_matrices(rng, n, size):
    import tensorflow as tf

    from cnnclf.data.augment import affine_matrices

    def draw(low, high):
        return tf.constant(rng.uniform(low, high, n), tf.float32)

    return affine_matrices(
        draw(-40, 40), draw(-6, 6), draw(-6, 6), draw(-25, 25), draw(0.5, 1.5), draw(0.5, 1.5), size
    )


@pytest.mark.slow
@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect", "wrap"])
def test_the_resampler_matches_keras_affine_transform(fill_mode):
    """The fast resampler gives Keras' (TensorFlow's kernel's) pixels, rotation included."""
    import keras
    import tensorflow as tf

    from cnnclf.data.augment import apply_affine

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 23, 31, 3)).astype(np.uint8)
    m = random_matrices(rng, 8, (23, 31))
    transform = tf.concat([tf.reshape(m, [-1, 9])[:, :6], tf.zeros([8, 2])], axis=1)
    expected = keras.ops.image.affine_transform(
        tf.constant(images, tf.float32),
        transform,
        interpolation="bilinear",
        fill_mode=fill_mode,
        fill_value=7.5,
    ).numpy()
    for dtype in (np.uint8, np.float32):
        out = apply_affine(tf.constant(images.astype(dtype)), m, fill_mode, 7.5).numpy()
        assert out.dtype == np.float32
        assert np.abs(out - expected).max() < 0.01, (fill_mode, dtype)


@pytest.mark.slow  # imports TensorFlow
def test_uint8_batches_augment_as_float_ones():
    images = gradient_batch(8, 33)
    overrides = [
        "augment.zoom_range=0.3",
        "augment.rotation_range=15",
        "augment.horizontal_flip=true",
        "augment.brightness_range=[0.5, 1.5]",
    ]
    as_float = augment(overrides, images)
    as_uint8 = augment(overrides, images.astype(np.uint8))
    assert np.abs(as_float - as_uint8).max() < 0.01
    assert (
        np.abs(
            augment(["augment.horizontal_flip=true"], images.astype(np.uint8))
            - augment(["augment.horizontal_flip=true"], images)
        ).max()
        == 0
    )


def trained_history(tmp_path, name, tree, **augment_keys):
    from helpers import read_json, run_cli, write_config

    config = write_config(
        tmp_path / f"{name}.yaml",
        tree,
        augment={"shear_range": 0.0, "zoom_range": 0.0, "horizontal_flip": False, **augment_keys},
        train={"epochs": 2, "seed": 5, "deterministic": True},
    )
    result = run_cli("train", "--config", config, "--out", tmp_path / name)
    assert result.exit_code == 0, result.output
    return result, read_json(tmp_path / name / "history.json")["loss"]


@pytest.mark.slow
def test_augmenting_in_the_training_step_trains_on_augmented_images(tmp_path, binary_tree):
    import keras

    _, plain = trained_history(tmp_path, "plain", binary_tree)
    result, step = trained_history(
        tmp_path, "step", binary_tree, rotation_range=30, zoom_range=0.3, where="step"
    )
    assert "augmentation: in the training step" in result.stderr
    assert step != plain  # the images were transformed
    # The saved model is the plain one: it reloads, and nothing random runs at prediction.
    model = keras.saving.load_model(tmp_path / "step" / "model.keras", compile=False)
    assert not any("augment" in layer.name for layer in model.layers)
    _, again = trained_history(
        tmp_path, "step_again", binary_tree, rotation_range=30, zoom_range=0.3, where="step"
    )
    assert again == step  # seeded


def test_augment_where_auto_is_the_pipeline_on_cpu_and_the_step_on_a_gpu():
    from cnnclf.data.augment import where_to_augment

    assert where_to_augment("auto", ["/job:localhost/replica:0/task:0/device:CPU:0"]) == "pipeline"
    assert where_to_augment("auto", ["/physical_device:GPU:0"]) == "step"
    assert where_to_augment("step", ["/device:CPU:0"]) == "step"
