"""`--data DIR` and data-layout errors through the CLI (issue 25): `train` and `check-data` read
a folder the same way, name the folder they looked in, and exit 2 for the same bad layout."""

import shutil
from pathlib import Path

import pytest
import yaml
from helpers import make_tree, read_json, run_cli, write_config

from cnnclf.config import load_config
from cnnclf.data.layout import discover, find_splits, train_and_test_dirs
from cnnclf.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error: ")]


def _splits_as(root: Path, names: tuple[str, ...]) -> Path:
    """A tiny tree whose training_set/ and test_set/ are renamed to `names` (one name: class
    folders directly in `root`)."""
    made = make_tree(root.parent / f"{root.name}-tmp", n_train=4, n_test=2)
    if len(names) == 1 and names[0] == ".":
        shutil.move(made / "training_set", root)
    else:
        root.mkdir(parents=True)
        for name, source in zip(names, ("training_set", "test_set", "test_set")):
            shutil.copytree(made / source, root / name)
    shutil.rmtree(made)
    return root


@pytest.mark.parametrize(
    "names, expected",
    [
        (("training_set", "test_set"), ("training_set", "test_set")),
        (("train", "val"), ("train", "val")),
        (("train", "val", "test"), ("train", "val")),  # the test set stays unseen
        (("training", "validation"), ("training", "validation")),
        (("train",), ("train", None)),
        ((".",), (".", None)),  # class folders directly: validation_split is held out
    ],
)
def test_data_means_what_check_data_reads(tmp_path, names, expected):
    data = _splits_as(tmp_path / "pets", names)
    train_dir, test_dir = train_and_test_dirs(data)
    assert (train_dir, test_dir) == tuple(
        None if e is None else str(data if e == "." else data / e) for e in expected
    )
    # check-data DIR checks the same training split first, and the evaluation split with it.
    splits = list(find_splits(data).values())
    assert str(splits[0]) == train_dir
    assert test_dir is None or Path(test_dir) in splits[1:]


def test_data_with_a_test_set_and_no_training_set_is_refused(tmp_path):
    data = _splits_as(tmp_path / "pets", ("test_set",))
    shutil.rmtree(data / "test_set" / "vstripes")  # any class layout: no training split
    with pytest.raises(ConfigError, match=r"^--data .*pets: has test_set/ but no training split"):
        train_and_test_dirs(data)


def test_a_missing_folder_names_the_folder_it_was_resolved_from(tmp_path):
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    config = write_config(project / "configs" / "c.yaml", project / "nowhere")
    text = config.read_text().replace(str(project / "nowhere"), "../data")
    config.write_text(text)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # From the config: resolved from its folder, whatever the current folder is.
    result = run_cli("train", "--config", config, cwd=elsewhere)
    assert result.exit_code == 2
    assert _error_lines(result) == [
        f"error: data.train_dir: folder {project / 'data' / 'training_set'} does not exist"
    ]
    # From the command line: resolved from the current folder.
    result = run_cli("train", "--config", config, "--set", "data.train_dir=mine", cwd=elsewhere)
    assert result.exit_code == 2
    assert _error_lines(result) == [
        f"error: data.train_dir: folder {elsewhere / 'mine'} does not exist"
    ]
    for command in (["check-data", "mine"], ["train", "--config", config, "--data", "mine"]):
        result = run_cli(*command, cwd=elsewhere)
        assert result.exit_code == 2
        assert _error_lines(result)[0].endswith(
            f"mine: no such folder (resolved from the current folder {elsewhere})"
        )


def test_a_shipped_config_run_elsewhere_names_the_repository_folder(tmp_path):
    result = run_cli("train", "--config", ROOT / "configs" / "brain_tumor.yaml", cwd=tmp_path)
    assert result.exit_code == 2
    expected = ROOT / "data" / "brain_tumor" / "training_set"
    assert _error_lines(result) == [f"error: data.train_dir: folder {expected} does not exist"]


@pytest.mark.parametrize("case", ["missing", "no_classes", "one_class", "classes_differ"])
def test_check_data_and_train_exit_2_for_the_same_bad_layout(tmp_path, case):
    data = make_tree(tmp_path / "data", n_train=4, n_test=2)
    words = {
        "missing": "no such folder",
        "no_classes": "has no class sub-folders",
        "one_class": "one class folder",
        "classes_differ": "classes differ",
    }[case]
    if case == "missing":
        shutil.rmtree(data)
    elif case == "no_classes":
        for split in ("training_set", "test_set"):
            shutil.rmtree(data / split)
            (data / split).mkdir()
    elif case == "one_class":
        shutil.rmtree(data / "training_set" / "vstripes")
        shutil.rmtree(data / "test_set" / "vstripes")
    else:
        (data / "test_set" / "vstripes").rename(data / "test_set" / "zebra")
    config = write_config(tmp_path / "c.yaml", data)
    checked = run_cli("check-data", data)
    trained = run_cli("train", "--config", config, "--data", data, "--out", tmp_path / "b")
    assert (checked.exit_code, trained.exit_code) == (2, 2)
    assert words in checked.output and words in trained.stderr
    assert len(_error_lines(trained)) == 1
    assert not (tmp_path / "b").exists()


def test_data_and_a_set_of_its_keys_are_refused_in_one_line(tmp_path):
    data = make_tree(tmp_path / "data", n_train=4, n_test=2)
    config = write_config(tmp_path / "c.yaml", data)
    result = run_cli("train", "--config", config, "--data", data, "--set", "data.test_dir=null")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: --data: conflicts with --set data.test_dir; give the folders either with "
        "--data or with --set, not both"
    ]
    result = run_cli("check-data", data, "--data", tmp_path)
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: --data {tmp_path}: conflicts with DATA_DIR {data}; give one"
    ]


def test_check_data_with_a_config_checks_the_data_folder_instead(tmp_path):
    data = _splits_as(tmp_path / "pets", ("train", "val"))
    config = write_config(tmp_path / "c.yaml", tmp_path / "nowhere")
    result = run_cli("check-data", "--config", config, "--data", data, "--format", "json")
    assert result.exit_code == 0, result.output
    assert list(yaml.safe_load(result.stdout)["splits"]) == ["train", "val"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "names, source", [(("train", "val"), "test_dir"), ((".",), "validation_split")]
)
def test_train_with_data_trains_on_the_folder(tmp_path, names, source):
    _splits_as(tmp_path / "pets", names)
    # A config pointing elsewhere: --data replaces its folders, resolved from the current one.
    config = write_config(tmp_path / "c.yaml", tmp_path / "nowhere")
    result = run_cli(
        "train", "--config", config, "--data", "pets", "--out", tmp_path / "b", cwd=tmp_path
    )
    assert result.exit_code == 0, result.output
    manifest = read_json(tmp_path / "b" / "bundle.json")
    assert manifest["validation_source"] == source
    if source == "test_dir":
        assert manifest["train_images"] == {"hstripes": 4, "vstripes": 4}
        assert manifest["validation_images"] == {"hstripes": 2, "vstripes": 2}
    else:  # 4 images a class, 20% held out: one each
        assert manifest["validation_images"] == {"hstripes": 1, "vstripes": 1}
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())["data"]
    assert Path(saved["train_dir"]) == tmp_path / ("pets/train" if names != (".",) else "pets")
    assert (saved["test_dir"] is None) == (source == "validation_split")


def test_check_data_without_a_test_set_says_what_validation_split_takes(tmp_path):
    data = make_tree(tmp_path / "scans", n_train=9, with_test=False)
    result = run_cli("check-data", data)
    assert result.exit_code == 0, result.output
    assert "  hstripes                 9  (2 to validation, 7 to train)" in result.stdout
    assert (
        "  no test set: data.validation_split 0.2 holds out 4 of these 18 images to validate on"
    ) in result.stdout
    # The config's share, and the same numbers the training split (discover) takes.
    config = write_config(
        tmp_path / "c.yaml", data, data={"test_dir": None, "validation_split": 0.5}
    )
    report = yaml.safe_load(run_cli("check-data", "--config", config, "--format", "json").stdout)
    held_out = {"hstripes": 4, "vstripes": 4}  # round(9 * 0.5)
    assert report["validation_split"] == {
        "fraction": 0.5,
        "from": "training_set",
        "held_out": held_out,
    }
    dataset = discover(load_config(config).data, seed=7)
    assert dataset.validation.counts(dataset.class_names) == held_out
    # With a test set nothing is held out, so there is nothing to say.
    both = make_tree(tmp_path / "both", n_train=9)
    report = yaml.safe_load(run_cli("check-data", "--format", "json", both).stdout)
    assert report["validation_split"] is None


def test_check_data_stops_a_class_too_small_to_hold_any_out_as_train_does(tmp_path):
    data = make_tree(tmp_path / "scans", n_train=1, with_test=False)
    result = run_cli("check-data", data)
    assert result.exit_code == 2
    assert (
        "fatal: data.validation_split: class hstripes has 1 image(s), too few to hold 20% out; "
        "add images or set data.test_dir"
    ) in result.stdout
