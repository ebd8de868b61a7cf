"""Grad-CAM (cnnclf/inference/explain.py): empty maps are said, not painted blue; captions stay
readable."""

import shutil

import numpy as np
import pytest
from helpers import pattern_image, run_cli
from PIL import Image

from cnnclf.bundle import MODEL_FILE, load_bundle
from cnnclf.inference.explain import (
    MIN_FONT_SIZE,
    NO_POSITIVE_GRADIENT,
    NOT_FINITE,
    caption_font_size,
    explain,
    grad_cam,
    normalise_cam,
    overlay,
)


def test_normalise_cam():
    cam, note = normalise_cam(np.array([[0.0, 2.0], [1.0, 0.5]]))
    assert note is None and cam.max() == 1.0 and cam[1, 0] == 0.5
    for empty in (np.zeros((4, 4)), np.full((4, 4), 1e-12)):
        cam, note = normalise_cam(empty)
        assert note == NO_POSITIVE_GRADIENT and not cam.any() and cam.shape == (4, 4)
    cam, note = normalise_cam(np.array([[np.nan, 1.0]]))
    assert note == NOT_FINITE and not cam.any()


def _silenced_bundle(source, destination):
    """A copy of `source` whose last convolution outputs 0 everywhere (zero kernel, bias -1,
    then ReLU): the predicted class's score has no gradient through it, so Grad-CAM is empty."""
    shutil.copytree(source, destination)
    model = load_bundle(destination).model
    conv = model.get_layer("conv1")  # the tiny config's only block
    kernel, bias = conv.get_weights()
    conv.set_weights([np.zeros_like(kernel), np.full_like(bias, -1.0)])
    model.save(destination / MODEL_FILE)
    return destination


@pytest.mark.slow
def test_a_map_without_positive_gradient_is_said(tmp_path, binary_bundle, binary_tree):
    bundle_dir = _silenced_bundle(binary_bundle, tmp_path / "silenced")
    image = sorted((binary_tree / "test_set").rglob("*.png"))[0]
    result = run_cli("explain", "--model", bundle_dir, "--out", tmp_path / "cam", image)
    assert result.exit_code == 0, result.output
    assert result.stdout.rstrip().endswith(f"note: {NO_POSITIVE_GRADIENT}")

    bundle = load_bundle(bundle_dir)
    heatmap, _, note = grad_cam(bundle, str(image))
    assert note == NO_POSITIVE_GRADIENT and not heatmap.any()
    [row] = explain(bundle, [str(image)], tmp_path / "again")
    assert row["note"] == NO_POSITIVE_GRADIENT
    with Image.open(row["heatmap"]) as png:
        pixels = np.asarray(png.convert("RGB")).astype(int)
    right = pixels[:, pixels.shape[1] // 2 :]
    # No jet colours: the right panel is the greyed image with the note in black on white.
    assert (right.max(axis=-1) - right.min(axis=-1)).max() == 0
    assert (right < 64).all(axis=-1).any()  # the note's text is there


@pytest.mark.slow
def test_a_usable_map_has_no_note(binary_bundle, binary_tree, tmp_path):
    bundle = load_bundle(binary_bundle)
    images = sorted((binary_tree / "test_set").rglob("*.png"))[:2]
    rows = explain(bundle, [str(p) for p in images], tmp_path)
    for row in rows:
        heatmap, _, note = grad_cam(bundle, row["path"])
        assert row["note"] == note
        assert (note is None) == bool(heatmap.max() > 0)


def _text_height(png_path, panel_height: int) -> int:
    """Rows of the caption strip (above the panels) that hold dark text pixels, top to bottom."""
    with Image.open(png_path) as png:
        grey = np.asarray(png.convert("L"))
    strip = grey[: grey.shape[0] - panel_height]
    rows = np.flatnonzero((strip < 128).any(axis=1))
    return int(rows[-1] - rows[0] + 1)


def test_caption_text_scales_with_the_image(tmp_path):
    assert caption_font_size((224, 224)) == MIN_FONT_SIZE
    assert caption_font_size((1400, 2100)) == 100  # 1400 / 14
    heights = {}
    for side in (28, 1400):
        image = tmp_path / f"image{side}.png"
        pattern_image("hstripes", side, side, seed=1).save(image)
        out = tmp_path / f"cam{side}.png"
        overlay(str(image), np.zeros((16, 16)), "hstripes 0.97  (photo.png)", out)
        # 28 px images are drawn at 224 px; 1400 px ones at their own size.
        heights[side] = _text_height(out, max(224, side))
    # Capitals and ascenders to descenders ("h", "p"): about 1.2 x the font size.
    assert heights[28] >= 14
    assert heights[1400] >= 5 * heights[28]
