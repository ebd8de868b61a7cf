"""The pixel-level check that confirms a near duplicate the embeddings proposed.

Why a second check: a small model trained to separate a few classes keeps little in its
penultimate layer beyond the class, so two different pullovers sit at cosine 0.9999 there.
Pixels tell copies from look-alikes: a copy (resized, re-encoded, a pixel or so shifted,
brightened) keeps the picture and its fine detail; a look-alike keeps at most the silhouette.

The rule: both images become THUMBNAIL x THUMBNAIL grayscale thumbnails (the project's
decoder, so orientation, modes and size limits are handled as everywhere else), and two
Pearson correlations are taken, each the best over shifts of up to MAX_SHIFT thumbnail pixels:

- `picture`: of the thumbnails themselves; at least PICTURE_CORRELATION (0.98);
- `detail`: of their high-pass residues (thumbnail minus its 3x3 mean), which the shared
  silhouette of a class does not fill; at least DETAIL_CORRELATION (0.85).

The embeddings of a small model propose most same-class pairs as candidates, so the picture
correlation is taken block against all by matrix products (`picture_block`), and the detail
one only for the few pairs that reach PICTURE_CORRELATION.

Thresholds measured on 3,000 Fashion-MNIST images of five classes (scripts/bench_review.py
--duplicates): resized, JPEG re-encoded, brightened and 1-pixel-shifted copies all pass; 46 of
the 898,500 distinct same-class pairs pass both (the closest is one picture twice in the data
set; others are plain, untextured garments), against 147 for the picture correlation alone at
0.98 and 7,627 at 0.95. Shifts of 2 pixels in 28, crops and zooms are not found. Flat images
(a blank page) never match.

Example:
    thumbs = thumbnails(paths)                               # (N, 32, 32), NaN if unreadable
    picture, detail = pair_correlations(thumbs, rows, cols)  # per pair
"""

from __future__ import annotations

import contextlib

import numpy as np

THUMBNAIL = 32
MAX_SHIFT = 1
PICTURE_CORRELATION = 0.98
DETAIL_CORRELATION = 0.85
# A window whose pixel spread is below this (0-255 scale) is flat: nothing to correlate.
FLAT_STD = 1.0
# Pairs compared at a time: bounds memory at CHUNK x THUMBNAIL^2 floats per array.
CHUNK = 4096


def thumbnails(paths: list[str], size: int = THUMBNAIL) -> np.ndarray:
    """(N, size, size) grayscale thumbnails, 0-255; an unreadable image's is all NaN."""
    from cnnclf.data.decode import ImageSpec, load_image
    from cnnclf.errors import ImageError

    spec = ImageSpec((size, size), "grayscale", "bilinear")
    out = np.full((len(paths), size, size), np.nan, dtype=np.float32)
    for row, path in enumerate(paths):
        with contextlib.suppress(ImageError):  # stays NaN: matches nothing
            out[row] = load_image(path, spec)[..., 0]
    return out


def picture_block(thumbs: np.ndarray, start: int, stop: int, shift: int = MAX_SHIFT) -> np.ndarray:
    """(stop - start, N): the picture correlation of rows start..stop with every image, best
    over shifts, by matrix products (float32): what `pair_correlations` computes pair by pair,
    fast enough for every candidate pair of a whole review."""
    best = np.zeros((stop - start, len(thumbs)), dtype=np.float32)
    for fixed, moved in _shifted(thumbs, shift):
        rows = _unit(fixed[start:stop]).reshape(stop - start, -1).astype(np.float32)
        every = _unit(moved).reshape(len(thumbs), -1).astype(np.float32)
        np.maximum(best, rows @ every.T, out=best)
    return best


def detail(thumbs: np.ndarray) -> np.ndarray:
    """The high-pass residue: each pixel minus the mean of its 3x3 neighbourhood."""
    size = thumbs.shape[1]
    padded = np.pad(thumbs, ((0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(padded[:, dy : dy + size, dx : dx + size] for dy in range(3) for dx in range(3))
    return thumbs - blurred / 9.0


def confirmed(
    thumbs: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(mask, picture correlation) for the pairs (rows[k], cols[k]): which are copies."""
    picture, fine = pair_correlations(thumbs, rows, cols)
    return (picture >= PICTURE_CORRELATION) & (fine >= DETAIL_CORRELATION), picture


def pair_correlations(
    thumbs: np.ndarray, rows: np.ndarray, cols: np.ndarray, shift: int = MAX_SHIFT
) -> tuple[np.ndarray, np.ndarray]:
    """(picture, detail): per pair, the best correlation over shifts; 0 where flat/unreadable.
    The detail correlation is only taken where the picture one reaches PICTURE_CORRELATION
    (elsewhere it is 0): it decides nothing there."""
    picture, fine = np.zeros(len(rows)), np.zeros(len(rows))
    for start in range(0, len(rows), CHUNK):
        a = thumbs[rows[start : start + CHUNK]]
        b = thumbs[cols[start : start + CHUNK]]
        picture[start : start + CHUNK] = _best(a, b, shift)
    close = np.flatnonzero(picture >= PICTURE_CORRELATION)
    for start in range(0, len(close), CHUNK):
        some = close[start : start + CHUNK]
        fine[some] = _best(detail(thumbs[rows[some]]), detail(thumbs[cols[some]]), shift)
    return picture, fine


def _shifted(a: np.ndarray, shift: int):
    """(fixed, moved) overlapping windows of `a` for every shift up to `shift` pixels."""
    size = a.shape[1]
    for dy in range(-shift, shift + 1):
        for dx in range(-shift, shift + 1):
            yield (
                a[:, max(dy, 0) : size + min(dy, 0), max(dx, 0) : size + min(dx, 0)],
                a[:, max(-dy, 0) : size + min(-dy, 0), max(-dx, 0) : size + min(-dx, 0)],
            )


def _best(a: np.ndarray, b: np.ndarray, shift: int) -> np.ndarray:
    best = np.zeros(len(a))
    for (fixed, _), (_, moved) in zip(_shifted(a, shift), _shifted(b, shift)):
        np.maximum(best, np.sum(_unit(fixed) * _unit(moved), axis=(1, 2)), out=best)
    return best


def _unit(windows: np.ndarray) -> np.ndarray:
    """Each window centred and scaled to unit length; a flat or unreadable one all zeros."""
    windows = windows.astype(np.float64)
    centred = windows - windows.mean(axis=(1, 2), keepdims=True)
    norms = np.sqrt(np.sum(centred**2, axis=(1, 2), keepdims=True))
    spread = norms / np.sqrt(windows.shape[1] * windows.shape[2])  # the standard deviation
    usable = np.isfinite(norms) & (spread >= FLAT_STD)
    return np.where(usable, centred / np.where(usable, norms, 1.0), 0.0)
