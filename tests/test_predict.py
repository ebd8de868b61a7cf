"""`cnnclf predict`: inputs, formats, bundle discovery and per-file failures."""

import contextlib
import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from helpers import communicate, run_cli, wait_for

# Every test here trains a model or uses a trained bundle.
pytestmark = pytest.mark.slow


def test_single_file_prints_label_and_probability(binary_bundle, binary_tree):
    image = sorted((binary_tree / "training_set" / "vstripes").iterdir())[0]
    result = run_cli("predict", "--model", binary_bundle, image)
    assert result.exit_code == 0, result.output
    heading, header, row = result.stdout.splitlines()
    assert heading == f"# model {binary_bundle}: classes hstripes, vstripes"
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
    # The table, for people, opens with the model that answered and the classes it knows.
    table = run_cli("predict", image, cwd=tmp_path)
    assert table.exit_code == 0, table.output
    heading, header, _ = table.stdout.splitlines()
    assert heading == "# model runs/new (newest under runs/): classes checker, hstripes, vstripes"
    assert header.split() == ["path", "label", "probability"]


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
    lines = table.stdout.splitlines()[1:]  # after the model line
    assert lines[0].split() == ["path", "label", "probability", "top_k"]
    assert lines[1].count(",") == 2


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


def _held_inputs(folder, image, good: int, bad_bytes: int = 2 << 20) -> tuple[list, int]:
    """`good` copies of `image`, then a folder of enough unreadable files that their error lines
    overflow any pipe: a child whose stderr is not read is held after its good rows, without a
    sleep. Returns (the paths to pass, how many images they are)."""
    (folder / "bad").mkdir(parents=True)
    paths = []
    for i in range(good):
        paths.append(folder / f"good_{i:03d}{image.suffix}")
        shutil.copy(image, paths[-1])
    # Long names make long error lines: fewer files for the same bytes of stderr.
    n_bad = bad_bytes // 250
    for i in range(n_bad):
        (folder / "bad" / f"{'x' * 200}_{i:05d}.jpg").write_bytes(b"not an image")
    return paths + [folder / "bad"], good + n_bad


def _predict_process(*args) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cnnclf", "predict", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_rows_stream_to_stdout_as_they_are_predicted(tmp_path, binary_bundle, binary_tree):
    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    inputs, _ = _held_inputs(tmp_path / "in", image, good=2)
    process = _predict_process("--model", binary_bundle, "--batch-size", "1", *inputs)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(process.stdout.readline, "")))
    reader.start()
    try:
        # stderr is not read yet, so the child cannot finish: rows seen now were streamed.
        wait_for(lambda: len(lines) >= 4, "the model line, header and two good rows on stdout")
        assert process.poll() is None
    finally:
        _, err = communicate(process, "cnnclf predict")
        reader.join()
    assert process.returncode == 1  # the unreadable files
    assert lines[0].startswith(f"# model {binary_bundle}: classes ")
    assert lines[1].split() == ["path", "label", "probability"]
    assert [line.split()[0] for line in lines[2:]] == [str(p) for p in inputs[:2]]
    assert "could not be predicted" in err


@pytest.mark.parametrize("name", ["out.csv", "out.json"])
def test_ctrl_c_keeps_a_complete_file_of_the_rows_written(
    tmp_path, binary_bundle, binary_tree, name
):
    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    inputs, n_images = _held_inputs(tmp_path / "in", image, good=3)
    out = tmp_path / name
    process = _predict_process(
        "--model", binary_bundle, "--batch-size", "1", "--output", out, *inputs
    )
    partial = tmp_path / f".{name}.partial"
    # The three good rows are written, then the child is held on its full stderr pipe.
    wait_for(
        lambda: partial.exists() and partial.read_text().count(str(inputs[2])) == 1,
        "the third row in the output's temporary file",
    )
    process.send_signal(signal.SIGINT)
    _, err = communicate(process, "cnnclf predict after Ctrl-C")
    assert process.returncode == 130, err
    assert f"interrupted: wrote 3 of {n_images} predictions to {out}" in err
    assert "Traceback" not in err and not partial.exists()
    text = out.read_text()
    csv_rows = name.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(text))) if csv_rows else json.loads(text)
    assert [row["path"] for row in rows] == [str(p) for p in inputs[:3]]


def test_json_lines_one_object_per_line(tmp_path, binary_bundle, binary_tree):
    images = sorted((binary_tree / "test_set" / "hstripes").iterdir())[:3]
    result = run_cli("predict", "--model", binary_bundle, "--format", "jsonl", *images)
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == list(
        map(str, images)
    )
    out = tmp_path / "p.jsonl"  # the format from the extension
    assert run_cli("predict", "--model", binary_bundle, "--output", out, *images).exit_code == 0
    assert out.read_text() == result.stdout


def test_on_a_terminal_it_says_what_loads(binary_bundle, binary_tree):
    import pty

    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    terminal, child_end = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnclf", "predict", "--model", str(binary_bundle), str(image)],
        stdout=subprocess.PIPE,
        stderr=child_end,
        text=True,
    )
    os.close(child_end)
    out, _ = communicate(process, "cnnclf predict with stderr on a terminal")
    said = b""
    with contextlib.suppress(OSError):  # EIO once the child's end is closed
        while chunk := os.read(terminal, 4096):
            said += chunk
    os.close(terminal)
    assert process.returncode == 0, said
    assert f"loading TensorFlow and the model {binary_bundle} ..." in said.decode()
    assert "loading" not in out and out.splitlines()[2].startswith(str(image))  # model, header


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_odd_file_names_keep_every_row_and_every_byte(tmp_path, binary_bundle, binary_tree, fmt):
    """A name that is not UTF-8 (b"\\xff") lost every row with a UnicodeEncodeError; a CR in a
    name went into the CSV unquoted and split its row."""
    image = sorted((binary_tree / "test_set" / "hstripes").glob("*.png"))[0]
    inbox = os.fsencode(tmp_path / "inbox")
    os.mkdir(inbox)
    names = [b"\xff.png", b"line\rbreak.png", b'quote"comma,.png', b"plain.png"]
    for name in names:
        shutil.copy(image, os.path.join(inbox, name))
    out = tmp_path / f"out.{fmt}"
    result = run_cli("predict", "--model", binary_bundle, "--output", out, os.fsdecode(inbox))
    assert result.exit_code == 0, result.output
    assert f"wrote 4 prediction(s) to {out}" in result.stderr
    assert not (tmp_path / f".out.{fmt}.partial").exists()
    if fmt == "csv":
        with open(out, newline="", encoding="utf-8", errors="surrogateescape") as f:
            rows = list(csv.DictReader(f))
    else:
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(os.fsencode(row["path"]) for row in rows) == sorted(
        os.path.join(inbox, name) for name in names
    )
    printed = run_cli("predict", "--model", binary_bundle, "--format", fmt, os.fsdecode(inbox))
    assert printed.exit_code == 0 and printed.stdout_bytes == out.read_bytes()
