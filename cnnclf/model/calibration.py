"""Temperature scaling (Guo et al. 2017): probabilities that mean what they say.

A network trained to a low loss is usually over-confident: of the images it calls "0.97",
fewer than 97% are right. Dividing the output layer's logits by one temperature T, fitted on
the validation data by minimising the negative log-likelihood, fixes most of that without
changing a single ranking: argmax, ROC curves and threshold rules see the same order.

How the bundle keeps it: T is folded into the output Dense layer's weights (kernel / T,
bias / T), since its logits are linear in them. softmax((Wx + b) / T) is then what the saved
model computes, so predict, evaluate, serve and every export (SavedModel, TFLite, ONNX) give
calibrated probabilities with no extra layer to register, load or convert, and a bundle from
before this change loads as it always did. bundle.json records T, from which the uncalibrated
probabilities are recovered for evaluate's before/after report (`uncalibrated`).

The three output layers:

    categorical  softmax over N units: one T for all of them
    binary       one sigmoid unit: one T (not Platt's a*z + b: one parameter fits the
                 few hundred validation images a binary run often has without overfitting,
                 and keeps P = 0.5 where the logit is 0, so a fixed threshold of 0.5 keeps
                 its meaning)
    multi_label  one sigmoid per class: one T per class, each fitted on its own column

Example:
    fit = fit_temperature(val_probs, val_labels, "categorical")
    fold_into_output(model, fit.temperature)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fewer validation images than this and one T fitted on them is mostly noise; the run warns
# and keeps the model as trained (the same bound as metrics.MIN_VALIDATION_IMAGES).
MIN_CALIBRATION_IMAGES = 30
# T is searched in this range (log-uniformly): beyond it the fit is chasing a degenerate
# validation set (all right, or all wrong with full confidence), not calibrating.
TEMPERATURE_RANGE = (0.05, 20.0)
_EPS = 1e-7  # float32 probabilities: clip before log/logit so 0 and 1 stay finite


@dataclass(frozen=True)
class TemperatureFit:
    """One fit: T (a list, one per class, for multi_label) and the NLL before and after."""

    temperature: float | list[float]
    nll_before: float
    nll_after: float

    def to_json(self, images: int) -> dict:
        return {
            "method": "temperature",
            "temperature": self.temperature,
            "nll_before": round(self.nll_before, 6),
            "nll_after": round(self.nll_after, 6),
            "images": images,
        }


def logits(probs: np.ndarray, class_mode: str) -> np.ndarray:
    """Logits (up to a per-row constant, for softmax) that give back `probs`."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    if class_mode == "categorical":
        return np.log(p)
    return np.log(p) - np.log1p(-p)


def probabilities(z: np.ndarray, class_mode: str) -> np.ndarray:
    """The output activation on logits `z`: softmax over rows, or a sigmoid per value."""
    z = np.asarray(z, dtype=np.float64)
    if class_mode == "categorical":
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z))


def rescale(probs: np.ndarray, temperature, class_mode: str) -> np.ndarray:
    """`probs` as the model would give them with its logits divided by `temperature`."""
    t = np.asarray(temperature, dtype=np.float64)
    return probabilities(logits(probs, class_mode) / t, class_mode)


def uncalibrated(probs: np.ndarray, temperature, class_mode: str) -> np.ndarray:
    """A calibrated model's probabilities as they were before T was folded in."""
    return rescale(probs, 1.0 / np.asarray(temperature, dtype=np.float64), class_mode)


def nll(probs: np.ndarray, labels: np.ndarray, class_mode: str) -> float:
    """Mean negative log-likelihood: labels are class indices (categorical), 0/1 (binary)
    or multi-hot rows (multi_label, averaged over every class)."""
    p = np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1 - _EPS)
    y = np.asarray(labels)
    if class_mode == "categorical":
        return float(-np.log(p[np.arange(len(y)), y.astype(int)]).mean())
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray, class_mode: str) -> TemperatureFit:
    """The T minimising the validation NLL, found by a bounded 1-D search on log T.

    Args:
        probs: the model's outputs: [N, K] softmax, [N] P(class 1), or [N, K] sigmoids.
        labels: class indices, 0/1, or multi-hot rows [N, K] (see `nll`).
        class_mode: "categorical", "binary" or "multi_label".
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if class_mode == "multi_label":
        fits = [_fit_one(probs[:, c], labels[:, c], "binary") for c in range(probs.shape[1])]
        calibrated = rescale(probs, [t for t, _ in fits], class_mode)
        return TemperatureFit(
            [t for t, _ in fits],
            nll(probs, labels, class_mode),
            nll(calibrated, labels, class_mode),
        )
    temperature, nll_after = _fit_one(probs, labels, class_mode)
    return TemperatureFit(temperature, nll(probs, labels, class_mode), nll_after)


def _fit_one(probs: np.ndarray, labels: np.ndarray, class_mode: str) -> tuple[float, float]:
    from scipy.optimize import minimize_scalar

    z = logits(probs, class_mode)

    def loss(log_t: float) -> float:
        return nll(probabilities(z / np.exp(log_t), class_mode), labels, class_mode)

    low, high = np.log(TEMPERATURE_RANGE)
    found = minimize_scalar(loss, bounds=(low, high), method="bounded", options={"xatol": 1e-4})
    # T = 1 (no change) wins ties: a fit that gains nothing should not move the model.
    if not found.success or found.fun >= loss(0.0):
        return 1.0, loss(0.0)
    return round(float(np.exp(found.x)), 6), float(found.fun)


def recorded(value, units: int | None):
    """A temperature read back from bundle.json: one positive number (`units` None) or a list
    of `units` of them (multi-label), else None: a hand-edited or damaged record must not
    rescale anything."""
    values = value if isinstance(value, list) and units is not None else [value]
    ok = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")
        for v in values
    )
    if not ok or (units is not None and len(values) != units):
        return None
    numbers = [float(v) for v in values]
    return numbers if units is not None else numbers[0]


def fold_into_output(model, temperature) -> None:
    """Divides the output Dense layer's kernel and bias by `temperature` (per unit when a
    list), so the saved model itself computes calibrated probabilities.

    Raises:
        ValueError: the model's last layer is not cnnclf's `output` Dense layer.
    """
    layer = model.layers[-1]
    if layer.name != "output" or len(layer.get_weights()) != 2:
        raise ValueError(f"the model's last layer is {layer.name!r}, not the output Dense layer")
    kernel, bias = layer.get_weights()
    scale = 1.0 / np.broadcast_to(np.asarray(temperature, dtype=np.float64), bias.shape)
    layer.set_weights([(kernel * scale).astype(kernel.dtype), (bias * scale).astype(bias.dtype)])
