"""model_card's notice (cnnclf/serve/service.py): the line the serve page shows, from --notice."""

from types import SimpleNamespace

import pytest

from cnnclf.serve.service import model_card
from cnnclf.serve.settings import DEFAULT_NOTICE, ServeSettings


def fake_bundle():
    """Just what model_card reads: a binary bundle's preprocessing, manifest and path."""
    spec = SimpleNamespace(image_size=(28, 28), color_mode="grayscale", interpolation="bilinear")
    return SimpleNamespace(
        path="runs/demo-20261125-101500",
        manifest={"format": "keras", "created": "2026-11-25T10:15:00+00:00"},
        class_names=["ankle_boot", "sneaker"],
        preprocessing=SimpleNamespace(class_mode="binary", threshold=0.4, spec=spec),
    )


def test_the_default_notice_says_research_use_only():
    card = model_card(fake_bundle(), "demo", ServeSettings().notice)
    assert card["notice"] == DEFAULT_NOTICE == "Research use only — not a diagnostic device."


@pytest.mark.parametrize("notice", ["", "   ", "\n"])
def test_a_blank_notice_is_none(notice):
    assert model_card(fake_bundle(), "demo", notice)["notice"] is None


def test_a_site_notice_is_carried_as_given():
    text = "Pilot study (ethics ref. 2026/17): not for clinical decisions."
    card = model_card(fake_bundle(), "demo", f" {text}\n")
    assert card["notice"] == text
    assert card["threshold"] == 0.4 and card["classes"] == ["ankle_boot", "sneaker"]
