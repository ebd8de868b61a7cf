"""The TTA views: how many, in which order, deterministic, and what each one is."""

import numpy as np

from cnnclf.inference.tta import average, view_count, views


def _batch(seed=0):
    return np.random.default_rng(seed).integers(0, 255, size=(2, 20, 24, 3)).astype(np.uint8)


def test_the_flips_training_used_decide_the_count():
    x = _batch()
    for h, v, n in ((False, False, 2), (True, False, 4), (True, True, 6)):
        out = views(x, h, v)
        assert len(out) == n == view_count(h, v)
        assert all(o.shape == x.shape and o.dtype == np.float32 for o in out)
    np.testing.assert_array_equal(views(x, True, True)[0], x)  # the original first
    _, zoom, mirrored, zoom_mirrored = views(x, True, False)
    np.testing.assert_array_equal(mirrored, x[:, :, ::-1, :])
    np.testing.assert_array_equal(zoom_mirrored, zoom[:, :, ::-1, :])
    np.testing.assert_array_equal(views(x, False, True)[2], x[:, ::-1, :, :])


def test_views_are_deterministic_and_the_zoom_is_centred():
    x = _batch(1)
    for a, b in zip(views(x, True, False), views(x, True, False)):
        np.testing.assert_array_equal(a, b)
    flat = np.full((1, 40, 40, 1), 77, np.uint8)
    assert all(np.allclose(v, 77) for v in views(flat, False, False))
    # A bright frame 1 px wide around a dark image: the 1.05x zoom crops it away.
    framed = np.zeros((1, 40, 40, 1), np.uint8)
    framed[:, [0, -1], :] = framed[:, :, [0, -1]] = 200
    zoom = views(framed, False, False)[1]
    assert zoom[:, 3:-3, 3:-3].max() == 0 and zoom.mean() < framed.mean()


def test_average_is_the_mean_of_the_outputs():
    a, b = np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])
    np.testing.assert_allclose(average([a, b]), [[0.4, 0.6]])


def test_a_plan_rescales_its_average_by_the_recorded_temperature():
    from cnnclf.inference.tta import Plan
    from cnnclf.model.calibration import rescale

    a, b = np.array([[0.2, 0.8]]), np.array([[0.6, 0.4]])
    plain = Plan(False, False, None, "categorical")
    np.testing.assert_allclose(plain.combine([a, b]), average([a, b]))  # older bundles
    sharper = Plan(False, False, 0.5, "categorical").combine([a, b])
    np.testing.assert_allclose(sharper, rescale(average([a, b]), 0.5, "categorical"), rtol=1e-6)
    assert sharper[0, 1] > 0.6 and abs(float(sharper.sum()) - 1.0) < 1e-6  # same order, surer
    # binary: one sigmoid column; multi-label: one temperature per class
    p1 = Plan(True, False, 0.5, "binary").combine([np.array([[0.7]]), np.array([[0.9]])])
    assert p1.shape == (1, 1) and p1[0, 0] > 0.8
    multi = Plan(False, False, [0.5, 2.0], "multi_label").combine([np.array([[0.8, 0.8]])])
    assert multi[0, 0] > 0.8 > multi[0, 1]
    assert Plan(True, True).count == 6 and len(Plan(True, False).views(_batch())) == 4


def test_a_damaged_temperature_record_rescales_nothing():
    from cnnclf.model.calibration import recorded

    assert recorded(1.5, None) == 1.5 and recorded([0.5, 2], 2) == [0.5, 2.0]
    for value, units in ((0, None), (-1.0, None), (True, None), ("2", None), (None, None),
                         (float("inf"), None), ([1.0], 2), ([1.0, 0], 2), (1.0, 2)):  # fmt: skip
        assert recorded(value, units) is None, (value, units)


def _bundle(manifest, class_names=("a", "b", "c"), multi_label=False, class_mode="categorical"):
    from types import SimpleNamespace

    preprocessing = SimpleNamespace(multi_label=multi_label, class_mode=class_mode)
    return SimpleNamespace(
        manifest=manifest,
        path="/nonexistent-bundle",
        class_names=list(class_names),
        preprocessing=preprocessing,
    )


def test_a_plan_applies_the_recorded_temperature_only_to_the_views_it_was_fitted_on():
    from cnnclf.inference.tta import plan

    record = {"tta_temperature": 0.8, "tta_views": 4}
    fitted = plan(_bundle({"tta_flips": [True, False], "calibration": record}))
    assert (fitted.count, fitted.temperature, fitted.class_mode) == (4, 0.8, "categorical")
    # Other flips than those it was fitted with (the sidecar's, or none readable): not applied.
    other = plan(_bundle({"tta_flips": [True, True], "calibration": record}))
    assert other.count == 6 and other.temperature is None
    damaged = plan(_bundle({"tta_flips": [1, 0], "calibration": record}))  # no config.yaml
    assert damaged.count == 2 and damaged.temperature is None
    assert plan(_bundle({"tta_flips": [True, False]})).temperature is None  # an older export
    per_class = {"tta_temperature": [0.8, 1.2], "tta_views": 2}
    multi = plan(_bundle({"tta_flips": [False, False], "calibration": per_class}, ("x", "y"), True))
    assert multi.temperature == [0.8, 1.2]
