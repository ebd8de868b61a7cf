"""Discovering images and class folders (cnnclf/data/layout.py) on small trees in tmp_path."""

import os

import pytest

from cnnclf.data.layout import class_difference, class_folders, expand_inputs
from cnnclf.data.listing import is_image_name, list_images
from cnnclf.errors import ConfigError, DataError


def touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cat.jpg", True),
        ("CAT.JPEG", True),
        ("scan.tiff", True),
        ("photo.webp", True),
        ("notes.txt", False),
        ("._cat.jpg", False),  # a macOS AppleDouble companion
        (".hidden.png", False),
        ("jpg", False),
    ],
)
def test_image_names(name, expected):
    assert is_image_name(name) is expected


def test_images_are_listed_recursively_sorted_without_dot_entries(tmp_path):
    for relative in ["b.png", "a.jpg", "sub/c.gif", ".cache/d.png", "._a.jpg", "notes.txt"]:
        touch(tmp_path / relative)
    assert list_images(tmp_path) == [
        str(tmp_path / "a.jpg"),
        str(tmp_path / "b.png"),
        str(tmp_path / "sub" / "c.gif"),
    ]


def test_class_folders_are_the_sorted_sub_folders(tmp_path):
    for name in ["dog", "cat", ".git"]:
        (tmp_path / name).mkdir()
    touch(tmp_path / "README.txt")
    assert class_folders(tmp_path, "data.train_dir") == ["cat", "dog"]


def test_class_folders_errors_name_the_key(tmp_path):
    with pytest.raises(DataError, match=r"^data.train_dir: folder .*nowhere does not exist"):
        class_folders(tmp_path / "nowhere", "data.train_dir")
    touch(tmp_path / "loose" / "a.jpg")
    with pytest.raises(DataError, match=r"^data.test_dir: .* has no class sub-folders \(images"):
        class_folders(tmp_path / "loose", "data.test_dir")


def test_class_difference_says_what_is_missing_and_extra():
    assert class_difference(["cat", "dog"], ["cat", "dog"]) == ""
    assert class_difference(["cat", "dog", "eel"], ["dog", "fox"]) == "missing cat, eel; extra fox"
    assert class_difference(["cat"], ["cat", "fox"], "unknown") == "unknown fox"


def test_predict_inputs_expand_folders_globs_and_files_in_order(tmp_path):
    one = touch(tmp_path / "one.png")
    for name in ["b.jpg", "a.jpg"]:
        touch(tmp_path / "folder" / name)
    touch(tmp_path / "glob" / "x.png")
    touch(tmp_path / "glob" / "y.txt")
    paths = expand_inputs([str(one), str(tmp_path / "folder"), str(tmp_path / "glob" / "*")])
    assert paths == [
        str(one),
        str(tmp_path / "folder" / "a.jpg"),
        str(tmp_path / "folder" / "b.jpg"),
        str(tmp_path / "glob" / "x.png"),
    ]


def test_predict_inputs_that_match_nothing_are_usage_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="folder has no images"):
        expand_inputs([str(tmp_path / "empty")])
    with pytest.raises(ConfigError):
        expand_inputs([os.path.join(str(tmp_path), "*.png")])
