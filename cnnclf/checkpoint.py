"""Per-epoch checkpoints in a run's staging folder, so a killed run can resume.

After every epoch the model (with its optimizer state) is saved as `checkpoint-<epoch>.keras`,
and only then is `progress.json` atomically replaced to point at it. Whatever instant a run is
killed (Ctrl-C, kill -9, power loss), `progress.json` names a complete checkpoint and the epoch
it ends, so `cnnclf train ... --resume` continues from the last completed epoch.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import keras

PROGRESS_FILE = "progress.json"


def read_progress(staging: Path) -> dict | None:
    path = Path(staging) / PROGRESS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves model, history and the controls' state at the end of every epoch.

    Args:
        staging: the run's staging folder.
        config: the resolved config as a dict (a resume must use the same one).
        controls: the `TrainingControls` whose state is saved alongside.
        history: per-epoch metrics of epochs completed before this fit (when resuming).
    """

    def __init__(self, staging: Path, config: dict, controls, history: dict | None = None):
        super().__init__()
        self.staging = Path(staging)
        self.config = config
        self.controls = controls
        self.history = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - getattr(self, "_started", time.perf_counter())
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.history.setdefault("epoch", []).append(epoch + 1)
        # Wall time of the epoch (training and validation): what speed benchmarks read.
        self.history.setdefault("epoch_seconds", []).append(round(seconds, 4))
        name = f"checkpoint-{epoch + 1}.keras"
        self.model.save(self.staging / name)
        progress = {"completed_epochs": epoch + 1, "checkpoint": name,
                    "history": self.history, "controls": self.controls.state,
                    "config": self.config}
        temporary = self.staging / f".{PROGRESS_FILE}.tmp"
        temporary.write_text(json.dumps(progress), encoding="utf-8")
        os.replace(temporary, self.staging / PROGRESS_FILE)
        for old in self.staging.glob("checkpoint-*.keras"):
            if old.name != name:
                old.unlink(missing_ok=True)


def remove_checkpoints(staging: Path) -> None:
    """Deletes resume state from a staging folder before it is published as a bundle."""
    staging = Path(staging)
    for path in list(staging.glob("checkpoint-*.keras")) + [staging / PROGRESS_FILE,
                                                           staging / "best.weights.h5"]:
        path.unlink(missing_ok=True)
