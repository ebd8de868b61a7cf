"""Evaluating a bundle on a labelled class-folder tree: the report a reviewer can reproduce.

The report names the bundle, the data folder, the images per class and the threshold, so anyone
can recompute a number. Images are streamed through `predict.score_paths` (a few batches in
memory at a time); only labels and probabilities are kept.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cnnclf.bundle import Bundle
from cnnclf.data.label_files import is_label_file, read_label_file, unknown_classes
from cnnclf.data.layout import (
    Split,
    class_difference,
    class_folders,
    multi_label_split,
    scan_split,
)
from cnnclf.errors import DataError, ImageError


def data_to_evaluate(bundle: Bundle, data_dir: str | Path | None) -> tuple[str, str, Split]:
    """(description, folder, split) for DATA_DIR, or the bundle's own validation data.

    DATA_DIR may hold only some of the model's classes (a test set of the rare ones, say); a
    folder the model has no class for is refused. Labels are the model's class indices.
    DATA_DIR may also be a label file (.csv, .jsonl), read as data.test_dir is.
    """
    if data_dir is not None and is_label_file(data_dir):
        return _label_file_to_evaluate(bundle, data_dir)
    if bundle.preprocessing.multi_label:
        description, folder, split = _single_label_data(bundle, data_dir)
        if split.multi_label:
            return description, folder, split
        # Class folders (or a file of one label a row): each image carries its one class.
        return description, folder, multi_label_split(split.paths, [(i,) for i in split.labels])
    return _single_label_data(bundle, data_dir)


def _single_label_data(bundle: Bundle, data_dir: str | Path | None) -> tuple[str, str, Split]:
    """`data_to_evaluate` for a class-folder tree, or the bundle's own validation data."""
    if data_dir is not None:
        names = class_folders(data_dir, "DATA_DIR")
        unknown = sorted(set(names) - set(bundle.class_names))
        if unknown:
            detail = class_difference(bundle.class_names, names, "not in the model:")
            raise DataError(
                f"DATA_DIR {data_dir}: classes differ from the model's class_indices ({detail})"
            )
        present = [n for n in bundle.class_names if n in names]
        split = scan_split(data_dir, present, "DATA_DIR")
        index = [bundle.class_names.index(n) for n in present]
        return (
            "DATA_DIR",
            str(Path(data_dir).resolve()),
            Split(split.paths, [index[label] for label in split.labels]),
        )
    from cnnclf.bundle import CONFIG_FILE
    from cnnclf.config import load_config
    from cnnclf.data.layout import discover

    source = Path(bundle.manifest.get("source_bundle") or bundle.path)  # exports name theirs
    if not (source / CONFIG_FILE).is_file():
        raise DataError(
            f"{bundle.path}: give DATA_DIR (the bundle this was exported from, "
            f"{source}, is not there to say what it was validated on)"
        )
    config = load_config(source / CONFIG_FILE)
    dataset = discover(config.data, config.train.seed)
    # discover refuses a config without train_dir, and validates on test_dir when it is set.
    assert config.data.train_dir is not None
    if dataset.validation_source == "test_dir":
        assert config.data.test_dir is not None
        return "data.test_dir", config.data.test_dir, dataset.validation
    return "validation_split", config.data.train_dir, dataset.validation


def _label_file_to_evaluate(bundle: Bundle, data_file: str | Path) -> tuple[str, str, Split]:
    """A label file as evaluate's data: any of the model's classes, none it lacks, one label
    a row (single-label models only, in this version). A missing image stays in the split, so
    `collect_scores` lists it with the unreadable ones in the report's skipped_files."""
    labels = read_label_file(data_file, "DATA_DIR")
    of = f"the model ({', '.join(bundle.class_names)})"
    if bundle.preprocessing.multi_label:
        fatal = labels.fatal + unknown_classes(labels, bundle.class_names, of)
        if fatal:
            more = f" (and {len(fatal) - 1} more problem(s))" if len(fatal) > 1 else ""
            raise DataError(f"DATA_DIR: {fatal[0]}{more}; cnnclf check-data lists them all")
        if not labels.rows:
            raise DataError(f"DATA_DIR: {labels.file} lists no image")
        index = {name: i for i, name in enumerate(bundle.class_names)}
        rows = sorted((r.path, tuple(sorted(index[n] for n in r.labels))) for r in labels.rows)
        return (
            "DATA_DIR",
            str(Path(labels.file).resolve()),
            multi_label_split([p for p, _ in rows], [s for _, s in rows]),
        )
    fatal = labels.fatal + unknown_classes(labels, bundle.class_names, of)
    if fatal:
        more = f" (and {len(fatal) - 1} more problem(s))" if len(fatal) > 1 else ""
        raise DataError(f"DATA_DIR: {fatal[0]}{more}; cnnclf check-data lists them all")
    several = labels.multi_label_row()
    if several is not None:
        raise DataError(
            f"DATA_DIR: {labels.file}: {labels.describe(several)}: this model gives each "
            "image one class; give each image exactly one label"
        )
    if not labels.rows:
        raise DataError(f"DATA_DIR: {labels.file} lists no image")
    pairs = sorted((bundle.class_names.index(row.labels[0]), row.path) for row in labels.rows)
    return (
        "DATA_DIR",
        str(Path(labels.file).resolve()),
        Split([path for _, path in pairs], [label for label, _ in pairs]),
    )


def collect_scores(bundle: Bundle, split: Split, batch_size: int = 32, tta: bool = False):
    """(labels, probabilities, skipped) for a split; binary probabilities are P(class 1).

    A multi-label split's labels are multi-hot rows [N, classes]; `tta` combines each image's
    outputs over its views (`tta.Plan`)."""
    from cnnclf.inference.predict import score_paths

    truth: list = split.labels
    if split.label_sets is not None:
        truth = [
            [1 if c in labels else 0 for c in range(len(bundle.class_names))]
            for labels in split.label_sets
        ]
    labels, scores, skipped = [], [], {}
    for (path, result), label in zip(
        score_paths(bundle, split.paths, batch_size=batch_size, tta=tta), truth
    ):
        if isinstance(result, ImageError):
            skipped[path] = result.reason
            continue
        labels.append(label)
        scores.append(result)
    probs = np.asarray(scores, dtype=float)
    if bundle.preprocessing.class_mode == "binary":
        probs = probs.reshape(-1)
    return np.asarray(labels, dtype=int), probs, skipped


def evaluate(
    bundle: Bundle,
    data_dir: str | Path | None = None,
    *,
    threshold: float | None = None,
    batch_size: int = 32,
    plots_dir: str | Path | None = None,
    tta: bool = False,
) -> dict:
    """Evaluates `bundle` and returns the JSON-ready report.

    Args:
        bundle: from `bundle.load_bundle`.
        data_dir: a class-folder tree with the bundle's classes; None = the data the bundle
            was validated on (its test_dir, or its validation split of train_dir).
        threshold: overrides the bundle's binary threshold.
        plots_dir: when given, confusion_matrix.png (and for binary models roc_curve.png and
            pr_curve.png) are written there, and for single-label models
            reliability_diagram.png.
        tta: combine each image's outputs over its views (`tta.Plan`: 2-6 forward passes).
    """
    from cnnclf.inference.metrics import classification_metrics

    source, folder, split = data_to_evaluate(bundle, data_dir)
    labels, probs, skipped = collect_scores(bundle, split, batch_size, tta)
    if not len(labels):
        raise DataError(f"{folder}: no image could be decoded")
    if bundle.preprocessing.multi_label:
        report = _multi_label_report(bundle, (source, folder), labels, probs, skipped)
        report.update(calibration_fields(bundle, labels, probs, tta))
        if plots_dir is not None:
            report["plots"] = _multi_label_plots(bundle, labels, probs, Path(plots_dir))
        return report
    binary = bundle.preprocessing.class_mode == "binary"
    used = (
        (threshold if threshold is not None else bundle.preprocessing.threshold) if binary else None
    )
    present = sorted(set(split.labels))
    present_names = [bundle.class_names[i] for i in present]
    metrics = classification_metrics(
        labels, probs, bundle.class_names, used, reported=present_names
    )
    report = {
        "bundle": str(Path(bundle.path).resolve()),
        "data_dir": folder,
        "data_source": source,
        "images_per_class": {bundle.class_names[i]: int((labels == i).sum()) for i in present},
        "absent_classes": [n for n in bundle.class_names if n not in present_names],
        **metrics,
        **calibration_fields(bundle, labels, probs, tta),
        "skipped_files": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
    }
    if binary:
        chosen = bundle.manifest.get("threshold") or {}
        report["threshold_source"] = "--threshold" if threshold is not None else "bundle"
        report["threshold_rule"] = chosen.get("rule")
        tuned = isinstance(chosen.get("rule"), str)  # a rule like youden, not a fixed number
        if threshold is None and tuned and chosen.get("chosen_on") == folder:
            report["note"] = (
                "the threshold was chosen on this same data: sensitivity and "
                "specificity here are optimistic; evaluate on other data for an "
                "unbiased figure"
            )
    if plots_dir is not None:
        report["plots"] = write_plots(report, labels, probs, bundle.class_names, plots_dir)
        report["plots"].append(_reliability_plot(bundle, labels, probs, Path(plots_dir)))
    return report


def calibration_fields(bundle: Bundle, labels, probs, tta: bool) -> dict:
    """The report's `calibration` (ECE, Brier; before and after for a calibrated bundle) and,
    with TTA, `tta` (the views each image cost).

    The uncalibrated figures are recovered from the bundle's temperature; under TTA they are
    left out, since the average of calibrated views does not map back to one uncalibrated
    output.
    """
    from cnnclf.inference.calibration_metrics import calibration_report
    from cnnclf.inference.tta import plan

    temperature = recorded_temperature(bundle)
    report = calibration_report(
        probs, labels, bundle.preprocessing.class_mode, None if tta else temperature
    )
    report["calibrated"] = temperature is not None
    fields: dict = {"calibration": report}
    if tta:
        combined = plan(bundle)
        fields["tta"] = {"views": combined.count}
        if combined.temperature is not None:  # the average was rescaled by it (tta.py says why)
            report["tta_temperature"] = combined.temperature
    return fields


def recorded_temperature(bundle: Bundle) -> float | list[float] | None:
    """bundle.json's fitted temperature, or None (uncalibrated, skipped, an older bundle, or a
    value that is not one positive number, or one a class for multi-label)."""
    from cnnclf.model.calibration import recorded

    record = bundle.manifest.get("calibration")
    value = record.get("temperature") if isinstance(record, dict) else None
    return recorded(value, len(bundle.class_names) if bundle.preprocessing.multi_label else None)


def _reliability_plot(bundle: Bundle, labels, probs, plots_dir: Path) -> str:
    from cnnclf.inference import plots
    from cnnclf.inference.calibration_metrics import reliability

    plots_dir.mkdir(parents=True, exist_ok=True)
    curve = reliability(probs, labels, bundle.preprocessing.class_mode)
    return str(plots.reliability_diagram(curve, plots_dir / "reliability_diagram.png"))


def _multi_label_report(bundle: Bundle, where: tuple[str, str], labels, probs, skipped) -> dict:
    """evaluate's report for a multi-label bundle, with the thresholds it keeps per class."""
    from cnnclf.inference.metrics import multi_label_report

    source, folder = where
    metrics = multi_label_report(labels, probs, bundle.class_names, bundle.preprocessing.thresholds)
    chosen = bundle.manifest.get("threshold") or {}
    report = {
        "bundle": str(Path(bundle.path).resolve()),
        "data_dir": folder,
        "data_source": source,
        "images_per_class": {
            name: int(labels[:, c].sum()) for c, name in enumerate(bundle.class_names)
        },
        "absent_classes": [
            name for c, name in enumerate(bundle.class_names) if not labels[:, c].any()
        ],
        **metrics,
        "threshold_rule": chosen.get("rule"),
        "skipped_files": [{"path": p, "reason": r} for p, r in sorted(skipped.items())],
    }
    if isinstance(chosen.get("rule"), str) and chosen.get("chosen_on") == folder:
        report["note"] = (
            "the thresholds were chosen on this same data: F1 here is optimistic; evaluate "
            "on other data for an unbiased figure"
        )
    return report


def _multi_label_plots(bundle: Bundle, labels, probs, plots_dir: Path) -> list[str]:
    """pr_curve_<index>.png per class with a positive and a negative image, its threshold
    marked (files by index: class names from a label file may not make file names)."""
    from cnnclf.inference import plots

    plots_dir.mkdir(parents=True, exist_ok=True)
    thresholds = bundle.preprocessing.thresholds or (0.5,) * len(bundle.class_names)
    written = []
    for c, name in enumerate(bundle.class_names):
        if 0 < labels[:, c].sum() < len(labels):
            path = plots_dir / f"pr_curve_{c}.png"
            written.append(plots.pr_curve(labels[:, c], probs[:, c], thresholds[c], path, name))
    return [str(p) for p in written]


def write_plots(report: dict, labels, probs, class_names, plots_dir) -> list[str]:
    from cnnclf.inference import plots

    plots_dir = Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    written = [
        plots.confusion_matrix(
            report["confusion_matrix"]["matrix"], class_names, plots_dir / "confusion_matrix.png"
        )
    ]
    if probs.ndim == 1 and len(set(labels.tolist())) == 2:
        written.append(
            plots.roc_curve(
                labels, probs, report["threshold"], plots_dir / "roc_curve.png", class_names[1]
            )
        )
        written.append(
            plots.pr_curve(
                labels, probs, report["threshold"], plots_dir / "pr_curve.png", class_names[1]
            )
        )
    return [str(p) for p in written]
