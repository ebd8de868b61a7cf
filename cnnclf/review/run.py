"""The review: K fold models, their out-of-fold probabilities and embeddings, the issues found.

The review folder (default runs/review-<config>-<stamp>; `--out DIR` to choose, and to resume):

    review.json                 what was reviewed: data, classes, folds (written first)
    folds/fold-K-train.csv      the rows fold K trains on (a label file; one-hot when
                                multi-label) ...
    folds/fold-K-heldout.csv    ... and the rows it predicts (its validation set)
    folds/fold-K/               fold K's bundle: an ordinary `cnnclf train` run
    folds-repeat-R/...          with --repeats: the same for the R-th draw of the folds
    oof_probabilities.npy/.csv  per image: out-of-fold probabilities (test images: fold mean)
    issues.csv, issues.json     the findings, label issues first in rank order
    index.html                  the offline gallery that downloads decisions.csv

Each fold is trained by `training.run.train`, so a kill leaves it resumable: running the same
review with the same --out reuses every published fold bundle and resumes an interrupted fold
from its last completed epoch. Folds train one after another, each on the devices `train`
itself would use (train.distribute applies per fold).

Why fold models validate on their held-out fold with keep_best, early stopping and
train.calibrate off: the held-out labels are the ones under suspicion, so they must not choose
the weights, nor a temperature that rescales the very probabilities they are judged by (one
fitted per fold also puts each fold's out-of-fold rows on its own scale before they are ranked
together).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import logging
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnclf.config import Config
from cnnclf.errors import BundleError, ConfigError
from cnnclf.review import neighbours, pixels
from cnnclf.review.findings import Scored, check_issues, find_issues
from cnnclf.review.folds import (
    check_column_names,
    check_fold_classes,
    check_fold_counts,
    multi_label_folds,
    stratified_folds,
    write_fold_files,
    write_multi_label_fold_files,
)
from cnnclf.review.issues import Issue, write_issues
from cnnclf.training.filesystem import write_atomically, write_json_atomically

log = logging.getLogger("cnnclf")

PLAN_FILE = "review.json"
RUNS_DIR = Path("runs")


@dataclass(frozen=True)
class ReviewData:
    """The images under review: the training rows (folded) and the test rows (if any).

    Multi-label data also has `label_sets` and `test_label_sets` (each image's class indices);
    its `labels` are then the Split's placeholders."""

    class_names: list[str]
    paths: list[str]
    labels: list[int]
    test_paths: list[str]
    test_labels: list[int]
    label_sets: list[tuple[int, ...]] | None = None
    test_label_sets: list[tuple[int, ...]] | None = None

    @property
    def multi_label(self) -> bool:
        return self.label_sets is not None

    def counts(self) -> dict[str, int]:
        """Training images per class (an image with two labels counts for both)."""
        counts = {name: 0 for name in self.class_names}
        for labels in self.label_sets if self.label_sets is not None else self.labels:
            for label in labels if isinstance(labels, tuple) else (labels,):
                counts[self.class_names[label]] += 1
        return counts

    def given(self) -> np.ndarray:
        """Training then test rows' given labels: class indices, or (multi-label) 0/1 rows."""
        if self.label_sets is None:
            return np.array(self.labels + self.test_labels, int)
        sets = self.label_sets + (self.test_label_sets or [])
        matrix = np.zeros((len(sets), len(self.class_names)), int)
        for row, labels in enumerate(sets):
            matrix[row, list(labels)] = 1
        return matrix


@dataclass(frozen=True)
class ReviewResult:
    folder: Path
    issues: list[Issue]
    class_names: list[str]
    images: int
    seconds: float


def read_data(config: Config) -> ReviewData:
    """Every image of data.train_dir (none held out: the folds hold out) and of data.test_dir."""
    from cnnclf.data.layout import discover

    data = config.data
    # test_dir = train_dir when there is none: discover then lists train_dir whole, instead of
    # carving data.validation_split out of it.
    probe = dataclasses.replace(data, test_dir=data.test_dir or data.train_dir)
    dataset = discover(probe, config.train.seed)
    test = dataset.validation if data.test_dir else None
    sets = dataset.train.label_sets
    return ReviewData(
        dataset.class_names,
        list(dataset.train.paths),
        list(dataset.train.labels),
        list(test.paths) if test else [],
        list(test.labels) if test else [],
        None if sets is None else list(sets),
        None if sets is None else list(test.label_sets or []) if test else [],
    )


def review(
    config: Config,
    *,
    folds: int = 5,
    out_dir: str | Path | None = None,
    config_path: str | Path | None = None,
    verbose: bool = False,
    duplicate_threshold: float = neighbours.DUPLICATE_SIMILARITY,
    repeats: int = 1,
) -> ReviewResult:
    """Trains `folds` fold models, ranks what looks wrong, and writes the review folder.

    Args:
        config: a validated `Config`; each fold trains with it as `cnnclf train` would.
        folds: K, the number of stratified folds (each image is predicted by the one model
            that did not train on it).
        out_dir: the review folder; an existing review of the same data there is resumed.
        config_path: names the default folder.
        verbose: let TensorFlow's own logging through.
        duplicate_threshold: the embedding similarity at which two images are candidate
            near duplicates (pixels.py then confirms them).
        repeats: R, how many times the K folds are drawn (each time with the next seed,
            for the split and the models' start); each image's out-of-fold probabilities are
            the mean of its R held-out predictions. R times the training for a better ranking
            (docs/benchmarks/2026-12-04-review.md): one model's probabilities are noisy.

    Raises:
        RunStopped: a fold's training stopped; the same command resumes it.
    """
    from cnnclf.training.run import resolve_paths

    started = time.monotonic()
    config = resolve_paths(config)
    data = read_data(config)
    check_fold_counts(data.counts(), folds)
    label_file = config.data.train_dir
    draws = [_folds(data, folds, config.train.seed + r, label_file) for r in range(repeats)]
    folder = _folder(out_dir, config_path)
    _write_plan(folder, config, data, folds, repeats)
    trained = []
    for r, fold_of in enumerate(draws):
        folds_dir = folder / ("folds" if r == 0 else f"folds-repeat-{r + 1}")
        seeded = _seeded(config, config.train.seed + r)
        bundles = []
        for k in range(folds):
            train_file, heldout = _write_fold_files(folds_dir, k, data, fold_of)
            bundle = folds_dir / f"fold-{k + 1}"
            log.info("fold %d of %d%s: %s", k + 1, folds, _of_repeat(r, repeats), bundle)
            fold_config = _fold_config(seeded, train_file, heldout, data.multi_label)
            _train_fold(fold_config, bundle, verbose)
            bundles.append(bundle)
        trained.append((bundles, np.array(fold_of)))
    scored, failed = _score_repeats(trained, data, verbose)
    issues = _once(find_issues(scored, duplicate_threshold) + failed + _check_data_issues(config))
    _write_outputs(folder, scored, issues)
    return ReviewResult(
        folder, issues, data.class_names, len(scored.paths), time.monotonic() - started
    )


def _folds(data: ReviewData, folds: int, seed: int, label_file: str | None = None) -> list[int]:
    if data.label_sets is None:
        return stratified_folds(data.labels, folds, seed)
    check_column_names(data.class_names, label_file)  # before the review folder exists
    fold_of = multi_label_folds(data.label_sets, len(data.class_names), folds, seed)
    check_fold_classes(data.label_sets, fold_of, data.class_names)
    return fold_of


def _write_fold_files(folder: Path, k: int, data: ReviewData, fold_of: list[int]):
    if data.label_sets is None:
        names = [data.class_names[i] for i in data.labels]
        return write_fold_files(folder, k, data.paths, names, fold_of)
    return write_multi_label_fold_files(
        folder, k, data.paths, data.label_sets, data.class_names, fold_of
    )


def _folder(out_dir, config_path) -> Path:
    if out_dir is not None:
        folder = Path(out_dir)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--out {folder}: is a file; give a folder")
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(config_path).stem) if config_path else "data"
    base = RUNS_DIR / f"review-{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    RUNS_DIR.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 1
    while True:
        try:
            candidate.mkdir()
            log.info("review folder: %s", candidate)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}-{n}")


def _seeded(config: Config, seed: int) -> Config:
    return dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))


def _of_repeat(r: int, repeats: int) -> str:
    return f" (repeat {r + 1} of {repeats})" if repeats > 1 else ""


def _write_plan(folder: Path, config: Config, data: ReviewData, folds: int, repeats: int) -> None:
    """review.json: what this folder reviews. A folder that holds a review of other data, or
    with another number of folds, is refused rather than mixed with it; another --repeats is
    not (its draws extend or cut the ones there)."""
    plan = {
        "train_dir": config.data.train_dir,
        "test_dir": config.data.test_dir,
        "class_names": data.class_names,
        "folds": folds,
        "images": len(data.paths),
        "seed": config.train.seed,
    }
    if data.multi_label:  # only then: review.json files written before it stay comparable
        plan["multi_label"] = True
    if repeats > 1:  # likewise
        plan["repeats"] = repeats
    path = folder / PLAN_FILE
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = None
        if saved is None:
            raise ConfigError(
                f"--out {folder}: its {PLAN_FILE} cannot be read; choose another --out"
            )
        changed = sorted(k for k in {*plan, *saved} if saved.get(k) != plan.get(k))
        if changed and changed != ["repeats"]:
            raise ConfigError(
                f"--out {folder}: holds a review of other data or settings "
                f"({', '.join(changed)} differ); choose another --out"
            )
        if not changed:
            return
        # Only --repeats changed: draw r is the same split and seed whatever R is, so every
        # fold trained so far is reused and the outputs are computed again from R draws.
        log.info("%s: repeats %d (was %d)", path, repeats, saved.get("repeats", 1))
    write_json_atomically(path, plan)


def read_plan(folder: Path) -> dict:
    """A review folder's review.json (what `--apply` needs: the data and the classes)."""
    path = Path(folder) / PLAN_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{folder}: not a review folder (no {PLAN_FILE})") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot be read ({exc}); run the review again") from None


def _fold_config(config: Config, train_file: Path, heldout: Path, multi_label: bool) -> Config:
    # Multi-label, forced: a fold whose rows happen to carry one label each must not train a
    # softmax (data.multi_label auto would).
    data = dataclasses.replace(
        config.data,
        train_dir=str(train_file),
        test_dir=str(heldout),
        multi_label=True if multi_label else config.data.multi_label,
    )
    train = dataclasses.replace(config.train, keep_best=None, early_stopping=None, calibrate=False)
    return dataclasses.replace(config, data=data, train=train)


def _once(issues: list[Issue]) -> list[Issue]:
    """`issues` without repeats: an image no fold model could read is also check-data's
    `unreadable` (the first row, the models', is kept); other rows repeat only if identical."""
    seen: set[tuple[str, ...]] = set()
    kept = []
    for issue in issues:
        if issue.issue == "unreadable":
            key: tuple[str, ...] = (issue.path, issue.issue)
        else:
            key = (issue.path, issue.issue, issue.detail, issue.suggested)
        if key not in seen:
            seen.add(key)
            kept.append(issue)
    return kept


def _train_fold(config: Config, bundle: Path, verbose: bool) -> None:
    """Trains one fold into `bundle`; a published bundle is reused, an interrupted run resumed."""
    from cnnclf.bundle import is_bundle
    from cnnclf.training.run import train
    from cnnclf.training.rundir import completed_epochs, staging_dir

    if is_bundle(bundle):
        log.info("  reusing the fold's bundle")
        return
    resume = completed_epochs(staging_dir(bundle)) > 0
    if resume:
        log.info("  resuming the fold's interrupted training")
        config = _as_interrupted(config, bundle)
    # Keras prints its epoch lines on stdout; review's stdout is the issues (--format json/csv)
    with contextlib.redirect_stdout(sys.stderr):
        train(config, out_dir=bundle, resume=resume, verbose=verbose)


def _as_interrupted(config: Config, bundle: Path) -> Config:
    """A fold interrupted by a cnnclf whose fold models still fitted a temperature resumes as
    it started (train.calibrate on, else the resume is refused); `_score_bundle` takes the
    temperature back out of its weights, so every fold's rows are on the same, uncalibrated
    scale."""
    from cnnclf.training.rundir import read_progress, staging_dir

    saved = ((read_progress(staging_dir(bundle)) or {}).get("config") or {}).get("train") or {}
    if saved.get("calibrate", True) is True and not config.train.calibrate:
        return dataclasses.replace(config, train=dataclasses.replace(config.train, calibrate=True))
    return config


def _score_repeats(
    trained: list[tuple[list[Path], np.ndarray]], data: ReviewData, verbose: bool
) -> tuple[Scored, list[Issue]]:
    """Out-of-fold probabilities of the training rows (the mean over repeats), the fold
    models' mean for test rows, and every image's place in the joint embedding space of the
    first repeat's models (near duplicates and outliers do not change with R); images no
    model could read become `unreadable` issues and leave the ranking."""
    paths = data.paths + data.test_paths
    n_train, classes = len(data.paths), len(data.class_names)
    probabilities = np.zeros((len(paths), classes))
    features, bad = [], {}
    for r, (bundles, fold_of) in enumerate(trained):
        for k, bundle in enumerate(bundles):
            embedded, probs, failed = _score_bundle(bundle, paths, data.class_names, verbose)
            bad.update(failed)
            held_out = np.concatenate([fold_of == k, np.zeros(len(data.test_paths), bool)])
            probabilities[held_out] += probs[held_out] / len(trained)
            probabilities[n_train:] += probs[n_train:] / (len(bundles) * len(trained))
            if r == 0:
                features.append(embedded)
    keep = np.array([p not in bad for p in paths])
    labels = data.given()
    splits = ["train"] * n_train + ["test"] * len(data.test_paths)
    scored = Scored(
        data.class_names,
        [p for p, k in zip(paths, keep) if k],
        labels[keep],
        [s for s, k in zip(splits, keep) if k],
        probabilities[keep],
        [f[keep] for f in features],
        pixels.thumbnails([p for p, k in zip(paths, keep) if k]),
    )
    failed_issues = [Issue(p, "", "", 1.0, "unreadable", "", reason) for p, reason in bad.items()]
    return scored, failed_issues


def _score_bundle(bundle_dir: Path, paths: list[str], class_names: list[str], verbose: bool):
    """(embeddings, probabilities, {path: reason}) of every path by one fold model."""
    from cnnclf.bundle import load_bundle
    from cnnclf.inference.evaluate import recorded_temperature
    from cnnclf.inference.predict import score_paths
    from cnnclf.model.calibration import fold_into_output
    from cnnclf.tf_loader import import_tensorflow

    import_tensorflow(verbose)
    bundle = load_bundle(bundle_dir)
    if bundle.class_names != class_names:
        raise BundleError(
            f"{bundle_dir}: classes {bundle.class_names} differ from the data's {class_names}; "
            "remove the fold folder and run the review again"
        )
    temperature = recorded_temperature(bundle)
    if temperature is not None:  # a fold from before folds stopped calibrating (`_as_interrupted`):
        # undone in the weights, exactly, not by inverting clipped float32 probabilities
        fold_into_output(bundle.model, 1.0 / np.asarray(temperature, dtype=np.float64))
    model, width = _embedding_model(bundle.model)
    scorer = dataclasses.replace(bundle, model=model)
    rows, failed = [], {}
    for path, result in score_paths(scorer, paths):
        if isinstance(result, np.ndarray):
            rows.append(result)
        else:
            failed[path] = result.reason
            rows.append(np.full(width + bundle.model.output_shape[-1], np.nan))
    table = np.asarray(rows, float)
    embedded, outputs = table[:, :width], table[:, width:]
    if outputs.shape[1] == 1:  # one sigmoid unit: P(class index 1)
        outputs = np.concatenate([1.0 - outputs, outputs], axis=1)
    return np.nan_to_num(embedded), np.nan_to_num(outputs), failed


def _embedding_model(model):
    """A model whose output is [penultimate features, class outputs] side by side: one pass
    gives both (predict's batching and decoding work on any model with one output)."""
    import keras

    x = model.inputs[0]
    for layer in model.layers[:-1]:
        x = layer(x)
    features = keras.layers.Flatten(name="review_features")(x)
    outputs = model.layers[-1](x)
    joined = keras.layers.Concatenate(name="review_joined")(
        [keras.ops.cast(features, "float32"), keras.ops.cast(outputs, "float32")]
    )
    return keras.Model(model.inputs, joined), int(features.shape[-1])


def _check_data_issues(config: Config) -> list[Issue]:
    """check-data's findings on the same splits (exact duplicates, leakage, unreadable...)."""
    from cnnclf.data.check import check_data

    assert config.data.train_dir is not None  # read_data refused a config without one
    splits = {"train": Path(config.data.train_dir)}
    if config.data.test_dir:
        splits["test"] = Path(config.data.test_dir)
    report = check_data(splits, tuple(config.data.image_size))
    return check_issues([p.to_json() for p in report.problems])


def _write_outputs(folder: Path, scored: Scored, issues: list[Issue]) -> None:
    from cnnclf.review.gallery import write_gallery

    buffer = io.BytesIO()
    np.save(buffer, scored.probabilities.astype(np.float32))
    data = buffer.getvalue()
    write_atomically(folder / "oof_probabilities.npy", lambda f: f.write(data))
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", "split", *scored.class_names])
    for row, (path, split, probs) in enumerate(
        zip(scored.paths, scored.splits, scored.probabilities)
    ):
        writer.writerow([path, scored.given(row), split, *(f"{p:.6f}" for p in probs)])
    table = text.getvalue().encode("utf-8")
    write_atomically(folder / "oof_probabilities.csv", lambda f: f.write(table))
    write_issues(folder, issues)
    write_gallery(folder, scored, issues)
