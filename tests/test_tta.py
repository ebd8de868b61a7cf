"""Test-time augmentation through predict --tta, evaluate --tta and serve's ?tta=true: off by
default, deterministic, and the same views on all three paths."""

import json

import pytest
from helpers import WAIT_S, run_cli, wait_for

# Every test here uses a trained bundle.
pytestmark = pytest.mark.slow

BASE_URL = "http://127.0.0.1:8000"


def _predict(bundle, data, *extra):
    result = run_cli("predict", "--model", bundle, "--format", "json", data, *extra)
    assert result.exit_code == 0, result.output
    return {r["path"]: r for r in json.loads(result.stdout)}


def test_predict_tta_differs_from_plain_and_is_deterministic(binary_bundle, binary_tree):
    data = binary_tree / "test_set"
    plain = _predict(binary_bundle, data)
    once, again = _predict(binary_bundle, data, "--tta"), _predict(binary_bundle, data, "--tta")
    assert once == again
    assert once.keys() == plain.keys()
    assert any(once[p]["probabilities"] != plain[p]["probabilities"] for p in plain)


def test_evaluate_tta_reports_its_views(binary_bundle, binary_tree):
    result = run_cli(
        "evaluate", "--model", binary_bundle, "--format", "json", binary_tree / "test_set", "--tta"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    # The fixture trained with horizontal_flip: the original and the zoom, and their mirrors.
    assert report["tta"] == {"views": 4}
    assert 0 <= report["accuracy"] <= 1 and "ece" in report["calibration"]


def test_serve_tta_gives_predict_tta_answers(binary_bundle, binary_tree):
    from fastapi.testclient import TestClient

    from cnnclf.bundle import load_bundle
    from cnnclf.serve.app import ServeSettings, create_app

    path = sorted(p for p in (binary_tree / "test_set").rglob("*") if p.is_file())[0]
    expected = _predict(binary_bundle, path, "--tta")[str(path)]["probabilities"]
    plain = _predict(binary_bundle, path)[str(path)]["probabilities"]
    app = create_app(load_bundle(binary_bundle), ServeSettings(name="tta"))
    with TestClient(app, base_url=BASE_URL) as client:
        wait_for(lambda: client.get("/readyz").status_code == 200, "/readyz", WAIT_S, 0.05)
        files = [("file", (path.name, path.read_bytes()))]
        served = client.post("/predict?tta=true", files=files)
        assert served.status_code == 200, served.text
        got = served.json()[0]["probabilities"]
        untouched = client.post("/predict", files=files).json()[0]["probabilities"]
    for name, p in expected.items():
        assert got[name] == pytest.approx(p, abs=1e-4)
        assert untouched[name] == pytest.approx(plain[name], abs=1e-4)
