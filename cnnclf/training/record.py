"""What a training run reports: `RunRecord` (the bundle's bundle.json) and `TrainResult`.

`RunRecord`'s fields are bundle.json's keys, in the file's order: adding a field adds a key, so
the record and the file cannot disagree. Readers of bundles (`summary`, `serve`, `--resume`
checks) rely on these keys; change them only with `bundle.format.BUNDLE_FORMAT`.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from cnnclf import __version__
from cnnclf.bundle.format import BUNDLE_FORMAT


@dataclass(frozen=True)
class TrainResult:
    bundle_dir: Path | None
    history: dict
    skipped: dict
    seconds: float
    final_metrics: dict  # of the saved weights' epoch (the best one under keep_best)


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
    start: dict  # the starting weights (`transfer.prepare(...).to_json`)
    placement: dict
    final_metrics: dict
    threshold: dict | None  # binary models: the rule, its value and the data it was chosen on
    skipped_files: list[dict]
    train_seconds: float
    run_id: str

    @classmethod
    def now(cls, **facts) -> RunRecord:
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

    def to_json(self) -> dict:
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

    @property
    def fine_tune_from(self) -> int | None:
        """The first fine-tuning epoch, where the training curves mark the unfreezing."""
        fine_tune = [p for p in self.phases or [] if p["name"] == "fine_tune"]
        return fine_tune[0]["epochs"][0] if fine_tune and fine_tune[0]["epochs"] else None


def final_metrics(history: dict, best_epoch: int | None) -> dict:
    """The metrics of the epoch whose weights are saved: the best one when kept, else the last."""
    index = (best_epoch - 1) if best_epoch else -1
    return {k: v[index] for k, v in history.items() if k not in ("epoch", "epoch_seconds") and v}


def skipped_files(skipped: dict) -> list[dict]:
    return [{"path": p, "reason": r} for p, r in sorted(skipped.items())]


def phases_record(plan, starts: list, history: dict, saved) -> list[dict] | None:
    """bundle.json's `phases`: which epochs each phase ran, at what rate, training what
    (the layers that trained: `unfreeze: 500` on a 52-layer backbone trained 52).

    `saved` is the model the bundle holds, not the one `fit` trained: that can be a wrapper
    (augmentation in the step, XLA per replica) whose layers are not the model's.
    """
    from cnnclf.model.transfer import weighted_layers

    if len(plan) == 1 and not plan[0].frozen:
        return None
    counted = any(p.unfreeze not in (None, "all") for p in plan)
    candidates = weighted_layers(saved) if counted else []
    done = len(history.get("epoch", []))
    record = []
    for i, (phase, first) in enumerate(zip(plan, starts)):
        last = starts[i + 1] if i + 1 < len(starts) else min(first + phase.epochs, done)
        record.append(
            {
                "name": phase.name,
                "epochs": [first + 1, last] if last > first else [],
                "learning_rate": phase.learning_rate,
                "trains": _what_trains(phase, candidates),
            }
        )
    return record


def _what_trains(phase, candidates: list) -> str:
    from cnnclf.model.transfer import layers_to_unfreeze

    if phase.frozen:
        return "the head"
    if phase.name == "train":
        return "everything"
    if phase.unfreeze == "all":
        return f"head and {phase.unfreeze} feature layers"
    return f"head and the top {len(layers_to_unfreeze(candidates, phase))} feature layers"
