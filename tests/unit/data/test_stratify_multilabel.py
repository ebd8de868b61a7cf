"""Iterative stratification (cnnclf/data/stratify.py) and the multi-label hold-out that
`discover` makes with it: rare labels land in both parts, shares are kept, seeds repeat."""

import random
from types import SimpleNamespace

from cnnclf.data.layout import discover
from cnnclf.data.stratify import iterative_hold_out


def test_a_rare_label_lands_in_both_parts():
    rng = random.Random(0)
    # 200 images of common labels 0-2, and label 3 on only 3 of them.
    sets = [tuple(sorted(rng.sample(range(3), rng.randint(1, 2)))) for _ in range(200)]
    for i in (5, 77, 150):
        sets[i] = (*sets[i], 3)
    held = iterative_hold_out(sets, 4, 0.2, seed=1)
    for label in range(4):
        parts = {held[i] for i, s in enumerate(sets) if label in s}
        assert parts == {True, False}, label
    assert abs(sum(held) - 40) <= 4  # whole images: shares are approximate
    for label in range(3):
        n = sum(label in s for s in sets)
        val = sum(label in s for s, h in zip(sets, held) if h)
        assert abs(val - 0.2 * n) <= 2


def test_two_images_of_a_label_are_split_and_unlabelled_images_fill_the_shares():
    sets = [(0,), (0,), (1,), (1,), (1,), (1,), (), (), (), ()]
    held = iterative_hold_out(sets, 2, 0.5, seed=3)
    assert {held[0], held[1]} == {True, False}
    assert sum(held) == 5


def test_the_same_seed_gives_the_same_split_and_another_seed_may_not():
    sets = [(i % 3, (i * 7) % 5) for i in range(60)]
    assert iterative_hold_out(sets, 5, 0.3, seed=2) == iterative_hold_out(sets, 5, 0.3, seed=2)


def test_discover_holds_out_a_stratified_multi_label_validation_split(tmp_path):
    rows = ["path,labels"]
    for i in range(40):
        (tmp_path / f"{i}.png").write_bytes(b"x")
        rows.append(f"{i}.png,{'a' if i % 2 else 'b'}{' rare' if i in (3, 20, 33) else ''}")
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    config = SimpleNamespace(
        train_dir=str(tmp_path / "l.csv"), test_dir=None, validation_split=0.25, multi_label="auto"
    )
    dataset = discover(config, seed=5)
    assert dataset.multi_label and dataset.validation_source == "validation_split"
    assert len(dataset.train) + len(dataset.validation) == 40
    assert not set(dataset.train.paths) & set(dataset.validation.paths)
    assert dataset.train.counts(dataset.class_names)["rare"] >= 1
    assert dataset.validation.counts(dataset.class_names)["rare"] >= 1
    assert dataset.validation.label_sets is not None and len(dataset.validation) == 10
