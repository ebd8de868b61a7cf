"""Pure pieces of training's TTA fit and of a resumed learning_rate: auto run."""

from types import SimpleNamespace

from cnnclf.training.lr_find import _found_before
from cnnclf.training.validation import TTA_FIT_IMAGES, tta_fit_stride


def test_the_tta_fit_takes_every_kth_batch_of_a_large_validation_set():
    assert tta_fit_stride(1) == tta_fit_stride(TTA_FIT_IMAGES) == 1  # all of a small one
    assert tta_fit_stride(TTA_FIT_IMAGES + 1) == 2
    assert tta_fit_stride(50_000) == 25  # about 2,000 images, not 50,000 times N views


def _trainer(records):
    return SimpleNamespace(run=SimpleNamespace(progress={"controls": {"lr_find": records}}))


def test_a_checkpoints_rate_is_reused_only_when_it_is_a_rate_the_config_would_take():
    train = SimpleNamespace(name="train")
    good = {"phase": "train", "suggested": 0.002, "steps": 230}
    assert _found_before(_trainer([good]), train) == good
    assert _found_before(_trainer([good]), SimpleNamespace(name="fine_tune")) is None
    assert _found_before(_trainer([{"phase": "train", "suggested": 1}]), train)["suggested"] == 1.0
    for damaged in (500.0, 0, -1e-3, True, "auto", "x", None, float("nan")):
        assert _found_before(_trainer([{"phase": "train", "suggested": damaged}]), train) is None
    for saved in ("x", [1, "y"], None):  # not a list of records: the test runs again
        assert _found_before(_trainer(saved), train) is None
    assert _found_before(SimpleNamespace(run=None), train) is None
