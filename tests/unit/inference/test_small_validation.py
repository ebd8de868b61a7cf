"""The rule for a validation set too small for its accuracy to mean much (docs/guide/train.md)."""

from __future__ import annotations

from cnnclf.inference.metrics import small_validation_warning


def test_few_validation_images_are_warned_about_with_what_one_image_is_worth():
    assert small_validation_warning({"a": 2, "b": 2}, "validation_split") == (
        "warning: only 4 validation images (2 per class): its accuracy moves by ±25 points "
        "with one image; hold out more (data.validation_split) or add a test set "
        "(data.test_dir)"
    )
    warning = small_validation_warning({"a": 40, "b": 3}, "test_dir")
    assert warning is not None
    assert warning.startswith("warning: only 43 validation images (3 in class b): ")
    assert "±2.3 points" in warning and warning.endswith("add images to the test set (test_dir)")


def test_thirty_images_with_five_per_class_are_enough():
    assert small_validation_warning({"a": 15, "b": 15}, "validation_split") is None
    assert small_validation_warning({"a": 25, "b": 5}, "test_dir") is None
    assert small_validation_warning({"a": 14, "b": 15}, "test_dir") is not None
    assert small_validation_warning({}, None) is None  # nothing recorded: nothing to say
