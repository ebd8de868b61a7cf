"""The last step before the bundle: the binary threshold chosen and the model evaluated on the
validation data, and how metrics.json and bundle.json report both.

The threshold is chosen here, at training, and kept in the bundle so that `predict`, `evaluate`
and `serve` all decide alike without being told it again.
"""

from __future__ import annotations

import logging

from cnnclf.config import Config
from cnnclf.data.layout import Dataset
from cnnclf.training.inputs import validation_folder

log = logging.getLogger("cnnclf")


def threshold_and_metrics(model, val_ds, config: Config, class_names: list[str], images: int = 0):
    """(threshold or None, metrics): the threshold per train.threshold for a binary model, and
    `classification_metrics` on `val_ds`.

    Args:
        images: how many images `val_ds` holds, for the progress shown while it runs.

    Raises:
        DataError: the validation data cannot satisfy train.threshold's rule.
    """
    import numpy as np

    from cnnclf.errors import DataError
    from cnnclf.inference.metrics import classification_metrics
    from cnnclf.inference.thresholds import choose_threshold
    from cnnclf.progress import Progress

    labels, scores = [], []
    with Progress(f"validating {images} images for metrics.json", images) as progress:
        for batch, batch_labels in val_ds:
            # A direct call, not predict_on_batch: under MirroredStrategy the latter runs the
            # whole batch on every replica and returns each replica's copy.
            scores.append(np.asarray(model(batch, training=False), dtype=np.float32))
            labels.append(np.asarray(batch_labels))
            progress.advance(len(labels[-1]))
    probs, y = np.concatenate(scores), np.concatenate(labels)
    rule = config.train.threshold
    if len(class_names) != 2:
        return None, classification_metrics(y.argmax(axis=1), probs, class_names, None)
    probs, y = probs[:, 0], y[:, 0].astype(int)
    try:
        threshold = choose_threshold(y, probs, rule)
    except ValueError as exc:
        raise DataError(f"train.threshold: {exc}") from None
    if isinstance(rule, str):
        log.info("threshold: %.4f chosen by %s on the validation data", threshold, rule)
    return threshold, classification_metrics(y, probs, class_names, threshold)


def metrics_json(config: Config, dataset: Dataset, metrics: dict) -> dict:
    """metrics.json: the metrics, with the data they were measured on."""
    binary = len(dataset.class_names) == 2
    note = (
        "the threshold was chosen on this same validation data, so sensitivity and "
        "specificity are optimistic; run cnnclf evaluate on other data for unbiased figures"
        if binary and isinstance(config.train.threshold, str)
        else None
    )
    return {
        "data": dataset.validation_source,
        "data_dir": validation_folder(config, dataset),
        **metrics,
        **({"note": note} if note else {}),
    }


def threshold_record(config: Config, dataset: Dataset, threshold: float | None) -> dict | None:
    """bundle.json's `threshold`: the rule, the value it gave and the data it was chosen on."""
    if len(dataset.class_names) != 2:
        return None
    return {
        "rule": config.train.threshold,
        "value": threshold,
        "chosen_on": validation_folder(config, dataset),
    }
