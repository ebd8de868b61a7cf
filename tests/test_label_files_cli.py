"""Label files through the CLI (issue 26, first part): check-data lists every row problem and
what a multi-label file holds; train stops on bad labels before TensorFlow loads; a CSV or JSON
Lines file trains and evaluates like the class folders it lists, to the same accuracy."""

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from helpers import make_tree, read_json, run_cli, run_process, write_config


def _rows(tree: Path, split: str) -> list[tuple[str, str]]:
    """(path relative to `tree`, class) of every image of a split of a `make_tree` tree."""
    return [
        (f"{split}/{cls}/{name}", cls)
        for cls in sorted(os.listdir(tree / split))
        for name in sorted(os.listdir(tree / split / cls))
    ]


def _write_csv(path: Path, rows, header="path,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{p},{c}\n" for p, c in rows), encoding="utf-8")
    return path


def _write_jsonl(path: Path, rows) -> Path:
    lines = [json.dumps({"path": p, "label": c}) for p, c in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def labelled(tmp_path):
    """A tiny tree with train.csv and test.csv beside it, listing its images (rows reversed:
    the order of rows must not matter)."""
    tree = make_tree(tmp_path / "tree", n_train=6, n_test=3)
    _write_csv(tree / "train.csv", _rows(tree, "training_set")[::-1])
    _write_csv(tree / "test.csv", _rows(tree, "test_set"))
    return tree


def _cli_without_tensorflow(*args) -> tuple[int, str, bool]:
    """(exit code, stderr, whether TensorFlow was imported) of the CLI in a fresh process."""
    code = (
        "import sys\nfrom cnnclf.cli import main\ntry:\n    main()\nexcept SystemExit as e:\n"
        "    print('TF' if 'tensorflow' in sys.modules else 'NO-TF', e.code)\n"
    )
    result = run_process([sys.executable, "-c", code, *map(str, args)], "cnnclf")
    marker, exit_code = result.stdout.split()[-2:]
    return int(exit_code), result.stderr, marker == "TF"


def test_check_data_lists_every_row_problem_with_file_and_row(labelled):
    rows = _rows(labelled, "training_set")
    bad = _write_csv(
        labelled / "bad.csv",
        [
            *rows[:4],
            (rows[0][0], "vstripes"),
            ("training_set/gone.png", "hstripes"),
            (rows[5][0], ""),
        ],
    )
    result = run_cli("check-data", bad, "--format", "json")
    assert result.exit_code == 2, result.output
    report = json.loads(result.stdout)
    details = [(p["kind"], p["path"], p["detail"]) for p in report["problems"]]
    assert (
        "bad_label",
        str(bad),
        f"row 5: {rows[0][0]} is also on row 1 with different labels "
        "(vstripes here, hstripes there); keep one row",
    ) in details
    assert ("bad_label", str(bad), "row 7: empty label cell (column label)") in details
    gone = str(labelled / "training_set" / "gone.png")
    assert ("missing", gone, f"listed on {bad} row 6, but does not exist") in details
    assert report["fatal"][0].startswith(f"bad: {bad}: row 5: ")
    assert report["fatal"][0].endswith("and 1 more (bad_label above)")
    assert report["label_files"]["bad"]["missing_images"] == 1


def test_check_data_reports_a_multi_label_file_fully(labelled):
    rows = _rows(labelled, "training_set")
    labels = ["hstripes vstripes", "vstripes", "hstripes vstripes", "", "hstripes", "vstripes"]
    multi = _write_csv(
        labelled / "multi.csv", list(zip([p for p, _ in rows], labels)), "path,labels"
    )
    result = run_cli("check-data", multi, "--format", "json")
    report = json.loads(result.stdout)
    assert report["splits"]["multi"] == {"hstripes": 3, "vstripes": 4}
    facts = report["label_files"]["multi"]
    assert facts["multi_label"] and facts["first_multi_label_row"] == "row 1"
    assert facts["images_without_label"] == 1
    assert facts["co_occurrence"] == [{"labels": ["hstripes", "vstripes"], "images": 2}]
    assert report["validation_split"] is None  # no per-class split of a multi-label file
    assert not report["fatal"]  # multi-label files train (tests/test_multilabel.py)
    assert result.exit_code == 0


def test_check_data_reads_a_folder_of_label_files_and_finds_leakage(labelled, tmp_path):
    labels = tmp_path / "labels"
    labels.mkdir()
    train = [(f"../tree/{p}", c) for p, c in _rows(labelled, "training_set")]
    leaked = [(f"../tree/{p}", c) for p, c in _rows(labelled, "test_set")] + [train[0]]
    _write_csv(labels / "train.csv", train)
    _write_csv(labels / "test.csv", leaked)
    result = run_cli("check-data", labels, "--format", "json")
    report = json.loads(result.stdout)
    assert list(report["splits"]) == ["train", "test"]
    assert report["splits"]["test"] == {"hstripes": 4, "vstripes": 3}
    assert report["leaked_images"] == 1, report


def test_fix_to_refuses_a_label_file_instead_of_writing_nothing(labelled, tmp_path):
    result = run_cli("check-data", labelled / "train.csv", "--fix-to", tmp_path / "clean")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --fix-to {tmp_path / 'clean'}: works on class folders only, and "
        f"{labelled / 'train.csv'} is a label file; fix its rows instead (check-data names "
        "each one)"
    ]
    assert not (tmp_path / "clean").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("path,label\n{a},hstripes\n{b},\n", "row 2: empty label cell (column label)"),
        ("path\n{a}\n", "header: no label column"),
    ],
)
def test_train_stops_on_bad_labels_before_tensorflow(labelled, tmp_path, text, message):
    (a, _), (b, _) = _rows(labelled, "training_set")[:2]
    bad = labelled / "bad.csv"
    bad.write_text(text.format(a=a, b=b), encoding="utf-8")
    config = write_config(
        tmp_path / "c.yaml", labelled, data={"train_dir": str(bad), "test_dir": None}
    )
    code, stderr, tensorflow = _cli_without_tensorflow(
        "train", "--config", config, "--out", tmp_path / "b"
    )
    assert (code, tensorflow) == (2, False), stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: data.train_dir: {bad}: {message}")


def test_multi_label_true_on_class_folders_stops_naming_the_key(labelled, tmp_path):
    config = write_config(tmp_path / "c.yaml", labelled, data={"multi_label": True})
    code, stderr, tensorflow = _cli_without_tensorflow("train", "--config", config)
    assert (code, tensorflow) == (2, False)
    assert stderr.startswith(
        "error: data.multi_label: true needs data.train_dir to be a label file (.csv or .jsonl)"
    )


@pytest.mark.slow
def test_csv_trains_exactly_as_the_folders_it_lists(labelled, tmp_path):
    """Same seed, same config, deterministic: a label file of a folder tree is that tree."""
    train = {"epochs": 2, "seed": 3, "deterministic": True}
    folders = write_config(tmp_path / "folders.yaml", labelled, train=train)
    csv = write_config(
        tmp_path / "csv.yaml",
        labelled,
        data={"train_dir": str(labelled / "train.csv"), "test_dir": str(labelled / "test.csv")},
        train=train,
    )
    for config, out in ((folders, "b_folders"), (csv, "b_csv")):
        result = run_cli("train", "--config", config, "--out", tmp_path / out)
        assert result.exit_code == 0, result.output
    by_folder = read_json(tmp_path / "b_folders" / "bundle.json")
    by_csv = read_json(tmp_path / "b_csv" / "bundle.json")
    assert by_csv["final_metrics"] == by_folder["final_metrics"]
    assert by_csv["validation_images"] == by_folder["validation_images"]
    saved = yaml.safe_load((tmp_path / "b_csv" / "config.yaml").read_text())
    assert saved["data"]["train_dir"] == str(labelled / "train.csv")


@pytest.mark.slow
def test_jsonl_with_validation_split_trains_and_a_csv_evaluates(labelled, tmp_path):
    rows = [(f"tree/{p}", c) for p, c in _rows(labelled, "training_set")]
    rows.append(("tree/training_set/gone.png", "hstripes"))  # skipped, counted
    _write_jsonl(tmp_path / "labels.jsonl", rows)
    config = write_config(tmp_path / "c.yaml", labelled, data={"validation_split": 0.25})
    result = run_cli("train", "--config", config, "--data", tmp_path, "--out", tmp_path / "b")
    assert result.exit_code == 0, result.output
    record = read_json(tmp_path / "b" / "bundle.json")
    assert record["validation_source"] == "validation_split"
    assert sum(record["validation_images"].values()) == 4  # 25% of each class of 6
    assert [s["path"] for s in record["skipped_files"]] == [
        str(labelled / "training_set" / "gone.png")
    ]

    result = run_cli(
        "evaluate", "--model", tmp_path / "b", labelled / "test.csv", "--format", "json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["data_dir"] == str((labelled / "test.csv").resolve())
    assert report["images_per_class"] == {"hstripes": 3, "vstripes": 3}

    unknown = _write_csv(
        tmp_path / "unknown.csv", [(f"tree/{_rows(labelled, 'test_set')[0][0]}", "cat")]
    )
    result = run_cli("evaluate", "--model", tmp_path / "b", unknown)
    assert result.exit_code == 2
    assert f"DATA_DIR: {unknown}: row 1: class cat is not a class of the model" in result.stderr
