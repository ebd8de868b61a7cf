"""Label files (cnnclf/data/label_files.py and their use in layout.discover): each form, each
bad-label case as one line naming the file and row, and speed. Images are empty placeholder
files: nothing here decodes, so nothing needs TensorFlow."""

import json
import re
import time
from types import SimpleNamespace

import pytest

from cnnclf.data.label_files import (
    co_occurrence,
    existing_rows,
    is_label_file,
    read_label_file,
    single_label_rows,
    unknown_classes,
)
from cnnclf.data.layout import discover, find_splits, train_and_test_dirs
from cnnclf.errors import ConfigError, DataError


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def images(root, *names):
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")


def config(train, test=None, **keys):
    values = {"validation_split": 0.5, "multi_label": "auto"} | keys
    return SimpleNamespace(train_dir=str(train), test_dir=test and str(test), **values)


def issues(labels):
    return [str(i) for i in labels.issues]


def test_label_files_are_known_by_extension():
    assert is_label_file("a/labels.CSV") and is_label_file("x.jsonl")
    assert not is_label_file("a/train") and not is_label_file("x.json")


def test_csv_label_column_paths_relative_to_the_file_bom_and_quotes(tmp_path):
    file = write(
        tmp_path / "lab" / "train.csv",
        '\ufeffPath,Label\nimg/a.png,cat\n"img/b, c.png", dog \n/abs/d.png,cat\n\n',
    )
    labels = read_label_file(file, "data.train_dir")
    assert labels.form == "label" and labels.issues == []
    assert [(r.path, r.labels, r.where) for r in labels.rows] == [
        (str(tmp_path / "lab" / "img" / "a.png"), ("cat",), "row 1"),
        (str(tmp_path / "lab" / "img" / "b, c.png"), ("dog",), "row 2"),
        ("/abs/d.png", ("cat",), "row 3"),
    ]
    assert labels.class_names == ["cat", "dog"]


@pytest.mark.parametrize("column", ["image", "file", "filename"])
def test_other_path_column_names(tmp_path, column):
    labels = read_label_file(write(tmp_path / "l.csv", f"{column},label\na.png,x\n"), "k")
    assert [r.labels for r in labels.rows] == [("x",)]


def test_labels_column_is_space_separated_and_may_be_empty(tmp_path):
    file = write(tmp_path / "l.csv", "path,labels\na.png,effusion atelectasis\nb.png,\nc.png,x\n")
    labels = read_label_file(file, "k")
    assert [r.labels for r in labels.rows] == [("effusion", "atelectasis"), (), ("x",)]
    assert labels.describe(labels.multi_label_row()) == "row 1 has 2 labels (effusion, atelectasis)"
    assert labels.class_names == ["atelectasis", "effusion", "x"]


def test_one_hot_columns(tmp_path):
    file = write(tmp_path / "l.csv", "path,dog,cat\na.png,0,1\nb.png,1.0,0.0\n")
    labels = read_label_file(file, "k")
    assert labels.form == "one-hot" and labels.class_names == ["cat", "dog"]
    assert [r.labels for r in labels.rows] == [("cat",), ("dog",)]
    assert labels.multi_label_row() is None


def test_one_hot_with_several_ones_is_multi_label(tmp_path):
    labels = read_label_file(write(tmp_path / "l.csv", "path,a,b\nx.png,1,1\n"), "k")
    assert labels.describe(labels.multi_label_row()) == "row 1 has 2 labels (a, b)"


@pytest.mark.parametrize(
    "cell, said", [("-1", "-1 (uncertain)"), ("", "blank (unknown)"), ("yes", "'yes'")]
)
def test_one_hot_minus_one_blank_and_words_are_errors_naming_row_and_column(tmp_path, cell, said):
    file = write(tmp_path / "l.csv", f"path,a,b\nx.png,1,0\ny.png,0,{cell}\n")
    assert issues(read_label_file(file, "k")) == [
        f"{file}: row 2: column b: {said} is not allowed: a class column holds 0 or 1 "
        "(write 0 or 1 in every cell)"
    ]


def test_jsonl_forms_blank_lines_and_line_numbers(tmp_path):
    file = write(
        tmp_path / "l.jsonl",
        '{"path": "a.png", "label": "cat"}\n\n{"path": "b.png", "labels": ["dog", "big dog"]}\n'
        '{"path": "c.png", "label": 3}\n',
    )
    labels = read_label_file(file, "k")
    assert [(r.labels, r.where) for r in labels.rows] == [
        (("cat",), "line 1"),
        (("dog", "big dog"), "line 3"),
        (("3",), "line 4"),
    ]
    assert labels.form == "labels"


@pytest.mark.parametrize(
    "line, problem",
    [
        ("{not json", "malformed: not valid JSON"),
        ("[1, 2]", "malformed: not a JSON object"),
        ('{"label": "cat"}', "malformed: no path"),
        ('{"path": "a.png"}', 'malformed: give either "label"'),
        ('{"path": "a.png", "label": "x", "labels": ["x"]}', 'malformed: give either "label"'),
        ('{"path": "a.png", "label": ""}', "empty label"),
        ('{"path": "a.png", "label": null}', "label is not a string"),
        ('{"path": "a.png", "labels": "cat"}', "labels must be a list of non-empty strings"),
    ],
)
def test_bad_jsonl_lines(tmp_path, line, problem):
    file = write(tmp_path / "l.jsonl", '{"path": "ok.png", "label": "cat"}\n' + line + "\n")
    found = issues(read_label_file(file, "k"))
    assert len(found) == 1 and found[0].startswith(f"{file}: line 2: {problem}")


@pytest.mark.parametrize(
    "text, problem",
    [
        ("path,label\na.png,cat\nb.png,\n", "row 2: empty label cell (column label)"),
        ("path,label\na.png,cat\nb.png,dog,extra\n", "row 2: malformed row: 3 fields"),
        ("path,label\na.png,cat\n,dog\n", "row 2: malformed row: empty path"),
        (
            "path,label\na.png,cat\n./a.png,dog\n",
            "row 2: ./a.png is also on row 1 with different labels (dog here, cat there)",
        ),
    ],
)
def test_bad_csv_rows_are_one_line_naming_file_and_row(tmp_path, text, problem):
    file = write(tmp_path / "l.csv", text)
    labels = read_label_file(file, "k")
    assert len(labels.fatal) == 1 and str(labels.fatal[0]).startswith(f"{file}: {problem}")


def test_a_path_twice_with_the_same_label_is_a_warning_and_kept_once(tmp_path):
    labels = read_label_file(write(tmp_path / "l.csv", "path,label\na.png,x\na.png,x\n"), "k")
    assert len(labels.rows) == 1 and labels.fatal == []
    assert issues(labels) == [
        f"{tmp_path / 'l.csv'}: row 2: a.png is listed again (as on row 1); kept once"
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty; it needs a header row such as path,label"),
        ("name,label\na,b\n", "header: no path column (path, image, file, filename)"),
        ("path\na.png\n", "header: no label column"),
        ("path,label,labels\n", "header: has both label and labels"),
        ("path,label,Label\n", "header: column label appears twice"),
    ],
)
def test_unusable_headers_stop_with_one_line(tmp_path, text, message):
    file = write(tmp_path / "l.csv", text)
    with pytest.raises(DataError, match=r"^data\.train_dir: ") as error:
        read_label_file(file, "data.train_dir")
    assert message in str(error.value) and "\n" not in str(error.value)


def test_missing_label_file_and_non_utf8(tmp_path):
    with pytest.raises(DataError, match=r"label file .* does not exist"):
        read_label_file(tmp_path / "none.csv", "k")
    (tmp_path / "latin.csv").write_bytes(b"path,label\ncaf\xe9.png,x\n")
    with pytest.raises(DataError, match=r"is not UTF-8 text \(byte 0xe9\)"):
        read_label_file(tmp_path / "latin.csv", "k")


def test_unknown_classes_in_a_test_file(tmp_path):
    test = read_label_file(
        write(tmp_path / "t.csv", "path,labels\na.png,cat\nb.png,pleural effusion\n"), "k"
    )
    found = [str(i) for i in unknown_classes(test, ["cat", "dog"], "data.train_dir")]
    assert found == [
        f"{tmp_path / 't.csv'}: row 2: class pleural, effusion is not a class of "
        "data.train_dir (labels are separated by spaces, so a class name cannot contain one)"
    ]


def test_missing_images_are_skipped_with_their_row(tmp_path):
    images(tmp_path, "a.png")
    labels = read_label_file(write(tmp_path / "l.csv", "path,label\na.png,x\nb.png,y\n"), "k")
    kept, missing = existing_rows(labels)
    assert [r.path for r in kept] == [str(tmp_path / "a.png")]
    assert missing == {
        str(tmp_path / "b.png"): f"listed on {tmp_path / 'l.csv'} row 2, but does not exist"
    }


def test_co_occurrence_counts_pairs(tmp_path):
    text = "path,labels\na.png,x y\nb.png,y x z\nc.png,z\n"
    labels = read_label_file(write(tmp_path / "l.csv", text), "k")
    assert co_occurrence(labels.rows) == [("x", "y", 2), ("x", "z", 1), ("y", "z", 1)]


def _csv_tree(tmp_path, rows, name="train.csv"):
    """Images a.png.. and a label file listing them: rows are (file, label)."""
    images(tmp_path / "img", *[f for f, _ in rows])
    lines = ["path,label"] + [f"img/{f},{label}" for f, label in rows]
    return write(tmp_path / name, "\n".join(lines) + "\n")


def test_discover_sorts_by_class_then_path_whatever_the_row_order(tmp_path):
    rows = [("d.png", "b"), ("a.png", "b"), ("c.png", "a"), ("b.png", "a")]
    first = discover(config(_csv_tree(tmp_path, rows)), seed=1)
    again = discover(config(_csv_tree(tmp_path, rows[::-1], "shuffled.csv")), seed=1)
    assert first.class_names == ["a", "b"]
    assert (first.train, first.validation) == (again.train, again.validation)
    assert first.validation_source == "validation_split" and len(first.validation) == 2
    assert first.labels_from["train_dir"]["form"] == "label"


def test_discover_with_a_test_file_and_a_missing_image(tmp_path):
    train = _csv_tree(tmp_path, [("a.png", "x"), ("b.png", "y")])
    images(tmp_path / "img", "t1.png", "t2.png")
    test = write(tmp_path / "test.csv", "path,label\nimg/t1.png,x\nimg/t2.png,y\nimg/gone.png,y\n")
    dataset = discover(config(train, test), seed=1)
    assert dataset.validation.labels == [0, 1]
    assert list(dataset.skipped) == [str(tmp_path / "img" / "gone.png")]
    assert set(dataset.labels_from) == {"train_dir", "test_dir"}


@pytest.mark.parametrize(
    "rows, test_rows, message",
    [
        ([("a.png", "x"), ("b.png", "x")], None, "has only one class (x)"),
        ([("a.png", "x"), ("b.png", "y")], "img/a.png,z\n", "row 1: class z is not a class of"),
        ([("a.png", "x"), ("b.png", "y")], "img/a.png,x\n", "class y has no row in"),
    ],
)
def test_discover_refuses_what_would_train_the_wrong_thing(tmp_path, rows, test_rows, message):
    train = _csv_tree(tmp_path, rows)
    test = test_rows and write(tmp_path / "test.csv", "path,label\n" + test_rows)
    with pytest.raises(DataError, match=re.escape(message)):
        discover(config(train, test), seed=1)


def test_multi_label_is_chosen_by_auto_refused_by_false_and_needs_a_label_file(tmp_path):
    images(tmp_path, "a.png", "b.png", "c.png", "d.png", "cat/e.png", "dog/f.png")
    file = write(tmp_path / "l.csv", "path,labels\na.png,x\nb.png,x y\nc.png,y\nd.png,\n")
    dataset = discover(config(file, file), seed=1)
    assert dataset.multi_label and dataset.class_names == ["x", "y"]
    assert dataset.train.label_sets == [(0,), (0, 1), (1,), ()]  # d.png: no label, kept
    assert dataset.train.counts(["x", "y"]) == {"x": 2, "y": 2}
    with pytest.raises(
        DataError, match=re.escape("row 2 has 2 labels (x, y): data.multi_label is false")
    ):
        discover(config(file, multi_label=False), seed=1)
    with pytest.raises(ConfigError, match=r"^data\.multi_label: true needs data\.train_dir to be"):
        discover(config(tmp_path, multi_label=True), seed=1)


def test_a_multi_label_test_file_of_a_single_label_training_file_names_the_row(tmp_path):
    images(tmp_path, "a.png", "b.png")
    train = write(tmp_path / "train.csv", "path,label\na.png,x\nb.png,y\n")
    test = write(tmp_path / "test.csv", "path,labels\na.png,x\nb.png,x y\n")
    with pytest.raises(DataError) as error:
        discover(config(train, test), seed=1)
    assert str(error.value).startswith(
        f"data.test_dir: {test}: row 2 has 2 labels (x, y): a test file is read as its "
        "training file is, and data.train_dir is single-label"
    )


def test_data_multi_label_true_reads_one_label_per_row_as_multi_label(tmp_path):
    images(tmp_path, "a.png", "b.png")
    file = write(tmp_path / "l.csv", "path,label\na.png,x\nb.png,y\n")
    dataset = discover(config(file, file, multi_label=True), seed=1)
    assert dataset.multi_label and dataset.validation.label_sets == [(0,), (1,)]


def test_single_label_rows_needs_a_usable_image_per_class(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(b"")  # empty: not usable
    images(tmp_path, "img/b.png")
    labels = read_label_file(
        write(tmp_path / "l.csv", "path,label\nimg/a.png,x\nimg/b.png,y\n"), "k"
    )
    with pytest.raises(DataError, match=r"class x has no usable image in .*: its 1 row"):
        single_label_rows(labels, "data.train_dir", None, "auto", {})


def test_data_dir_finds_label_files(tmp_path):
    write(tmp_path / "one" / "labels.jsonl", "")
    assert train_and_test_dirs(tmp_path / "one") == (str(tmp_path / "one" / "labels.jsonl"), None)
    for name in ("train.csv", "val.csv", "test.csv", "notes.csv"):
        write(tmp_path / "two" / name, "")
    assert list(find_splits(tmp_path / "two")) == ["train", "val", "test"]
    assert train_and_test_dirs(tmp_path / "two") == (
        str(tmp_path / "two" / "train.csv"),
        str(tmp_path / "two" / "val.csv"),
    )
    file = tmp_path / "two" / "train.csv"
    assert train_and_test_dirs(file) == (str(file), None)  # --data FILE


def test_a_large_csv_parses_in_time_linear_in_its_rows(tmp_path):
    # Ratios, not seconds: a shared machine's absolute times drift by half. Ten times the rows
    # must cost about ten times as long (not a hundred: nothing quadratic per row), best of 3.
    def parse(rows: int) -> float:
        lines = ["path,label"] + [f"images/{i:06d}.png,class_{i % 10}" for i in range(rows)]
        file = write(tmp_path / f"big{rows}.csv", "\n".join(lines) + "\n")
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            labels = read_label_file(file, "k")
            best = min(best, time.perf_counter() - started)
        assert len(labels.rows) == rows and len(labels.class_names) == 10
        return best

    small, large = parse(10_000), parse(100_000)
    assert large < 25 * small, f"10k rows {small:.3f} s, 100k rows {large:.3f} s"


def test_a_huge_jsonl_line_is_malformed_without_being_read_whole(tmp_path):
    record = json.dumps({"path": "a.png", "label": "x" * (2 << 20)})
    file = write(tmp_path / "l.jsonl", record + '\n{"path": "b.png", "label": "y"}\n')
    labels = read_label_file(file, "k")
    assert [str(i).split(": ", 2)[1:] for i in labels.issues] == [
        ["line 1", "malformed: longer than 1048576 characters"]
    ]
    assert [r.labels for r in labels.rows] == [("y",)]
