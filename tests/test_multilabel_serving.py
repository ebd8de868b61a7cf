"""Multi-label bundles past predict and evaluate (issue 26, the rest): serve's REST and
TF-Serving routes and model card, /explain and `cnnclf explain` per label, `--threshold` as one
cut for every class, and exports whose parity and predictions keep the labels."""

import base64
import json

import pytest
from fastapi.testclient import TestClient
from helpers import read_json, run_cli, wait_for
from multilabel_data import CLASSES, train_multi_label, write_label_file
from PIL import Image

from cnnclf.bundle import load_bundle
from cnnclf.serve.app import ServeSettings, create_app

BASE_URL = "http://127.0.0.1:8000"

pytestmark = pytest.mark.slow  # every test here trains, or uses the bundle trained once


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    folder = tmp_path_factory.mktemp("multilabel")
    write_label_file(folder, "train", 24, 0)
    write_label_file(folder, "test", 8, 100)
    return folder


@pytest.fixture(scope="module")
def bundle_dir(labelled, tmp_path_factory):
    return train_multi_label(labelled, tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="module")
def client(bundle_dir):
    app = create_app(load_bundle(bundle_dir), ServeSettings(name="tags"))
    client = TestClient(app, base_url=BASE_URL)
    client.__enter__()
    wait_for(lambda: client.get("/readyz").status_code == 200, "/readyz to answer 200", poll=0.05)
    yield client
    client.__exit__(None, None, None)


def _images(labelled, n=4):
    return sorted((labelled / "img").glob("test_*.png"))[:n]


def _files(paths):
    return [("file", (p.name, p.read_bytes(), "image/png")) for p in paths]


def _cli_rows(bundle, paths, *options):
    result = run_cli("predict", "--model", bundle, "--format", "json", *options, *paths)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_served_predictions_are_the_cli_s_labels(client, bundle_dir, labelled):
    paths = _images(labelled)
    served = client.post("/predict", files=_files(paths)).json()
    cli = _cli_rows(bundle_dir, paths)
    for got, want in zip(served, cli):
        assert set(got) == {"path", "labels", "probabilities", "thresholds"}
        assert (got["labels"], got["probabilities"]) == (want["labels"], want["probabilities"])
        assert got["thresholds"] == want["thresholds"]
    # ?threshold= is one cut for every class, as predict's --threshold is.
    low = client.post("/predict?threshold=0.000001", files=_files(paths[:1])).json()[0]
    assert sorted(low["labels"]) == sorted(CLASSES)
    assert set(low["thresholds"].values()) == {0.000001}
    high = client.post("/predict?threshold=0.999999", files=_files(paths[:1])).json()[0]
    assert high["labels"] == [] and high["probabilities"] == low["probabilities"]
    bad = client.post("/predict?threshold=1.5", files=_files(paths[:1]))
    assert bad.status_code == 400
    assert bad.json()["error"] == "threshold: must be between 0 and 1 (exclusive), got 1.5"
    two = client.post("/predict?top_k=2", files=_files(paths[:1])).json()[0]
    assert len(two["top_k"]) == 2 and two["labels"] == cli[0]["labels"]


def test_tf_serving_returns_the_raw_sigmoids_and_the_card_the_thresholds(
    client, bundle_dir, labelled
):
    paths = _images(labelled, 2)
    body = {"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in paths]}
    rows = client.post("/v1/models/tags:predict", json=body).json()["predictions"]
    cli = _cli_rows(bundle_dir, paths)
    for row, want in zip(rows, cli):
        assert row == pytest.approx([want["probabilities"][c] for c in CLASSES], abs=1e-5)
    card = client.get("/card").json()
    preprocessing = read_json(bundle_dir / "preprocessing.json")
    assert card["class_mode"] == "multi_label" and card["threshold"] is None
    assert card["thresholds"] == pytest.approx(dict(zip(CLASSES, preprocessing["thresholds"])))
    assert card["top_k"] is None


def test_explain_route_draws_one_panel_per_label_or_the_class_asked(client, labelled):
    image = next(p for p in _images(labelled, 8) if p.name == "test_003.png")
    predicted = client.post("/predict", files=_files([image])).json()[0]
    response = client.post("/explain", files=_files([image]))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    shown = predicted["labels"] or [max(CLASSES, key=predicted["probabilities"].get)]
    assert response.headers["x-label"].split(",") == shown
    heights = {}
    for case in ("left", "top"):
        one = client.post(f"/explain?class={case}", files=_files([image]))
        assert one.status_code == 200 and one.headers["x-label"] == case
        p = float(one.headers["x-probability"])
        assert p == pytest.approx(predicted["probabilities"][case], abs=1e-5)
        heights[case] = _png_height(one.content)
    if len(shown) > 1:  # panels stacked: one image several times the height of one panel
        assert _png_height(response.content) >= len(shown) * heights["left"] - 1
    bad = client.post("/explain?class=nope", files=_files([image]))
    assert bad.status_code == 400
    assert bad.json()["error"] == (
        "class: 'nope' is not one of this model's classes: left, right, top"
    )


def _png_height(data: bytes) -> int:
    import io

    with Image.open(io.BytesIO(data)) as png:
        return png.height


def test_threshold_on_predict_and_evaluate_is_one_cut_for_every_class(bundle_dir, labelled):
    image = _images(labelled, 1)
    [row] = _cli_rows(bundle_dir, image, "--threshold", "0.000001")
    assert sorted(row["labels"]) == sorted(CLASSES)
    assert set(row["thresholds"].values()) == {0.000001}
    result = run_cli(
        "evaluate", labelled / "test.csv", "--model", bundle_dir, "--format", "json",
        "--threshold", "0.000001",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["threshold_source"] == "--threshold"
    # Every class predicted for every image: recall 1 wherever the class is present.
    assert all(report["per_class"][c]["recall"] == 1.0 for c in CLASSES)


def test_cli_explain_writes_one_overlay_per_label(bundle_dir, labelled, tmp_path):
    image = next(p for p in _images(labelled, 8) if p.name == "test_003.png")
    [row] = _cli_rows(bundle_dir, [image])
    shown = row["labels"] or [max(CLASSES, key=row["probabilities"].get)]
    result = run_cli("explain", "--model", bundle_dir, "--out", tmp_path / "cam", image)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert [line.split()[1] for line in lines] == shown
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == sorted(
        f"test_003_gradcam_{c}.png" for c in shown
    )
    chosen = run_cli(
        "explain", "--model", bundle_dir, "--class", "right", "--out", tmp_path / "one", image
    )
    assert chosen.exit_code == 0, chosen.output
    assert [p.name for p in (tmp_path / "one").iterdir()] == ["test_003_gradcam_right.png"]
    assert chosen.stdout.split()[1] == "right"
    bad = run_cli("explain", "--model", bundle_dir, "--class", "nope", "--out", tmp_path, image)
    assert bad.exit_code != 0
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: --class nope: not one of the model's classes (left, right, top)"
    )


# Quantized exports are left out: this tiny model's probabilities sit close to its thresholds,
# where int8 rounding rightly fails the parity check (tests/test_export.py covers int8).
@pytest.mark.parametrize(
    "fmt, name, quantize",
    [
        ("savedmodel", "sm", "none"),
        ("tflite", "model.tflite", "none"),
        ("onnx", "model.onnx", "none"),
    ],
)
def test_exports_keep_the_labels(bundle_dir, labelled, tmp_path, fmt, name, quantize):
    out = tmp_path / name
    result = run_cli(
        "export", "--model", bundle_dir, "--format", fmt, "--quantize", quantize, "--out", out
    )
    assert result.exit_code == 0, result.output
    sidecar = (out / "cnnclf.json") if fmt == "savedmodel" else out.with_name(name + ".cnnclf.json")
    meta = read_json(sidecar)
    preprocessing = read_json(bundle_dir / "preprocessing.json")
    assert meta["preprocessing"]["class_mode"] == "multi_label"
    assert meta["preprocessing"]["thresholds"] == preprocessing["thresholds"]
    # Parity: every (image, class) decision of the sample counted, not an argmax per image.
    parity = meta["parity"]
    assert parity["images"] > 0
    if quantize == "none":
        assert parity["max_abs_diff"] <= 1e-4
    paths = _images(labelled, 8)
    exported, keras = _cli_rows(out, paths), _cli_rows(bundle_dir, paths)
    for got, want in zip(exported, keras):
        assert set(got) == {"path", "labels", "probabilities", "thresholds"}
        assert got["thresholds"] == want["thresholds"]
        for c in CLASSES:
            assert got["probabilities"][c] == pytest.approx(want["probabilities"][c], abs=1e-4)
        # f1 thresholds sit on a probability of the data they were tuned on: a class that
        # close to its threshold may fall either side of it by float rounding alone.
        near = {c for c in CLASSES if abs(want["probabilities"][c] - want["thresholds"][c]) < 1e-4}
        assert set(got["labels"]) - near == set(want["labels"]) - near
