"""`cnnclf predict`: inputs, formats, bundle discovery and per-file failures."""

import csv
import io
import json
import os
import shutil

import pytest
from helpers import run_cli

# Every test here trains a model or uses a trained bundle.
pytestmark = pytest.mark.slow


def test_single_file_prints_label_and_probability(binary_bundle, binary_tree):
    image = sorted((binary_tree / "training_set" / "vstripes").iterdir())[0]
    result = run_cli("predict", "--model", binary_bundle, image)
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["path", "label", "probability"]
    path, label, probability = row.split()
    assert path == str(image) and label in {"hstripes", "vstripes"}
    assert 0.0 <= float(probability) <= 1.0


def test_json_has_the_contract_keys(multi_bundle, multi_tree):
    folder = multi_tree / "test_set"
    result = run_cli("predict", "--model", multi_bundle, "--format", "json", folder)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 12
    for row in rows:
        assert set(row) == {"path", "label", "probability", "probabilities"}
        assert set(row["probabilities"]) == {"checker", "hstripes", "vstripes"}
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert row["probability"] == max(row["probabilities"].values())
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)


def test_binary_probabilities_follow_the_threshold(binary_bundle, binary_tree):
    folder = binary_tree / "test_set"
    rows = json.loads(
        run_cli("predict", "--model", binary_bundle, "--format", "json", folder).stdout
    )
    for row in rows:
        p1 = row["probabilities"]["vstripes"]
        assert row["probabilities"]["hstripes"] == pytest.approx(1 - p1, abs=1e-5)
        assert row["label"] == ("vstripes" if p1 >= 0.5 else "hstripes")
    low = json.loads(
        run_cli(
            "predict",
            "--model",
            binary_bundle,
            "--format",
            "json",
            "--threshold",
            "0.000001",
            folder,
        ).stdout
    )
    assert {row["label"] for row in low} == {"vstripes"}


def test_glob_and_csv(binary_bundle, binary_tree):
    pattern = str(binary_tree / "test_set" / "*" / "*.png")
    result = run_cli(
        "predict", "--model", binary_bundle, "--format", "csv", "--batch-size", "3", pattern
    )
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 2 and all(r["path"].endswith(".png") for r in rows)
    assert set(rows[0]) == {"path", "label", "probability", "p_hstripes", "p_vstripes"}


def test_batches_give_the_same_answers_as_single_images(binary_bundle, binary_tree):
    folder = binary_tree / "training_set"
    one = json.loads(
        run_cli(
            "predict", "--model", binary_bundle, "--format", "json", "--batch-size", "1", folder
        ).stdout
    )
    many = json.loads(
        run_cli(
            "predict", "--model", binary_bundle, "--format", "json", "--batch-size", "7", folder
        ).stdout
    )
    assert [r["path"] for r in one] == [r["path"] for r in many]
    for a, b in zip(one, many):
        assert a["label"] == b["label"]
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-5)


def test_default_model_is_the_newest_bundle_under_runs(
    tmp_path, binary_bundle, multi_bundle, binary_tree
):
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(binary_bundle, runs / "old")
    shutil.copytree(multi_bundle, runs / "new")
    # copytree keeps the fixtures' times, and which fixture trained first depends on the worker:
    # say which run is newer instead of relying on that order.
    for name, mtime in (("old", 1_000_000_000), ("new", 2_000_000_000)):
        os.utime(runs / name / "bundle.json", (mtime, mtime))
    (runs / ".new.partial-1234").mkdir()  # a staging folder is never picked
    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    result = run_cli("predict", "--format", "json", image, cwd=tmp_path)
    assert result.exit_code == 0, result.output
    assert "using model runs/new" in result.stderr
    assert set(json.loads(result.stdout)[0]["probabilities"]) == {"checker", "hstripes", "vstripes"}


def test_bad_file_is_reported_and_the_rest_still_predicted(tmp_path, binary_bundle, binary_tree):
    good = sorted((binary_tree / "test_set" / "hstripes").iterdir())[:2]
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(b"definitely not a jpeg")
    result = run_cli("predict", "--model", binary_bundle, "--format", "json", good[0], bad, good[1])
    assert result.exit_code == 1
    assert [row["path"] for row in json.loads(result.stdout)] == [str(good[0]), str(good[1])]
    assert f"error: {bad}: not an image" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args, exit_code, message",
    [
        (["nope/missing.jpg"], 2, "nope/missing.jpg: no such file or folder"),
        (["nothing-*.jpg"], 2, "nothing-*.jpg: no image matches this pattern"),
    ],
)
def test_inputs_that_match_nothing_are_usage_errors(
    tmp_path, binary_bundle, args, exit_code, message
):
    result = run_cli("predict", "--model", binary_bundle, *args, cwd=tmp_path)
    assert result.exit_code == exit_code
    assert result.stderr.strip() == f"error: {message}"


def test_not_a_bundle_is_one_clear_line(tmp_path, binary_tree):
    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    (tmp_path / "empty").mkdir()
    result = run_cli("predict", "--model", tmp_path / "empty", image)
    assert result.exit_code == 1
    assert "not a complete cnnclf bundle (missing model.keras" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    none = run_cli("predict", image, cwd=tmp_path)
    assert none.exit_code == 1 and "train first" in none.stderr


def test_top_k_lists_the_most_probable_classes(multi_bundle, multi_tree):
    folder = multi_tree / "test_set" / "checker"
    plain = json.loads(
        run_cli("predict", "--model", multi_bundle, "--format", "json", folder).stdout
    )
    result = run_cli("predict", "--model", multi_bundle, "--format", "json", "--top-k", "2", folder)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    for row, before in zip(rows, plain):
        assert {k: v for k, v in row.items() if k != "top_k"} == before  # fields unchanged
        assert [t["label"] for t in row["top_k"]] == sorted(
            row["probabilities"], key=lambda n: -row["probabilities"][n]
        )[:2]
        assert row["top_k"][0] == {"label": row["label"], "probability": row["probability"]}
    table = run_cli("predict", "--model", multi_bundle, "--top-k", "3", folder)
    assert table.stdout.splitlines()[0].split() == ["path", "label", "probability", "top_k"]
    assert table.stdout.splitlines()[1].count(",") == 2


@pytest.mark.parametrize(
    "bundle_name, option, message",
    [
        (
            "multi_bundle",
            ["--threshold", "0.7"],
            "--threshold 0.7: only binary models have a decision threshold",
        ),
        ("binary_bundle", ["--top-k", "2"], "--top-k 2: for multi-class models"),
        ("multi_bundle", ["--top-k", "4"], "--top-k 4: "),
    ],
)
def test_options_the_model_cannot_use_are_refused(
    request, binary_tree, bundle_name, option, message
):
    bundle = request.getfixturevalue(bundle_name)
    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    result = run_cli("predict", "--model", bundle, *option, image)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {message}")


def test_a_short_batch_is_padded_to_a_power_of_two_not_to_the_batch_size(
    binary_bundle, binary_tree
):
    import numpy as np

    from cnnclf.bundle import load_bundle
    from cnnclf.inference.predict import predict_paths

    bundle = load_bundle(binary_bundle)
    seen = []
    original = bundle.model.predict_on_batch

    def recording(x):
        seen.append(len(x))
        return original(x)

    bundle.model.predict_on_batch = recording
    paths = sorted(str(p) for p in (binary_tree / "training_set").rglob("*.*"))
    assert len(paths) >= 11
    one = list(predict_paths(bundle, paths[:1], batch_size=32))
    eleven = list(predict_paths(bundle, paths[:11], batch_size=4))
    assert seen == [1, 4, 4, 4]  # 1 image: 1 row, not 32; 11 in fours: the last 3 padded to 4
    # Padding changes no answer: the first image alone and within a batch agree.
    assert one[0].probability == pytest.approx(eleven[0].probability, abs=1e-5)
    assert np.isfinite(eleven[-1].probability)
