"""ImageDataGenerator's random transforms, rebuilt as batched TensorFlow ops for `tf.data`.

Why not chain Keras' RandomRotation/RandomZoom/RandomShear/RandomTranslation layers: each one
resamples the image again (four interpolations blur more than one), and `RandomShear` shears
about the image corner by a fraction of the side, whereas the tutorial's `shear_range` is an
angle in degrees about the centre. Here every geometric transform is composed into one affine
matrix per image, exactly as legacy `ImageDataGenerator.random_transform` did, and applied with
one bilinear resampling per batch (`apply_affine`: Keras' `affine_transform` pixels, faster).

Where it runs (augment.where): in the input pipeline on the CPU (it overlaps the training
step), or inside the training step on the device, where the host would otherwise be too slow
to keep an accelerator fed (`augmenting_model`). Never inside the saved model: random layers
in a `.keras` file break reload and make exported models augment at serving time.
"""

from __future__ import annotations

import functools
import math

from cnnclf.config import AugmentConfig


def is_active(augment: AugmentConfig) -> bool:
    return bool(
        augment.rotation_range
        or augment.width_shift_range
        or augment.height_shift_range
        or augment.shear_range
        or augment.zoom_range
        or augment.horizontal_flip
        or augment.vertical_flip
        or augment.brightness_range
    )


def make_augmenter(augment: AugmentConfig, image_size: tuple[int, int], where: str = "pipeline"):
    """Returns `fn(images, seed) -> images` for batches [B, H, W, C] in 0-255 (uint8 or
    float); the result is float32.

    `seed` is a stateless-RNG seed (int64 tensor of shape [2]) that the pipeline draws per
    batch from a seeded `tf.data.Dataset.random`, so runs repeat exactly for the same seed.
    `where` is where the function will run: "pipeline" (tf.data, on the CPU: without rotation
    the transform goes through `row_resample`, much faster there) or "step" (inside a compiled
    training step, on any device: `apply_affine`). Both give the same pixels.
    """
    import tensorflow as tf

    height, width = image_size
    zoom = augment.zoom_range
    zoom_low, zoom_high = zoom if isinstance(zoom, list) else (1 - zoom, 1 + zoom)
    # As in ImageDataGenerator: shifts < 1 are fractions of the side, >= 1 are pixels.
    shift_y = augment.height_shift_range * (height if augment.height_shift_range < 1 else 1)
    shift_x = augment.width_shift_range * (width if augment.width_shift_range < 1 else 1)
    geometric = bool(
        augment.rotation_range
        or shift_x
        or shift_y
        or augment.shear_range
        or zoom_low != 1
        or zoom_high != 1
    )

    def uniform(seed, index, batch, low, high):
        return tf.random.stateless_uniform([batch], seed=seed + index, minval=low, maxval=high)

    def augmenter(images, seed):
        batch = tf.shape(images)[0]
        seed = tf.cast(seed, tf.int64)
        if not geometric:
            images = tf.cast(images, tf.float32)  # the resampler casts as it reads
        flip_x = (uniform(seed, 6, batch, 0.0, 1.0) < 0.5) if augment.horizontal_flip else None
        flip_y = (uniform(seed, 7, batch, 0.0, 1.0) < 0.5) if augment.vertical_flip else None
        if geometric:
            # Flips ride along in the affine matrix (sampled positions mirrored), as
            # ImageDataGenerator flipped after transforming: one resampling pass, no extra
            # full-batch copy.
            matrices = _matrices(seed, batch) @ flip_matrices(
                flip_x, flip_y, batch, (height, width)
            )
            images = _affine(images, matrices)
        else:
            if flip_x is not None:
                images = tf.where(flip_x[:, None, None, None], tf.reverse(images, axis=[2]), images)
            if flip_y is not None:
                images = tf.where(flip_y[:, None, None, None], tf.reverse(images, axis=[1]), images)
        if augment.brightness_range:
            low, high = augment.brightness_range
            factor = uniform(seed, 8, batch, low, high)
            images = tf.clip_by_value(images * factor[:, None, None, None], 0.0, 255.0)
        return images

    def _matrices(seed, batch):
        rotation = uniform(seed, 0, batch, -augment.rotation_range, augment.rotation_range)
        dx = uniform(seed, 1, batch, -shift_x, shift_x)
        dy = uniform(seed, 2, batch, -shift_y, shift_y)
        shear = uniform(seed, 3, batch, -augment.shear_range, augment.shear_range)
        zx = uniform(seed, 4, batch, zoom_low, zoom_high)
        zy = uniform(seed, 5, batch, zoom_low, zoom_high)
        return affine_matrices(rotation, dx, dy, shear, zx, zy, (height, width))

    _affine = _affine_resampler(augment, where)
    return augmenter


def _affine_resampler(augment: AugmentConfig, where: str):
    """`fn(images, matrices)`: `row_resample` where it can run (the pipeline, no rotation),
    `apply_affine` otherwise; the same pixels either way."""
    import tensorflow as tf

    from cnnclf.data import row_resample

    if not (
        where == "pipeline" and row_resample.supports(augment.fill_mode, augment.rotation_range)
    ):
        return lambda images, m: apply_affine(images, m, augment.fill_mode, augment.cval)

    def by_rows(images, m):
        out = tf.numpy_function(
            row_resample.resample,
            [images, m, augment.fill_mode == "constant", augment.cval],
            tf.float32,
            stateful=False,
        )
        out.set_shape(images.shape)
        return out

    return by_rows


def where_to_augment(setting: str, devices: list[str]) -> str:
    """Resolves augment.where: `auto` is the training step on an accelerator, where the CPU
    feeding it is the bottleneck, and the input pipeline on CPU, where it overlaps the step."""
    if setting != "auto":
        return setting
    return (
        "step" if any(":GPU:" in d.upper() or ":TPU:" in d.upper() for d in devices) else "pipeline"
    )


def augmenting_model(model, augment: AugmentConfig, image_size: tuple[int, int], seed: int):
    """`model` behind a layer that augments in training steps only (augment.where: step).

    Fit this one; save `model` itself, which shares every weight: augmentation layers must
    never be in a saved model (they break reload and augment at serving time).
    """
    import keras

    augmenter = make_augmenter(augment, image_size, where="step")

    class Augment(keras.layers.Layer):
        def __init__(self):
            super().__init__(name="augment")
            self.seeds = keras.random.SeedGenerator(seed)

        def call(self, images, training=None):
            if training:
                return augmenter(images, self.seeds.next())
            return images

    return keras.Sequential(
        [keras.Input(model.input_shape[1:]), Augment(), model], name=f"{model.name}_augmented"
    )


def affine_matrices(rotation, shift_x, shift_y, shear, zoom_x, zoom_y, image_size):
    """ImageDataGenerator's transform matrices for a batch, in (x, y) = (column, row) pixels.

    The composition of legacy `apply_affine_transform` for channels-last images: rotation @
    shift @ shear @ zoom about the image centre, angles in degrees, the shear along x. Two legacy
    quirks are not copied: its `tx` (drawn from `height_shift_range`) moved pixels horizontally,
    and its centre offset swapped height and width; here `shift_x` is horizontal and the centre is
    right for non-square images. On square images the pixels match legacy for the same numbers.

    Each argument is a float32 tensor of shape [batch]. Returns [batch, 3, 3] matrices that map
    an output pixel to the input position it samples.
    """
    import tensorflow as tf

    height, width = image_size
    rad = math.pi / 180.0
    theta, shear = rotation * rad, shear * rad
    zero, one = tf.zeros_like(theta), tf.ones_like(theta)

    def mat(rows):
        return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)

    rotating = mat(
        [
            [tf.cos(theta), -tf.sin(theta), zero],
            [tf.sin(theta), tf.cos(theta), zero],
            [zero, zero, one],
        ]
    )
    shifting = mat([[one, zero, shift_x], [zero, one, shift_y], [zero, zero, one]])
    shearing = mat([[one, -tf.sin(shear), zero], [zero, tf.cos(shear), zero], [zero, zero, one]])
    zooming = mat([[zoom_x, zero, zero], [zero, zoom_y, zero], [zero, zero, one]])
    o_x, o_y = width / 2 - 0.5, height / 2 - 0.5
    offset = tf.constant([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]], tf.float32)
    reset = tf.constant([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]], tf.float32)
    return offset @ (rotating @ shifting @ shearing @ zooming) @ reset


def flip_matrices(flip_x, flip_y, batch, image_size):
    """[batch, 3, 3] matrices mirroring sampled positions where `flip_x`/`flip_y` (bool [batch]
    tensors, or None for never) are true; identity elsewhere."""
    import tensorflow as tf

    height, width = image_size
    one, zero = tf.ones([batch]), tf.zeros([batch])
    scale_x = one if flip_x is None else tf.where(flip_x, -1.0, 1.0)
    move_x = zero if flip_x is None else tf.where(flip_x, width - 1.0, 0.0)
    scale_y = one if flip_y is None else tf.where(flip_y, -1.0, 1.0)
    move_y = zero if flip_y is None else tf.where(flip_y, height - 1.0, 0.0)
    rows = [[scale_x, zero, move_x], [zero, scale_y, move_y], [zero, zero, one]]
    return tf.stack([tf.stack(r, axis=-1) for r in rows], axis=-2)


def apply_affine(images, matrices, fill_mode="nearest", cval=0.0):
    """Resamples images [B, H, W, C] (uint8 or float, 0-255) through matrices from
    `affine_matrices`; returns float32.

    Bilinear, with the fill modes of Keras' `affine_transform` (TensorFlow's
    ImageProjectiveTransformV3, which it calls): the same pixels to float rounding. For nearest
    and constant fill (the defaults and the tutorial's) it is written as four gathers, compiled
    with XLA, faster than that kernel, which recomputes every pixel's position once per
    channel. reflect and wrap use the
    kernel itself.
    """
    import tensorflow as tf

    if fill_mode in ("nearest", "constant"):
        return _bilinear_gather(
            images,
            tf.cast(matrices, tf.float32),
            tf.constant(fill_mode == "constant"),
            tf.constant(cval, tf.float32),
        )
    import keras

    m = matrices
    transform = tf.concat([tf.reshape(m, [-1, 9])[:, :6], tf.zeros_like(m[:, 0, :2])], axis=1)
    return keras.ops.image.affine_transform(
        tf.cast(images, tf.float32),
        transform,
        interpolation="bilinear",
        fill_mode=fill_mode,
        fill_value=cval,
    )


def _bilinear_gather_impl(images, matrices, constant, cval):
    """Bilinear resampling by gathering each output pixel's four neighbours.

    As ImageProjectiveTransformV3: with `constant` false ("nearest"), positions are clamped to
    the image, then interpolated; with `constant` true, neighbours outside the image read `cval`.
    """
    import tensorflow as tf

    shape = tf.shape(images)
    batch, height, width, channels = shape[0], shape[1], shape[2], shape[3]
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    ys, xs = tf.meshgrid(tf.range(h), tf.range(w), indexing="ij")
    m = matrices[:, :, :, None, None]
    x = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]
    y = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    # "nearest" clamps the position; "constant" keeps it (clamped only far enough out that
    # the integer conversion below is safe; such neighbours read cval anyway).
    x = tf.where(constant, tf.clip_by_value(x, -2.0, w + 1), tf.clip_by_value(x, 0.0, w - 1))
    y = tf.where(constant, tf.clip_by_value(y, -2.0, h + 1), tf.clip_by_value(y, 0.0, h - 1))
    x0, y0 = tf.floor(x), tf.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
    x1, y1 = x0 + 1, y0 + 1
    # Gathering float rows was faster here than gathering uint8 ones and casting after.
    flat = tf.reshape(tf.cast(images, tf.float32), [-1, channels])
    base = (tf.range(batch) * height * width)[:, None, None]

    def pixel(row, col):
        inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
        index = (
            base
            + tf.clip_by_value(row, 0, height - 1) * width
            + tf.clip_by_value(col, 0, width - 1)
        )
        return tf.where(inside[..., None], tf.gather(flat, index), cval)

    top_left, top_right = pixel(y0, x0), pixel(y0, x1)
    bottom_left, bottom_right = pixel(y1, x0), pixel(y1, x1)
    top = top_left + fx * (top_right - top_left)
    bottom = bottom_left + fx * (bottom_right - bottom_left)
    return top + fy * (bottom - top)


def _bilinear_gather(images, matrices, constant, cval):
    return _compiled_gather()(images, matrices, constant, cval)


@functools.cache
def _compiled_gather():
    """The XLA-compiled resampler, made once (TensorFlow loads lazily); tf.function retraces
    it per image shape and dtype."""
    import tensorflow as tf

    return tf.function(_bilinear_gather_impl, jit_compile=True)
