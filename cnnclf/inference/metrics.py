"""Classification metrics from labels and predicted probabilities, via scikit-learn.

One function computes the whole report that `evaluate`, training's `metrics.json` and the tests
share, so a number means the same thing wherever it is shown. Binary models output P(class 1):
class index 1 (the second class folder, sorted) is the *positive* class for sensitivity,
specificity and the ROC/PR curves.
"""

from __future__ import annotations

import numpy as np


def predicted_labels(probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Class indices: p >= threshold for binary models (probs of shape [N]), argmax otherwise."""
    if probs.ndim == 1:
        return (probs >= (0.5 if threshold is None else threshold)).astype(int)
    return probs.argmax(axis=1)


def classification_metrics(
    y_true,
    probs,
    class_names: list[str],
    threshold: float | None = None,
    reported: list[str] | None = None,
) -> dict:
    """The full report for one set of predictions.

    Args:
        y_true: true class indices, shape [N].
        probs: binary models: P(class 1), shape [N]; otherwise class probabilities [N, K].
        class_names: names in index order.
        threshold: binary decision threshold (default 0.5); ignored for 3+ classes.
        reported: the classes per_class and the averages cover (default: all); evaluating on
            data that holds only some of the model's classes reports on those, while the
            confusion matrix keeps every class (a prediction can still name an absent one).

    Returns:
        A JSON-ready dict: n_images, accuracy, per_class, macro_avg, weighted_avg,
        confusion_matrix (rows true, columns predicted), roc_auc, and for binary models
        threshold, positive_class, sensitivity and specificity.
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=float)
    binary = probs.ndim == 1
    if binary:
        threshold = 0.5 if threshold is None else float(threshold)
    labels = list(range(len(class_names)))
    covered = labels if reported is None else [class_names.index(n) for n in reported]
    y_pred = predicted_labels(probs, threshold)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=covered, zero_division=0
    )
    report = {
        "n_images": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "per_class": {
            class_names[c]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, c in enumerate(covered)
        },
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=covered, average=average, zero_division=0
        )
        report[f"{average}_avg"] = {
            "precision": float(p),
            "recall": float(r),
            "f1": float(f),
            "support": len(y_true),
        }
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    report["confusion_matrix"] = {"labels": list(class_names), "matrix": matrix.tolist()}
    report["roc_auc"] = _roc_auc(y_true, probs, labels)
    if binary:
        tn, fp, fn, tp = matrix.ravel()
        report["threshold"] = threshold
        report["positive_class"] = class_names[1]
        report["sensitivity"] = float(tp / (tp + fn)) if tp + fn else None
        report["specificity"] = float(tn / (tn + fp)) if tn + fp else None
    return report


def _roc_auc(y_true: np.ndarray, probs: np.ndarray, labels: list[int]) -> float | None:
    """ROC AUC (one-vs-rest, macro, for 3+ classes), or None where it is undefined."""
    from sklearn.metrics import roc_auc_score

    present = set(y_true.tolist())
    if len(present) < 2:
        return None  # undefined with a single class present
    if probs.ndim == 1:
        return float(roc_auc_score(y_true, probs))
    if present == set(labels):
        return float(
            roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=labels)
        )
    return None  # one-vs-rest AUC needs every class present


# Under either count the validation accuracy says little: one image moves it by 100/n points
# (over 3 with 30), and a class with under 5 images is barely measured at all.
MIN_VALIDATION_IMAGES = 30
MIN_VALIDATION_PER_CLASS = 5


def small_validation_warning(counts: dict[str, int], source: str | None) -> str | None:
    """The warning for a validation set too small for its accuracy to mean much, or None.

    The rule: fewer than `MIN_VALIDATION_IMAGES` images in all, or fewer than
    `MIN_VALIDATION_PER_CLASS` in some class.

    Args:
        counts: class -> validation images (bundle.json's `validation_images`).
        source: "validation_split" or "test_dir" (bundle.json's `validation_source`).

    Example: {"a": 2, "b": 2} gives "warning: only 4 validation images (2 per class): its
    accuracy moves by ±25 points with one image; ..."
    """
    total = sum(counts.values())
    if not total or (
        total >= MIN_VALIDATION_IMAGES and min(counts.values()) >= MIN_VALIDATION_PER_CLASS
    ):
        return None
    fewest = min(counts, key=lambda name: counts[name])
    per_class = (
        f"{counts[fewest]} per class"
        if len(set(counts.values())) == 1
        else f"{counts[fewest]} in class {fewest}"
    )
    advice = (
        "hold out more (data.validation_split) or add a test set (data.test_dir)"
        if source == "validation_split"
        # Not "data.test_dir": the warning that test_dir holds the training images is the one
        # line that names it.
        else "add images to the test set (test_dir)"
    )
    return (
        f"warning: only {total} validation image{'s' if total != 1 else ''} ({per_class}): "
        f"its accuracy moves by ±{round(100 / total, 1):g} points with one image; {advice}"
    )


def multi_label_report(y_true, probs, class_names: list[str], thresholds=None) -> dict:
    """The report for a multi-label model's predictions (one sigmoid per class).

    Args:
        y_true: multi-hot truth, shape [N, K].
        probs: predicted probabilities, shape [N, K].
        class_names: names in index order.
        thresholds: one decision threshold per class (default 0.5 each).

    Returns:
        A JSON-ready dict: n_images, multi_label, thresholds, per_class (precision, recall,
        f1, average_precision, roc_auc, support and a confusion summary tp/fp/fn/tn),
        macro_avg and micro_avg (precision, recall, f1), mean_average_precision (macro AP over
        the classes with a positive image), micro_average_precision, roc_auc (macro over the
        classes where it is defined), subset_accuracy (every label right), hamming_loss,
        label_cardinality (true and predicted labels per image), and `accuracy`, the
        per-label accuracy (1 - hamming_loss) that training logs under that name. AP and AUC
        are None for a class they are undefined for (no positive, or no negative, image).
    """
    from sklearn.metrics import (
        average_precision_score,
        hamming_loss,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=float)
    cuts = np.asarray([0.5] * y.shape[1] if thresholds is None else thresholds, dtype=float)
    pred = (p >= cuts).astype(int)
    precision, recall, f1, support = precision_recall_fscore_support(
        y, pred, average=None, zero_division=0
    )
    per_class, aps, aucs = {}, [], []
    for c, name in enumerate(class_names):
        positives, negatives = int(y[:, c].sum()), int(len(y) - y[:, c].sum())
        ap = float(average_precision_score(y[:, c], p[:, c])) if positives else None
        auc = float(roc_auc_score(y[:, c], p[:, c])) if positives and negatives else None
        aps += [ap] if ap is not None else []
        aucs += [auc] if auc is not None else []
        tp = int(((pred[:, c] == 1) & (y[:, c] == 1)).sum())
        fp = int(((pred[:, c] == 1) & (y[:, c] == 0)).sum())
        per_class[name] = {
            "precision": float(precision[c]),
            "recall": float(recall[c]),
            "f1": float(f1[c]),
            "average_precision": ap,
            "roc_auc": auc,
            "support": int(support[c]),
            "threshold": float(cuts[c]),
            "confusion": {"tp": tp, "fp": fp, "fn": positives - tp, "tn": negatives - fp},
        }
    report: dict = {"n_images": len(y), "multi_label": True, "per_class": per_class}
    for average in ("macro", "micro"):
        pr, rc, f, _ = precision_recall_fscore_support(y, pred, average=average, zero_division=0)
        report[f"{average}_avg"] = {
            "precision": float(pr),
            "recall": float(rc),
            "f1": float(f),
            "support": int(y.sum()),
        }
    hamming = float(hamming_loss(y, pred)) if len(y) else 0.0
    report |= {
        "mean_average_precision": float(np.mean(aps)) if aps else None,
        "micro_average_precision": (
            float(average_precision_score(y, p, average="micro")) if y.sum() else None
        ),
        "roc_auc": float(np.mean(aucs)) if aucs else None,
        "subset_accuracy": float((pred == y).all(axis=1).mean()) if len(y) else 0.0,
        "hamming_loss": hamming,
        "accuracy": 1.0 - hamming,
        "label_cardinality": {
            "true": float(y.sum(axis=1).mean()) if len(y) else 0.0,
            "predicted": float(pred.sum(axis=1).mean()) if len(y) else 0.0,
        },
        "thresholds": {name: float(t) for name, t in zip(class_names, cuts)},
    }
    return report
