"""A review folder written by hand, as `cnnclf review` writes one, without training a fold:
review.json, issues.json/.csv and the gallery over a tiny 3-class tree (milliseconds, not
minutes), for the tests of `cnnclf serve --review`."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from helpers import make_tree

from cnnclf.review.gallery import write_gallery
from cnnclf.review.issues import Issue, write_issues

CLASSES = ["checker", "hstripes", "vstripes"]


def make_review(root: Path) -> tuple[Path, Path]:
    """(review folder, training folder): 3 classes x 6 images; a label issue on
    hstripes_001, an ambiguous checker_002, and vstripes_003 both a near duplicate and an
    outlier (one image on two cards)."""
    train = make_tree(root / "data", n_classes=3, n_train=6, with_test=False) / "training_set"
    paths = sorted(str(p) for p in train.rglob("*") if p.is_file())
    labels = np.array([CLASSES.index(Path(p).parent.name) for p in paths])
    probabilities = np.full((len(paths), 3), 0.05)
    probabilities[np.arange(len(paths)), labels] = 0.9
    scored = SimpleNamespace(
        class_names=CLASSES,
        paths=paths,
        labels=labels,
        splits=["train"] * len(paths),
        probabilities=probabilities,
    )
    hstripes, checker, vstripes = (
        next(p for p in paths if Path(p).stem == stem)
        for stem in ("hstripes_001", "checker_002", "vstripes_003")
    )
    issues = [
        Issue(hstripes, "hstripes", "vstripes", 0.9, "label"),
        Issue(checker, "checker", "", 0.5, "ambiguous"),
        Issue(vstripes, "vstripes", "", 0.8, "near_duplicate", detail="like vstripes_004"),
        Issue(vstripes, "vstripes", "", 0.7, "outlier"),
    ]
    folder = root / "review"
    folder.mkdir()
    plan = {
        "train_dir": str(train),
        "test_dir": None,
        "class_names": CLASSES,
        "folds": 3,
        "images": len(paths),
        "seed": 7,
    }
    (folder / "review.json").write_text(json.dumps(plan), encoding="utf-8")
    write_issues(folder, issues)
    write_gallery(folder, scored, issues)
    return folder, train
