"""PNG figures for reports: training curves, confusion matrix, ROC and precision-recall curves.

Figures are built with `matplotlib.figure.Figure` and its Agg canvas directly, not pyplot: no
display is needed, no global backend is switched, and nothing leaks between calls.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(width=6.4, height=4.8):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def training_curves(history: dict, path: Path, fine_tune_from: int | None = None) -> Path:
    """Loss and accuracy by epoch, training against validation.

    `fine_tune_from` (the first fine-tuning epoch) draws a line where the backbone was
    unfrozen: a jump in the curves there is the phase change, not instability.
    """
    fig = _figure(10, 4)
    epochs = history.get("epoch") or list(range(1, len(history.get("loss", [])) + 1))
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for key, style in ((metric, "o-"), (f"val_{metric}", "s--")):
            if history.get(key):
                ax.plot(
                    epochs,
                    history[key],
                    style,
                    label="validation" if key.startswith("val_") else "training",
                )
        if fine_tune_from:
            ax.axvline(
                fine_tune_from - 0.5, color="grey", linestyle=":", label="fine-tuning starts"
            )
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path)
    return path


def confusion_matrix(matrix, class_names: list[str], path: Path) -> Path:
    """Counts with rows = true class, columns = predicted class."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    fig = _figure(max(4.5, 1.1 * n + 2.5), max(4.0, 1.0 * n + 2))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=ax)
    ax.set_xticks(
        range(n), class_names, rotation=45 if n > 3 else 0, ha="right" if n > 3 else "center"
    )
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    high = matrix.max() / 2 if matrix.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                color="white" if matrix[i, j] > high else "black",
            )
    fig.savefig(path)
    return path


def roc_curve(y_true, p1, threshold: float, path: Path, positive: str) -> Path:
    """ROC curve of the positive class, with the operating point of `threshold` marked."""
    from sklearn.metrics import auc
    from sklearn.metrics import roc_curve as sk_roc_curve

    fpr, tpr, _ = sk_roc_curve(y_true, p1)
    point = _operating_point(y_true, p1, threshold)
    return _curve(
        fpr,
        tpr,
        f"AUC = {auc(fpr, tpr):.3f}",
        (point["fpr"], point["tpr"]),
        threshold,
        path,
        title="ROC curve",
        legend="lower right",
        xlabel="false positive rate (1 - specificity)",
        ylabel=f"true positive rate (sensitivity, {positive})",
        diagonal=True,
    )


def pr_curve(y_true, p1, threshold: float, path: Path, positive: str) -> Path:
    """Precision against recall of the positive class, with the operating point marked."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(y_true, p1)
    point = _operating_point(y_true, p1, threshold)
    return _curve(
        recall,
        precision,
        f"AP = {average_precision_score(y_true, p1):.3f}",
        (point["tpr"], point["precision"]),
        threshold,
        path,
        title="precision-recall curve",
        legend="lower left",
        xlabel=f"recall ({positive})",
        ylabel="precision",
    )


def reliability_diagram(curve, path: Path) -> Path:
    """Accuracy against confidence per bin (`calibration_metrics.reliability`), with the
    diagonal a calibrated model follows and each bin's share of the images below it."""
    mean_conf, accuracy, counts = curve
    bins = len(counts)
    edges = np.linspace(0.0, 1.0, bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    used = counts > 0
    fig = _figure(6.4, 6.4)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", label="calibrated")
    top.bar(
        centres[used],
        accuracy[used],
        width=1.0 / bins,
        alpha=0.6,
        edgecolor="black",
        label="accuracy in the bin",
    )
    top.plot(mean_conf[used], accuracy[used], "o", color="black", label="mean confidence")
    top.set_ylabel("accuracy")
    top.set_ylim(0, 1)
    top.set_title("reliability diagram (top label)")
    top.legend(loc="upper left")
    bottom.bar(centres, counts / max(int(counts.sum()), 1), width=1.0 / bins, color="grey")
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel("share of images")
    bottom.set_xlim(0, 1)
    fig.savefig(path)
    return path


def _curve(
    xs,
    ys,
    label: str,
    point,
    threshold: float,
    path: Path,
    *,
    title: str,
    legend: str,
    xlabel: str,
    ylabel: str,
    diagonal: bool = False,
) -> Path:
    fig = _figure(5.5, 5)
    ax = fig.subplots()
    ax.plot(xs, ys, label=label)
    if diagonal:
        ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.plot([point[0]], [point[1]], "o", color="red", label=f"threshold {threshold:.3g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc=legend)
    fig.savefig(path)
    return path


def _operating_point(y_true, p1, threshold: float) -> dict:
    """Where `threshold` sits: true/false positive rates and precision of the positive class."""
    y_true, predicted = np.asarray(y_true) == 1, np.asarray(p1) >= threshold
    tp = (predicted & y_true).sum()
    return {
        "tpr": tp / max(y_true.sum(), 1),
        "fpr": (predicted & ~y_true).sum() / max((~y_true).sum(), 1),
        "precision": tp / max(predicted.sum(), 1),
    }
