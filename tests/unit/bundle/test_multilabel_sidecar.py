"""preprocessing.json for multi-label bundles (bundle/format.py): per-class thresholds round
trip, old bundles read as single-label, and a malformed field is one line naming it."""

import pytest

from cnnclf.bundle.format import Preprocessing, SidecarError
from cnnclf.data.decode import ImageSpec

SPEC = ImageSpec((16, 16), "rgb", "bilinear")


def test_thresholds_round_trip_and_old_bundles_are_single_label():
    multi = Preprocessing(SPEC, 1 / 255, "multi_label", None, (0.3, 0.5))
    data = multi.to_json()
    assert data["thresholds"] == [0.3, 0.5]
    assert Preprocessing.from_json(data) == multi and multi.multi_label
    old = Preprocessing(SPEC, 1 / 255, "binary", 0.4).to_json()
    assert "thresholds" not in old  # single-label sidecars are written as before
    assert not Preprocessing.from_json(old).multi_label


@pytest.mark.parametrize(
    "change, message",
    [
        ({"thresholds": None}, "thresholds: must be a list of numbers in (0, 1], one per class"),
        ({"thresholds": [0.5, 0]}, "thresholds: must be a list of numbers in (0, 1]"),
        ({"threshold": 0.5}, "threshold: must be null for class_mode 'multi_label'"),
        ({"class_mode": "binary", "threshold": 0.5}, "thresholds: only multi_label models"),
    ],
)
def test_a_malformed_multi_label_sidecar_names_the_field(change, message):
    data = Preprocessing(SPEC, 1 / 255, "multi_label", None, (0.5, 0.5)).to_json() | change
    with pytest.raises(SidecarError, match=f"^{message.replace('(', '.').replace(')', '.')}"):
        Preprocessing.from_json(data)
