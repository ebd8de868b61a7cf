"""Temperature scaling: the fit finds a known temperature, the inverse recovers the model's
own probabilities, and folding divides exactly the output layer's logits."""

import numpy as np

from cnnclf.model.calibration import (
    fit_temperature,
    fold_into_output,
    probabilities,
    rescale,
    uncalibrated,
)


def _overconfident(class_mode: str, temperature: float, n=4000, k=3, seed=0):
    """Probabilities from logits z whose labels were drawn from z / temperature: the fit
    should find `temperature`."""
    rng = np.random.default_rng(seed)
    if class_mode == "categorical":
        z = rng.normal(0, 4, size=(n, k))
        truth = probabilities(z / temperature, class_mode)
        labels = np.array([rng.choice(k, p=row) for row in truth])
    else:
        z = rng.normal(0, 4, size=n if class_mode == "binary" else (n, k))
        labels = (rng.random(z.shape) < probabilities(z / temperature, class_mode)).astype(int)
    return probabilities(z, class_mode), labels


def test_the_fit_recovers_a_known_temperature():
    probs, labels = _overconfident("categorical", 2.5)
    fit = fit_temperature(probs, labels, "categorical")
    assert abs(fit.temperature - 2.5) < 0.25
    assert fit.nll_after < fit.nll_before


def test_binary_and_multi_label_fits():
    probs, labels = _overconfident("binary", 0.5)
    assert abs(fit_temperature(probs, labels, "binary").temperature - 0.5) < 0.08
    probs, labels = _overconfident("multi_label", 2.0)
    fit = fit_temperature(probs, labels, "multi_label")
    assert len(fit.temperature) == 3 and all(abs(t - 2.0) < 0.3 for t in fit.temperature)


def test_a_calibrated_model_keeps_t_at_one():
    probs, labels = _overconfident("categorical", 1.0)
    fit = fit_temperature(probs, labels, "categorical")
    assert abs(fit.temperature - 1.0) < 0.1 and fit.nll_after <= fit.nll_before


def test_uncalibrated_inverts_rescale_and_keeps_the_ranking():
    probs, _ = _overconfident("categorical", 2.0, n=50)
    after = rescale(probs, 2.0, "categorical")
    np.testing.assert_allclose(uncalibrated(after, 2.0, "categorical"), probs, atol=1e-9)
    assert (after.argmax(axis=1) == probs.argmax(axis=1)).all()
    p1 = np.array([0.01, 0.3, 0.5, 0.9])
    np.testing.assert_allclose(uncalibrated(rescale(p1, 3.0, "binary"), 3.0, "binary"), p1)
    assert rescale(p1, 3.0, "binary")[2] == 0.5  # P = 0.5 stays where the logit is 0


class _Dense:
    name = "output"

    def __init__(self, kernel, bias):
        self.weights = [kernel, bias]

    def get_weights(self):
        return [w.copy() for w in self.weights]

    def set_weights(self, weights):
        self.weights = weights


class _Model:
    def __init__(self, layer):
        self.layers = [layer]


def test_folding_divides_the_logits_by_t_per_unit():
    rng = np.random.default_rng(1)
    kernel, bias = rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=3).astype("float32")
    layer = _Dense(kernel, bias)
    fold_into_output(_Model(layer), [1.0, 2.0, 4.0])
    x = rng.normal(size=(2, 5)).astype("float32")
    before, after = x @ kernel + bias, x @ layer.weights[0] + layer.weights[1]
    np.testing.assert_allclose(after, before / np.array([1.0, 2.0, 4.0]), rtol=1e-5)
    assert layer.weights[0].dtype == np.float32
