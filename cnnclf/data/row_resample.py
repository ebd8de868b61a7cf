"""The CPU resampler for affine transforms without rotation: one source row pair per output row.

Why a second resampler: on CPU, XLA's gathers are slow and bilinear needs four per pixel, so
with `augment.apply_affine` augmentation, not the model, set the pace of a GPU's feed (issue
#12). Without rotation (the tutorial's shear, zoom, shifts and flips) the row an output pixel
samples depends only on the output row, so each output row is one blend of two source rows,
then a linear resampling along x, compiled by Numba and run with the GIL released (tf.data's
parallel map calls then use every core).

Same pixels as `apply_affine` and Keras' `affine_transform` (bilinear, `nearest` or `constant`
fill) up to float rounding: bilinear interpolation is separable, and the edge rules are the
same (`nearest` clamps positions to the image, `constant` reads `cval` outside it).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from cnnclf.data.store import aligned_empty


def supports(fill_mode: str, rotation_range: float) -> bool:
    """True where `resample` gives `apply_affine`'s pixels: no rotation (so matrices map an
    output row to one source row), and nearest or constant fill."""
    return not rotation_range and fill_mode in ("nearest", "constant")


def resample(images: np.ndarray, matrices: np.ndarray, constant: bool, cval: float) -> np.ndarray:
    """Images [B, H, W, C] (uint8 or float) resampled through matrices [B, 3, 3] whose
    [1, 0] entries are zero; returns float32 [B, H, W, C].

    Called inside `tf.numpy_function`; it runs without holding the GIL.
    """
    images = np.ascontiguousarray(images)
    matrices = np.asarray(matrices, np.float32)
    if matrices[:, 1, 0].any():
        raise ValueError("row_resample needs matrices without rotation (m[1, 0] == 0)")
    out = aligned_empty(images.shape, np.float32)  # see there: no copy into TensorFlow
    _kernels()(images, matrices, bool(constant), np.float32(cval), out)
    return out


@functools.cache
def _kernels():  # noqa: C901  (the Numba kernels: loops kept flat on purpose)
    """Compiles on first use (then cached on disk by Numba), so importing cnnclf and
    every path that does not augment on the CPU stays free of Numba."""
    from numba import njit

    # fastmath lets LLVM fuse multiply-adds (faster), with pixels still within 0.01 of
    # apply_affine's (float32 rounding of the positions).
    def jit(function):
        options: dict[str, Any] = dict(nogil=True, boundscheck=False, fastmath=True)
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError:  # no writable cache folder (read-only install, no home)
            return njit(**options)(function)

    @jit
    def vertical(top, bottom, top_inside, bottom_inside, fy, cval, row):
        # row[k] = top + fy * (bottom - top), with rows outside the image reading cval.
        for k in range(top.shape[0]):
            t = np.float32(top[k]) if top_inside else cval
            b = np.float32(bottom[k]) if bottom_inside else cval
            row[k] = t + fy * (b - t)

    @jit
    def horizontal(row, channels, m00, m01_i, m02, low, high, out):
        # `row` holds the source row with one pixel of padding on the left, two on the right.
        # Positions are computed in apply_affine's order, for the same float32 rounding.
        width = out.shape[0] // channels
        for j in range(width):
            x = min(max(m00 * np.float32(j) + m01_i + m02, low), high)
            x0 = np.floor(x)
            fx = x - x0
            p = (np.int32(x0) + 1) * channels
            if channels == 3:
                a0, a1, a2 = row[p], row[p + 1], row[p + 2]
                out[3 * j] = a0 + fx * (row[p + 3] - a0)
                out[3 * j + 1] = a1 + fx * (row[p + 4] - a1)
                out[3 * j + 2] = a2 + fx * (row[p + 5] - a2)
            else:
                for c in range(channels):
                    a = row[p + c]
                    out[channels * j + c] = a + fx * (row[p + channels + c] - a)

    @jit
    def kernel(images, matrices, constant, cval, out):
        batch, height, width, channels = images.shape
        row = np.empty((width + 3) * channels, np.float32)
        inner = row[channels : (width + 1) * channels]
        if constant:  # positions clamped just far enough out that both neighbours read cval
            x_low, x_high = np.float32(-1.0), np.float32(width)
            y_low, y_high = np.float32(-1.0), np.float32(height)
        else:
            x_low, x_high = np.float32(0.0), np.float32(width - 1)
            y_low, y_high = np.float32(0.0), np.float32(height - 1)
        for b in range(batch):
            m00, m01, m02 = matrices[b, 0, 0], matrices[b, 0, 1], matrices[b, 0, 2]
            m11, m12 = matrices[b, 1, 1], matrices[b, 1, 2]
            for i in range(height):
                fi = np.float32(i)
                y = min(max(np.float32(0.0) + m11 * fi + m12, y_low), y_high)
                y_floor = np.floor(y)
                fy = y - y_floor
                y0 = np.int32(y_floor)
                y1 = y0 + 1
                if not constant:
                    y1 = min(y1, height - 1)
                top = images[b, min(max(y0, 0), height - 1)].reshape(-1)
                bottom = images[b, min(max(y1, 0), height - 1)].reshape(-1)
                vertical(top, bottom, 0 <= y0 < height, 0 <= y1 < height, fy, cval, inner)
                for c in range(channels):
                    if constant:
                        row[c] = cval
                        row[(width + 1) * channels + c] = cval
                        row[(width + 2) * channels + c] = cval
                    else:
                        row[c] = inner[c]
                        edge = inner[(width - 1) * channels + c]
                        row[(width + 1) * channels + c] = edge
                        row[(width + 2) * channels + c] = edge
                horizontal(row, channels, m00, m01 * fi, m02, x_low, x_high, out[b, i].reshape(-1))

    return kernel
