"""Holding out validation images of a multi-label set so that every label keeps its share.

Per-class stratification (layout's `_carve_validation`) needs one class per image. With
several labels per image a random hold-out easily leaves a rare label out of validation (or out
of training) altogether, and its AUC, AP and tuned threshold are then undefined. Iterative
stratification (Sechidis, Tsoumakas and Vlahavas, "On the stratification of multi-label data",
ECML PKDD 2011) fills the rarest label first, so rare labels are placed while there is still
room for them in both parts.

Plain Python: it runs before TensorFlow loads, as the rest of `discover` does.
"""

from __future__ import annotations

import random


def iterative_hold_out(
    label_sets: list[tuple[int, ...]], n_classes: int, fraction: float, seed: int
) -> list[bool]:
    """Which images to hold out for validation (True) so each label keeps `fraction` of its
    images there.

    A label on n > 1 images gets max(1, round(n * fraction)) of them in validation as its
    target, as `held_out_counts` does for one class per image, so a label on two images or more
    lands in both parts whenever the labels it shares images with leave room. Images with no
    label go where the overall count is furthest below its target.

    Args:
        label_sets: each image's class indices.
        n_classes: the number of classes.
        fraction: data.validation_split, in (0, 1).
        seed: breaks ties, so the same seed gives the same split.

    Returns:
        One flag per image, in `label_sets`' order.

    Example:
        iterative_hold_out([(0,), (0, 1), (1,), (0,)], 2, 0.5, seed=1)  # [False, True, ...]
    """
    rng = random.Random(seed)
    n = len(label_sets)
    per_label = [0] * n_classes
    for labels in label_sets:
        for label in set(labels):
            per_label[label] += 1
    # wanted[part][label]: images of `label` each part still wants (part 0 trains, 1 validates).
    val_wanted = [max(1, round(c * fraction)) if c > 1 else 0 for c in per_label]
    wanted = [[c - v for c, v in zip(per_label, val_wanted)], val_wanted]
    total = [n - round(n * fraction), round(n * fraction)]
    held = [False] * n
    remaining = {i for i, labels in enumerate(label_sets) if labels}
    by_label: list[list[int]] = [[] for _ in range(n_classes)]
    for i in sorted(remaining):
        for label in set(label_sets[i]):
            by_label[label].append(i)
    while remaining:
        left = [(sum(1 for i in by_label[c] if i in remaining), c) for c in range(n_classes)]
        _, rarest = min((count, c) for count, c in left if count)
        images = [i for i in by_label[rarest] if i in remaining]
        rng.shuffle(images)
        for i in images:
            part = _choose(wanted, total, rarest, rng)
            _assign(i, part, label_sets[i], wanted, total, held)
            remaining.discard(i)
    for i in (i for i, labels in enumerate(label_sets) if not labels):
        part = max((0, 1), key=lambda p: (total[p], rng.random()))
        _assign(i, part, (), wanted, total, held)
    return held


def _choose(wanted: list[list[int]], total: list[int], label: int, rng: random.Random) -> int:
    """The part that wants `label` most; ties go to the part that wants more images, then to
    chance."""
    return max((0, 1), key=lambda p: (wanted[p][label], total[p], rng.random()))


def _assign(i, part, labels, wanted, total, held) -> None:
    held[i] = part == 1
    total[part] -= 1
    for label in set(labels):
        wanted[part][label] -= 1
