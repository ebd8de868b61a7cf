"""The last step before the bundle: the binary threshold chosen and the model evaluated on the
validation data, and how metrics.json and bundle.json report both.

The threshold is chosen here, at training, and kept in the bundle so that `predict`, `evaluate`
and `serve` all decide alike without being told it again.
"""

from __future__ import annotations

import logging
import math

from cnnclf.config import Config
from cnnclf.data.layout import Dataset
from cnnclf.training.inputs import validation_folder

log = logging.getLogger("cnnclf")


def threshold_and_metrics(
    model,
    val_ds,
    config: Config,
    class_names: list[str],
    images: int = 0,
    multi_label=False,
    calibration: dict | None = None,
):
    """(threshold or None, metrics): the threshold per train.threshold for a binary model (a
    list of one per class for a multi-label model), and the metrics on `val_ds`.

    Runs after `calibrate`, on the model with T folded in: a threshold rule is chosen on the
    probabilities predict will give.

    Args:
        images: how many images `val_ds` holds, for the progress shown while it runs.
        multi_label: one sigmoid per class (`multi_label_report` instead of
            `classification_metrics`).
        calibration: `calibrate`'s record; its temperature adds ECE and Brier before and after
            to the metrics.

    Raises:
        DataError: the validation data cannot satisfy train.threshold's rule.
    """
    from cnnclf.errors import DataError
    from cnnclf.inference.metrics import classification_metrics
    from cnnclf.inference.thresholds import choose_threshold

    y, probs = validation_scores(model, val_ds, images, "validating {} images for metrics.json")
    rule = config.train.threshold
    if multi_label:
        threshold, report = _multi_label_thresholds(y, probs, rule, class_names)
        return threshold, {**report, **_calibration_metrics(probs, y, "multi_label", calibration)}
    if len(class_names) != 2:
        report = classification_metrics(y.argmax(axis=1), probs, class_names, None)
        extra = _calibration_metrics(probs, y.argmax(axis=1), "categorical", calibration)
        return None, {**report, **extra}
    probs, y = probs[:, 0], y[:, 0].astype(int)
    try:
        threshold = choose_threshold(y, probs, rule)
    except ValueError as exc:
        raise DataError(f"train.threshold: {exc}") from None
    if isinstance(rule, str):
        log.info("threshold: %.4f chosen by %s on the validation data", threshold, rule)
    report = classification_metrics(y, probs, class_names, threshold)
    return threshold, {**report, **_calibration_metrics(probs, y, "binary", calibration)}


def validation_scores(model, val_ds, images: int, what: str, tta=None):
    """(labels, outputs) of `model` on every batch of `val_ds`, as NumPy arrays; with `tta`
    (an `inference.tta.Plan`), each output is combined over the batch's views."""
    import numpy as np

    from cnnclf.progress import Progress

    def run(x):
        # A direct call, not predict_on_batch: under MirroredStrategy the latter runs the
        # whole batch on every replica and returns each replica's copy.
        return np.asarray(model(x, training=False), dtype=np.float32)

    labels, scores = [], []
    with Progress(what.format(images), images) as progress:
        for batch, batch_labels in val_ds:
            if tta is None:
                scores.append(run(batch))
            else:
                scores.append(tta.combine([run(v) for v in tta.views(np.asarray(batch))]))
            labels.append(np.asarray(batch_labels))
            progress.advance(len(labels[-1]))
    return np.concatenate(labels), np.concatenate(scores)


def calibrate(model, val_ds, config: Config, images: int, class_mode: str) -> dict | None:
    """Fits a temperature on the validation data and folds it into `model`'s output layer
    (model/calibration.py says why there); returns bundle.json's `calibration` record.

    None when train.calibrate is false. Under `MIN_CALIBRATION_IMAGES` validation images the
    model is kept as trained and the record says why, after one warning line: a finished
    training is worth more than a refusal, and the uncalibrated bundle works as before.
    """
    from cnnclf.model.calibration import MIN_CALIBRATION_IMAGES, fit_temperature, fold_into_output

    if not config.train.calibrate:
        return None
    if images < MIN_CALIBRATION_IMAGES:
        reason = (
            f"only {images} validation image{'s' if images != 1 else ''}; calibration needs "
            f"at least {MIN_CALIBRATION_IMAGES}"
        )
        log.warning(
            "warning: train.calibrate: %s (raise data.validation_split or add a test set, or "
            "set train.calibrate: false); the probabilities are left uncalibrated",
            reason,
        )
        return {"method": None, "temperature": None, "skipped": reason}
    what = "calibrating on {} validation images"
    labels, outputs = validation_scores(model, val_ds, images, what)
    y, probs = _fit_inputs(labels, outputs, class_mode)
    fit = fit_temperature(probs, y, class_mode)
    fold_into_output(model, fit.temperature)
    shown = fit.temperature if isinstance(fit.temperature, float) else max(fit.temperature)
    log.info(
        "calibration: temperature %s%s fitted on the validation data (NLL %.4f -> %.4f)",
        f"{shown:.3f}",
        "" if isinstance(fit.temperature, float) else " (largest of the per-class ones)",
        fit.nll_before,
        fit.nll_after,
    )
    return {**fit.to_json(len(y)), **_tta_temperature(model, val_ds, config, images, class_mode)}


TTA_FIT_IMAGES = 2000


def tta_fit_stride(images: int) -> int:
    """The TTA fit uses every k-th validation batch, about `TTA_FIT_IMAGES` images in all: one
    scalar needs no more, and N views of a large validation set at a large image size would
    cost minutes (NumPy views, N passes)."""
    return max(1, math.ceil(images / TTA_FIT_IMAGES))


def _tta_temperature(model, val_ds, config: Config, images: int, class_mode: str) -> dict:
    """The temperature `predict --tta` applies to its average of views (inference/tta.py says
    why), fitted on the same validation images through the now calibrated model."""
    from cnnclf.inference.tta import Plan
    from cnnclf.model.calibration import fit_temperature

    tta = Plan(config.augment.horizontal_flip, config.augment.vertical_flip)
    stride = tta_fit_stride(images)
    about = "" if stride == 1 else "about "  # a shard keeps whole batches: the count is near
    what = f"calibrating --tta ({tta.count} views) on {about}{{}} validation images"
    labels, outputs = validation_scores(
        model, val_ds.shard(stride, 0), -(-images // stride), what, tta
    )
    y, probs = _fit_inputs(labels, outputs, class_mode)
    fit = fit_temperature(probs, y, class_mode)
    t = fit.temperature
    log.info(
        "calibration: --tta temperature %.3f%s fitted on %d images",
        t if isinstance(t, float) else max(t),
        "" if isinstance(t, float) else " (largest of the per-class ones)",
        len(y),
    )
    return {"tta_temperature": fit.temperature, "tta_views": tta.count, "tta_images": len(y)}


def _fit_inputs(y, probs, class_mode: str):
    """Validation labels and outputs as `fit_temperature` takes them: class indices for
    softmax, P(class 1) and 0/1 for one sigmoid, multi-hot rows as they are."""
    if class_mode == "categorical":
        return y.argmax(axis=1), probs
    if class_mode == "binary":
        return y[:, 0], probs[:, 0]
    return y, probs


def _calibration_metrics(probs, labels, class_mode: str, calibration: dict | None) -> dict:
    """metrics.json's `calibration`: ECE and Brier, before and after when T was fitted."""
    from cnnclf.inference.calibration_metrics import calibration_report

    temperature = (calibration or {}).get("temperature")
    if calibration is None or temperature is None:
        return {}
    return {"calibration": calibration_report(probs, labels, class_mode, temperature)}


def _multi_label_thresholds(y, probs, rule, class_names: list[str]):
    """(per-class thresholds, report): train.threshold's rule applied to each class alone.

    A class whose validation images are all positive or all negative gives a rule nothing to
    choose from; it keeps 0.5, said in the log, rather than stopping a finished training.
    """
    from cnnclf.inference.metrics import multi_label_report
    from cnnclf.inference.thresholds import choose_threshold

    thresholds, kept = [], []
    for c, name in enumerate(class_names):
        try:
            thresholds.append(choose_threshold(y[:, c].astype(int), probs[:, c], rule))
        except ValueError:
            thresholds.append(0.5)
            kept.append(name)
    if isinstance(rule, str):
        log.info(
            "thresholds chosen by %s on the validation data: %s",
            rule,
            ", ".join(f"{n} {t:.3f}" for n, t in zip(class_names, thresholds)),
        )
    if kept and isinstance(rule, str):
        log.warning(
            "warning: train.threshold: %s has no positive or no negative validation image; "
            "its threshold stays 0.5",
            ", ".join(kept),
        )
    return thresholds, multi_label_report(y, probs, class_names, thresholds)


def check_monitors(config: Config, multi_label: bool) -> None:
    """val_auc is logged for multi-label models only: a single-label run monitoring it would
    never improve, so it is refused before any training."""
    from cnnclf.errors import ConfigError

    train = config.train
    stopping = train.early_stopping
    for key, monitor in (
        ("train.keep_best", train.keep_best),
        ("train.early_stopping.monitor", stopping.monitor if stopping else None),
    ):
        if monitor in ("auc", "val_auc") and not multi_label:
            raise ConfigError(
                f"{key}: {monitor} is logged for multi-label models only; use val_loss or "
                "val_accuracy"
            )


def positive_weights(config: Config, dataset: Dataset) -> list[float] | None:
    """A multi-label model's train.class_weight, as one weight per class on its positive term.

    balanced: negatives / positives of each class in the training data (PyTorch's `pos_weight`
    advice), so a rare label's misses cost as much in all as the common "no" answers; a
    mapping: its weights as given (1.0 for classes it leaves out); none: None.
    """
    choice = config.train.class_weight
    names = dataset.class_names
    if choice == "none":
        return None
    if choice == "balanced":
        counts, total = dataset.train.counts(names), len(dataset.train)
        return [(total - counts[n]) / max(counts[n], 1) for n in names]
    assert isinstance(choice, dict)  # run.class_weights checked its class names
    return [float(choice.get(name, 1.0)) for name in names]


def metrics_json(config: Config, dataset: Dataset, metrics: dict) -> dict:
    """metrics.json: the metrics, with the data they were measured on."""
    binary = len(dataset.class_names) == 2 and not getattr(dataset, "multi_label", False)
    tuned = getattr(dataset, "multi_label", False) and isinstance(config.train.threshold, str)
    note = (
        "the threshold was chosen on this same validation data, so sensitivity and "
        "specificity are optimistic; run cnnclf evaluate on other data for unbiased figures"
        if binary and isinstance(config.train.threshold, str)
        else "the per-class thresholds were chosen on this same validation data, so F1 is "
        "optimistic; run cnnclf evaluate on other data for unbiased figures"
        if tuned
        else None
    )
    return {
        "data": dataset.validation_source,
        "data_dir": validation_folder(config, dataset),
        **metrics,
        **({"note": note} if note else {}),
    }


def threshold_record(config: Config, dataset: Dataset, threshold) -> dict | None:
    """bundle.json's `threshold`: the rule, the value it gave (per class, by name, for a
    multi-label model) and the data it was chosen on."""
    if getattr(dataset, "multi_label", False):
        return {
            "rule": config.train.threshold,
            "per_class": dict(zip(dataset.class_names, threshold)),
            "chosen_on": validation_folder(config, dataset),
        }
    if len(dataset.class_names) != 2:
        return None
    return {
        "rule": config.train.threshold,
        "value": threshold,
        "chosen_on": validation_folder(config, dataset),
    }
