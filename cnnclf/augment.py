"""ImageDataGenerator's random transforms, rebuilt as batched TensorFlow ops for `tf.data`.

Why not chain Keras' RandomRotation/RandomZoom/RandomShear/RandomTranslation layers: each one
resamples the image again (four interpolations blur more than one), and `RandomShear` shears
about the image corner by a fraction of the side, whereas the tutorial's `shear_range` is an
angle in degrees about the centre. Here every geometric transform is composed into one affine
matrix per image, exactly as legacy `ImageDataGenerator.random_transform` did, and applied with
one `keras.ops.image.affine_transform` call per batch.

Augmentation runs in the input pipeline, never inside the saved model: random layers in a
`.keras` file break reload and make exported models augment at serving time.
"""

from __future__ import annotations

import math

from cnnclf.config import AugmentConfig


def is_active(augment: AugmentConfig) -> bool:
    return bool(augment.rotation_range or augment.width_shift_range
                or augment.height_shift_range or augment.shear_range or augment.zoom_range
                or augment.horizontal_flip or augment.vertical_flip or augment.brightness_range)


def make_augmenter(augment: AugmentConfig, image_size: tuple[int, int]):
    """Returns `fn(images, seed) -> images` for float32 batches [B, H, W, C] in 0-255.

    `seed` is a stateless-RNG seed (int64 tensor of shape [2]) that the pipeline draws per
    batch from a seeded `tf.data.Dataset.random`, so runs repeat exactly for the same seed.
    """
    import tensorflow as tf

    height, width = image_size
    zoom = augment.zoom_range
    zoom_low, zoom_high = (zoom if isinstance(zoom, list) else (1 - zoom, 1 + zoom))
    # As in ImageDataGenerator: shifts < 1 are fractions of the side, >= 1 are pixels.
    shift_y = augment.height_shift_range * (height if augment.height_shift_range < 1 else 1)
    shift_x = augment.width_shift_range * (width if augment.width_shift_range < 1 else 1)
    geometric = bool(augment.rotation_range or shift_x or shift_y or augment.shear_range
                     or zoom_low != 1 or zoom_high != 1)

    def uniform(seed, index, batch, low, high):
        return tf.random.stateless_uniform([batch], seed=seed + index, minval=low, maxval=high)

    def augmenter(images, seed):
        batch = tf.shape(images)[0]
        seed = tf.cast(seed, tf.int64)
        flip_x = (uniform(seed, 6, batch, 0.0, 1.0) < 0.5) if augment.horizontal_flip else None
        flip_y = (uniform(seed, 7, batch, 0.0, 1.0) < 0.5) if augment.vertical_flip else None
        if geometric:
            # Flips ride along in the affine matrix (sampled positions mirrored), as
            # ImageDataGenerator flipped after transforming: one resampling pass, no extra
            # full-batch copy (a separate flip cost ~40 us per 64x64 image here).
            matrices = _matrices(seed, batch) @ flip_matrices(flip_x, flip_y, batch,
                                                              (height, width))
            images = _affine(images, matrices)
        else:
            if flip_x is not None:
                images = tf.where(flip_x[:, None, None, None], tf.reverse(images, axis=[2]),
                                  images)
            if flip_y is not None:
                images = tf.where(flip_y[:, None, None, None], tf.reverse(images, axis=[1]),
                                  images)
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

    def _affine(images, m):
        return apply_affine(images, m, augment.fill_mode, augment.cval)

    return augmenter


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

    rotating = mat([[tf.cos(theta), -tf.sin(theta), zero], [tf.sin(theta), tf.cos(theta), zero],
                    [zero, zero, one]])
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
    """Resamples float images [B, H, W, C] through matrices from `affine_matrices`."""
    import keras
    import tensorflow as tf

    m = matrices
    transform = tf.concat([tf.reshape(m, [-1, 9])[:, :6], tf.zeros_like(m[:, 0, :2])], axis=1)
    return keras.ops.image.affine_transform(images, transform, interpolation="bilinear",
                                            fill_mode=fill_mode, fill_value=cval)
