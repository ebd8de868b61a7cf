"""`transfer.small_data_advice`: what train and check-data suggest for small classes, by image
size and colour (a pretrained backbone only where one can run and is likely to help)."""

import pytest

from cnnclf.model.backbones import BACKBONES
from cnnclf.model.transfer import small_data_advice

MIN_SIDE = min(b.min_size for b in BACKBONES.values())


@pytest.mark.parametrize("color_mode", ["grayscale", "rgb"])
def test_images_too_small_for_any_backbone_get_init_from_not_a_backbone(color_mode):
    advice = small_data_advice([28, 28], color_mode)
    assert advice.startswith(
        f"28x28 images are too small for a pretrained ImageNet backbone (at "
        f"least {MIN_SIDE} a side)"
    )
    assert "model.init_from" in advice and "transfer.yaml" not in advice


def test_one_short_side_is_enough_to_rule_a_backbone_out():
    assert "too small" in small_data_advice([MIN_SIDE - 1, 224], "rgb")
    assert "too small" not in small_data_advice([MIN_SIDE, MIN_SIDE], "rgb")


def test_colour_images_of_adequate_size_get_the_backbone():
    advice = small_data_advice([64, 64], "rgb")
    assert advice.startswith("a pretrained backbone usually does much better")
    assert "configs/transfer.yaml" in advice and "init_from" not in advice


def test_grayscale_images_of_adequate_size_get_init_from_first_then_a_backbone():
    advice = small_data_advice([128, 128], "grayscale")
    assert advice.index("model.init_from") < advice.index("configs/transfer.yaml")


def test_an_unknown_size_gets_the_advice_for_its_colour():
    assert small_data_advice(None, "rgb") == small_data_advice([224, 224], "rgb")
    assert small_data_advice(None, "grayscale") == small_data_advice([224, 224], "grayscale")
