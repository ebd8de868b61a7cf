"""bundle.json as a typed record: `RunRecord`'s fields are the file's keys, in its order.

Adding a field adds a key, so the record and the file cannot disagree. Readers of bundles
(`summary`, `serve`, `--resume` checks) rely on these keys; change them only with
`format.BUNDLE_FORMAT`. It lives with the bundle's format, not with training, because it is what
a bundle holds; training only fills it in.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from typing import Any

from cnnclf import __version__
from cnnclf.bundle.format import BUNDLE_FORMAT


@dataclass(frozen=True)
class RunRecord:
    """bundle.json: the software, the data, how training went and where it ran.

    Build one with `RunRecord.now(...)`, which fills in the versions and the time.
    """

    format: int
    created: str
    cnnclf_version: str
    tensorflow_version: str
    keras_version: str
    python_version: str
    config_file: str | None
    class_names: list[str]
    train_images: dict[str, int]  # images the model saw, per class (unreadable files left out)
    validation_images: dict[str, int]
    validation_source: str  # "test_dir" | "validation_split"
    epochs: int
    best_epoch: int | None  # whose weights the bundle holds; None: the last epoch's
    stopped_early: bool
    resumed_after_epoch: int | None
    class_weight: dict[int, float] | None
    phases: list[dict] | None  # see `phases_record`; None for a single plain phase
    start: dict | None  # the starting weights (`transfer.prepare(...).to_json`)
    placement: dict
    final_metrics: dict
    # binary models: the rule, its value and the data it was chosen on; multi-label models:
    # the rule, `per_class` values and the data
    threshold: dict | None
    skipped_files: list[dict]
    train_seconds: float
    run_id: str
    # Filled in by the writer once the files exist; older bundles lack both keys (None here).
    params: int | None = None  # the model's parameter count: bounds model.keras's weights
    sha256: dict[str, str] | None = None  # format.DIGESTED_FILES -> hex digest
    # Label files the splits were read from (`data.label_files.LabelFile.source`): train_dir /
    # test_dir -> file, format, form, rows, sha256. None: class folders, or an older bundle.
    labels_from: dict[str, dict] | None = None
    # Multi-label runs: images per set ({"train": n, "validation": n}), since an image with two
    # labels counts in two classes of train_images. None: single-label (or an older bundle),
    # where the per-class counts add up to the images.
    image_counts: dict[str, int] | None = None
    # learning_rate: auto — each range test run (`training.lr_find.Curve.record`): phase,
    # suggested rate, rule, steps, ... None: every rate was given in the config.
    lr_find: list[dict] | None = None
    # train.calibrate: the temperature folded into the output layer (one per class for
    # multi-label), the validation NLL before and after, the images it was fitted on, and
    # `tta_temperature` / `tta_views` (what --tta rescales its average of views by); or why
    # it was skipped (`temperature` null). None: train.calibrate false, or an older bundle.
    calibration: dict | None = None

    @classmethod
    def now(cls, **facts: Any) -> RunRecord:
        """A record created now, by this cnnclf, TensorFlow, Keras and Python."""
        import keras
        import tensorflow as tf

        return cls(
            format=BUNDLE_FORMAT,
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            cnnclf_version=__version__,
            tensorflow_version=tf.__version__,
            keras_version=keras.__version__,
            python_version=platform.python_version(),
            **facts,
        )

    def stamped(self) -> RunRecord:
        """The record with `created` set to now: when the bundle is written, as the key says."""
        return dataclasses.replace(self, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def sealed(self, params: int, sha256: dict[str, str]) -> RunRecord:
        """The record as written: stamped now, with the model's size and the sidecars' digests."""
        return dataclasses.replace(self.stamped(), params=params, sha256=sha256)

    def to_json(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @property
    def fine_tune_from(self) -> int | None:
        """The first fine-tuning epoch, where the training curves mark the unfreezing."""
        fine_tune = [p for p in self.phases or [] if p["name"] == "fine_tune"]
        return fine_tune[0]["epochs"][0] if fine_tune and fine_tune[0]["epochs"] else None
