"""A multi-label review refuses class names with a space before it creates its folder or
trains: label sets are written space-separated (issues, the page, decisions.csv), so
`pleural effusion` would read back as two classes. A single-label review takes such a name."""

import pytest
from helpers import run_cli, write_config
from PIL import Image

from cnnclf.config import load_config
from cnnclf.errors import DataError
from cnnclf.review import apply, run
from cnnclf.review.folds import check_column_names


def _images(folder, n):
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(folder / "img" / f"{i}.png")


def test_a_multi_label_review_refuses_a_spaced_class_before_it_starts(tmp_path):
    data = tmp_path / "data"
    _images(data, 4)
    rows = ["path,edema,pleural effusion"] + [f"img/{i}.png,{i % 2},1" for i in range(4)]
    (data / "train.csv").write_text("\n".join(rows) + "\n")
    config = write_config(
        tmp_path / "c.yaml", data, data={"train_dir": str(data / "train.csv"), "test_dir": None}
    )
    out = tmp_path / "out"
    result = run_cli("review", "--config", config, "--folds", 2, "--out", out)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: data.train_dir: class 'pleural effusion' has a space; a multi-label review writes "
        f"label sets space-separated: rename it (e.g. pleural_effusion) in {data / 'train.csv'}'s "
        "header"
    ]
    assert not out.exists()  # nothing created, nothing trained


def test_the_message_names_the_file_and_where_in_it():
    with pytest.raises(DataError) as info:
        check_column_names(["edema", "pleural  effusion"], "/d/train.csv")
    assert str(info.value).endswith("rename it (e.g. pleural_effusion) in /d/train.csv's header")
    with pytest.raises(DataError, match=r"in /d/train.jsonl$"):
        check_column_names(["a\tb"], "/d/train.jsonl")
    check_column_names(["edema", "pleural_effusion"], "/d/train.csv")


def test_a_single_label_review_takes_a_spaced_class(tmp_path):
    for name in ("big dog", "cat"):
        _images(tmp_path / "train" / name, 2)
        for image in (tmp_path / "train" / name / "img").iterdir():
            image.rename(tmp_path / "train" / name / image.name)
        (tmp_path / "train" / name / "img").rmdir()
    config = write_config(
        tmp_path / "c.yaml", tmp_path, data={"train_dir": str(tmp_path / "train"), "test_dir": None}
    )
    data = run.read_data(load_config(config))
    assert data.class_names == ["big dog", "cat"] and not data.multi_label
    assert sorted(run._folds(data, folds=2, seed=7)) == [0, 0, 1, 1]
    decided = apply.parse_decisions(
        f"path,action,label\n{tmp_path / 'train' / 'cat' / '0.png'},relabel,big dog\n",
        "d.csv",
        data.class_names,
    )
    review = {"train_dir": str(tmp_path / "train"), "test_dir": None}
    [(_, target)] = apply.plan(decided, {**review, "class_names": data.class_names}).moves
    assert target == str(tmp_path / "train" / "big dog" / "0-2.png")  # 0.png is taken there


def test_apply_refuses_a_multi_label_review_written_before_the_check(tmp_path):
    """Such a review's sets are ambiguous ({a, b} against a class `a b`): nothing is planned."""
    (tmp_path / "train.csv").write_text("path,edema,pleural effusion\na.png,1,0\n")
    decided = apply.parse_decisions(
        f"path,action,label\n{tmp_path / 'a.png'},relabel,\n",
        "d.csv",
        ["edema", "pleural effusion"],
    )
    review = {
        "train_dir": str(tmp_path / "train.csv"),
        "test_dir": None,
        "class_names": ["edema", "pleural effusion"],
        "multi_label": True,
    }
    with pytest.raises(DataError, match=r"class 'pleural effusion' has a space"):
        apply.plan(decided, review)
