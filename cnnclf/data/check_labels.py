"""`cnnclf check-data` on label files: every row problem, the images they name, and what a
multi-label file holds (label counts, the most common pairs, images with no label).

check.py inspects the images of a label file exactly as those of a class folder (one decoder,
one hash for duplicates and leakage); this module turns the file into those images and into
the report's lines. No TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

from cnnclf.data.label_files import (
    LabelFile,
    co_occurrence,
    existing_rows,
    is_label_file,
    label_counts,
    read_label_file,
    unknown_classes,
)
from cnnclf.errors import DataError

# Problem kinds this module adds to check.py's (with their severity and advice there).
BAD_LABEL = "bad_label"
MISSING = "missing"


def read_label_files(splits: dict[str, Path], report) -> dict[str, LabelFile]:
    """Parses the splits that are label files; their problems go into `report`.

    A test file's classes are checked against the training file's (the first split). What
    would stop `train` goes to `report.fatal` as one line per file, the rows themselves to
    `report.problems` (the table shows a few, --format json every one).

    Returns:
        Split name -> parsed file, for the splits that could be read.
    """
    from cnnclf.data.check import Problem

    labelled: dict[str, LabelFile] = {}
    for name, root in splits.items():
        if not is_label_file(root):
            continue
        try:
            labelled[name] = read_label_file(root, name)
        except DataError as exc:
            report.fatal.append(str(exc))
    train_name = next(iter(splits), "")
    train = labelled.get(train_name)
    for name, labels in labelled.items():
        if train is not None and labels is not train:
            labels.issues += unknown_classes(labels, train.class_names, train_name)
        for issue in labels.issues:
            if issue.fatal:
                report.problems.append(Problem(BAD_LABEL, labels.file, _row_text(issue)))
        report.problems += [
            Problem("duplicate", labels.file, _row_text(issue))
            for issue in labels.issues
            if not issue.fatal
        ]
        fatal = labels.fatal
        if fatal:
            more = f" and {len(fatal) - 1} more ({BAD_LABEL} above)" if len(fatal) > 1 else ""
            report.fatal.append(f"{name}: {fatal[0]}{more}")
    return labelled


def class_names_of(labelled: dict[str, LabelFile], splits: dict[str, Path]) -> dict[str, list]:
    """Each label file's classes for the report: the training file's for every split, so the
    counts line up (a test file may lack a class; its count is then 0)."""
    train_name = next(iter(splits), None)
    train = labelled.get(train_name) if train_name else None
    return {
        name: (train or labels).class_names if name != train_name else labels.class_names
        for name, labels in labelled.items()
    }


def label_file_jobs(split: str, labels: LabelFile, classes: list[str], report):
    """(split, first label, path) of each image the file names that exists, to inspect; the
    missing ones are `missing` problems. Sets the split's label counts and its summary."""
    from cnnclf.data.check import Problem

    kept, missing = existing_rows(labels)
    report.problems += [Problem(MISSING, path, reason) for path, reason in missing.items()]
    report.splits[split] = label_counts(kept, classes)
    several = labels.multi_label_row()
    report.label_files[split] = {
        **labels.source(),
        "missing_images": len(missing),
        "multi_label": several is not None,
        "first_multi_label_row": several.where if several else None,
        "images_without_label": sum(1 for row in kept if not row.labels),
        "co_occurrence": [{"labels": [a, b], "images": n} for a, b, n in co_occurrence(kept)],
    }
    for name, count in report.splits[split].items():
        if not count:  # train stops: no image to train on, or to validate on
            report.fatal.append(f"{split}: class {name} has no image in {labels.file}")
    return [(split, row.labels[0] if row.labels else "", row.path) for row in kept]


def unreadable_classes(split: str, labels: LabelFile, unreadable: set[str], report) -> None:
    """A class whose every listed image is unreadable stops training: one fatal line each."""
    readable = label_counts(
        [row for row in labels.rows if row.path not in unreadable], list(report.splits[split])
    )
    for name, count in report.splits[split].items():
        if count and not readable[name]:
            report.fatal.append(
                f"{split}: class {name} has no readable image in {labels.file} (all {count} "
                "are unreadable or empty)"
            )


def _row_text(issue) -> str:
    return f"{issue.where}: {issue.problem}"


def label_file_lines(report: dict) -> list[str]:
    """The table lines for a check-data report's label files (its JSON `label_files`): where
    each split's labels came from and, for a multi-label file, what it holds."""
    lines = []
    for split, facts in (report.get("label_files") or {}).items():
        lines.append(
            f"{split}: labels from {facts['file']} ({facts['format']}, {facts['form']}, "
            f"{facts['rows']} rows, {facts['missing_images']} missing image(s))"
        )
        if not facts["multi_label"]:
            continue
        lines.append(
            f"  multi-label (first at {facts['first_multi_label_row']}): "
            f"{facts['images_without_label']} image(s) with no label"
        )
        lines += [
            f"  together: {' + '.join(pair['labels'])}  {pair['images']}"
            for pair in facts["co_occurrence"]
        ]
    return lines
