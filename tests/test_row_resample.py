"""The CPU row resampler gives the pixels of `augment.apply_affine` (and so of Keras'
`affine_transform`) for every transform without rotation."""

import numpy as np
import pytest

from cnnclf.config import load_config


def unrotated_matrices(rng, n, size):
    import tensorflow as tf

    from cnnclf.data.augment import affine_matrices, flip_matrices

    def draw(low, high):
        return tf.constant(rng.uniform(low, high, n), tf.float32)

    m = affine_matrices(
        tf.zeros([n]), draw(-6, 6), draw(-6, 6), draw(-25, 25), draw(0.5, 1.5), draw(0.5, 1.5), size
    )
    flips = [tf.constant(rng.random(n) < 0.5) for _ in range(2)]
    return (m @ flip_matrices(*flips, n, size)).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("fill_mode", ["nearest", "constant"])
@pytest.mark.parametrize("shape", [(23, 31, 3), (17, 12, 1), (64, 64, 3)])
def test_rows_give_the_pixels_of_apply_affine(fill_mode, shape):
    import tensorflow as tf

    from cnnclf.data.augment import apply_affine
    from cnnclf.data.row_resample import resample

    rng = np.random.default_rng(sum(shape))
    m = unrotated_matrices(rng, 8, shape[:2])
    for dtype in (np.uint8, np.float32):
        images = rng.integers(0, 256, (8, *shape)).astype(dtype)
        expected = apply_affine(tf.constant(images), m, fill_mode, 7.5).numpy()
        out = resample(images, m, fill_mode == "constant", 7.5)
        assert out.dtype == np.float32 and out.shape == expected.shape
        # Positions agree to float32 rounding: on random noise a pixel's value moves up to
        # 255 levels per pixel of position, so an ulp of position shows as ~0.001-0.004.
        assert np.abs(out - expected).max() < 0.01, (dtype, fill_mode)
    if fill_mode == "constant":
        far = m.copy()
        far[:, 0, 2] += 1000  # every sampled position lies outside the image
        assert (resample(images, far, True, 7.5) == 7.5).all()


@pytest.mark.slow  # imports TensorFlow
def test_rotated_matrices_are_refused():
    import tensorflow as tf

    from cnnclf.data.augment import affine_matrices
    from cnnclf.data.row_resample import resample, supports

    m = affine_matrices(*(tf.constant([v]) for v in (10.0, 0.0, 0.0, 0.0, 1.0, 1.0)), (8, 8))
    with pytest.raises(ValueError, match="rotation"):
        resample(np.zeros((1, 8, 8, 3), np.uint8), m.numpy(), False, 0.0)
    assert supports("nearest", 0) and supports("constant", 0.0)
    assert not supports("nearest", 10) and not supports("reflect", 0)


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["augment.shear_range=0.2", "augment.zoom_range=0.2", "augment.horizontal_flip=true"],
        [
            "augment.width_shift_range=0.2",
            "augment.height_shift_range=3",
            "augment.vertical_flip=true",
            "augment.fill_mode=constant",
            "augment.cval=40",
            "augment.brightness_range=[0.5, 1.5]",
        ],
    ],
)
def test_the_pipeline_augments_as_the_training_step_does(overrides):
    """augment.where: pipeline (rows, on the CPU) and step (XLA, on the device) draw the same
    transforms from the same seed and give the same pixels."""
    import tensorflow as tf

    from cnnclf.data.augment import make_augmenter

    config = load_config(None, overrides)
    images = tf.constant(np.random.default_rng(3).integers(0, 256, (6, 40, 40, 3)), tf.uint8)
    seed = tf.constant([4, 5], tf.int64)
    rows = make_augmenter(config.augment, (40, 40), where="pipeline")(images, seed).numpy()
    step = make_augmenter(config.augment, (40, 40), where="step")(images, seed).numpy()
    assert np.abs(rows - step).max() < 0.01
    assert np.abs(rows - images.numpy()).max() > 1  # it did transform
