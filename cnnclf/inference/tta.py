"""Test-time augmentation: the model's outputs averaged over a few fixed views of each image,
then rescaled by the temperature training fitted for that average.

One function, `views`, makes the views of a decoded batch; `predict --tta`, `evaluate --tta`
and serve's `?tta=true` all call it, so the three cannot disagree. The views are deterministic
(no random draw: the same image always gives the same answer), and only ones the model saw in
training:

    the original, and a centre crop of 95% of the height and width resized back (a 1.05x
    zoom, within what zoom_range augmentation produces)
    each of those mirrored left-right    only if training used augment.horizontal_flip
    each of those mirrored top-bottom    only if training used augment.vertical_flip

So 2, 4 or 6 views, and N views cost N forward passes (decoding is done once). It is never on
by default; docs/guide/calibration.md gives measured gains and costs. Corner crops (a zoom
shifted towards each corner) were tried and dropped: at 90% on 28x28 Fashion-MNIST pullover
against coat, the two bottom crops alone fell to 53-59% accuracy from the original's 78%, and
the average with them lost 5 points (docs/benchmarks/2026-12-04-calibration-tta.md).

The probabilities are averaged (not the logits): the average of calibrated probabilities stays
a probability, and for a binary model P(class 0) = 1 - P(class 1) still holds. The average is
then rescaled by its own temperature, fitted at training on the validation data's average
(bundle.json's `calibration.tta_temperature`, copied into an export's sidecar): an average of
views is less confident than each view, so without it --tta gave worse-calibrated
probabilities than one view in all 18 runs of docs/benchmarks/2026-12-04-calibration-tta.md.
Bundles and exports without the record (made before it, or with train.calibrate false) give
the plain average, as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CROP = 0.95  # the zoomed view keeps this share of the height and the width, centred


@dataclass(frozen=True)
class Plan:
    """How TTA runs for one bundle: the views its training allows, and the temperature fitted
    on their average (None: the plain average)."""

    horizontal_flip: bool
    vertical_flip: bool
    temperature: float | list[float] | None = None
    class_mode: str | None = None  # needed with a temperature: how to rescale

    @property
    def count(self) -> int:
        return view_count(self.horizontal_flip, self.vertical_flip)

    def views(self, batch: np.ndarray) -> list[np.ndarray]:
        return views(batch, self.horizontal_flip, self.vertical_flip)

    def combine(self, outputs: list[np.ndarray]) -> np.ndarray:
        """The TTA prediction from the views' outputs ([N, K] each)."""
        mean = average(outputs)
        if self.temperature is None:
            return mean
        if self.class_mode is None:
            raise ValueError("a TTA temperature needs the class mode to rescale by")
        from cnnclf.model.calibration import rescale

        return rescale(mean, self.temperature, self.class_mode).astype(np.float32)


def plan(bundle) -> Plan:
    """The bundle's TTA: `bundle.trained_flips` and the recorded `tta_temperature`."""
    from cnnclf.bundle import trained_flips
    from cnnclf.model.calibration import recorded

    record = _calibration_record(bundle)
    units = len(bundle.class_names) if bundle.preprocessing.multi_label else None
    flips = trained_flips(bundle)
    temperature = recorded(record.get("tta_temperature"), units)
    if record.get("tta_views") != view_count(*flips):
        temperature = None  # fitted on other views (the flips could not be read back)
    return Plan(*flips, temperature, bundle.preprocessing.class_mode)


def views(batch: np.ndarray, horizontal_flip: bool, vertical_flip: bool) -> list[np.ndarray]:
    """The views of `batch` ([N, H, W, C], any dtype), each float32 of the same shape.

    Example: `views(x, True, False)` gives 4 arrays: x, the zoom, x mirrored, the zoom mirrored.
    """
    x = np.asarray(batch, dtype=np.float32)
    height, width = x.shape[1:3]
    h, w = max(1, round(height * CROP)), max(1, round(width * CROP))
    top, left = (height - h) // 2, (width - w) // 2
    base = [x, _resize(x[:, top : top + h, left : left + w, :], height, width)]
    out = list(base)
    if horizontal_flip:
        out += [v[:, :, ::-1, :] for v in base]
    if vertical_flip:
        out += [v[:, ::-1, :, :] for v in base]
    return out


def average(outputs: list[np.ndarray]) -> np.ndarray:
    """The mean of the views' model outputs ([N, K] each): the TTA prediction."""
    return np.mean(np.stack([np.asarray(o, dtype=np.float64) for o in outputs]), axis=0).astype(
        np.float32
    )


def view_count(horizontal_flip: bool, vertical_flip: bool) -> int:
    """How many forward passes one image costs with TTA."""
    return 2 * (1 + int(horizontal_flip) + int(vertical_flip))


def _calibration_record(bundle) -> dict:
    """The bundle's `calibration` record: bundle.json's, or the one `cnnclf export` copies into
    an export's sidecar (exports made before it have none: the plain average)."""
    record = bundle.manifest.get("calibration") if isinstance(bundle.manifest, dict) else None
    return record if isinstance(record, dict) else {}


def _resize(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of [N, h, w, C] to [N, height, width, C], half-pixel centres (as
    tf.image.resize and Pillow do); NumPy only, so serve and predict need no TensorFlow op."""
    ys = _sample_points(x.shape[1], height)
    xs = _sample_points(x.shape[2], width)
    y0, y1, fy = ys
    x0, x1, fx = xs
    top = (
        x[:, y0][:, :, x0] * (1 - fx)[None, None, :, None]
        + x[:, y0][:, :, x1] * fx[None, None, :, None]
    )
    bottom = (
        x[:, y1][:, :, x0] * (1 - fx)[None, None, :, None]
        + x[:, y1][:, :, x1] * fx[None, None, :, None]
    )
    return (top * (1 - fy)[None, :, None, None] + bottom * fy[None, :, None, None]).astype(
        np.float32
    )


def _sample_points(source: int, target: int):
    """(lower index, upper index, weight of the upper) for each of `target` output pixels."""
    centres = (np.arange(target) + 0.5) * source / target - 0.5
    centres = np.clip(centres, 0, source - 1)
    lower = np.floor(centres).astype(int)
    upper = np.minimum(lower + 1, source - 1)
    return lower, upper, (centres - lower).astype(np.float32)
