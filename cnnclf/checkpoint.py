"""Per-epoch checkpoints in a run's staging folder, so a killed run can resume.

After every epoch the weights and the optimizer's state are copied to NumPy (milliseconds) and
written as `checkpoint-<epoch>.npz` by a background thread while the next epoch trains: a
synchronous `model.save` of the tutorial model (47 MB with Adam's moments) costs 0.1-0.2 s,
several percent of an epoch. Only once the file is complete is `progress.json` atomically
replaced to point at it, so whatever instant a run is killed (Ctrl-C, kill -9, power loss),
`progress.json` names a complete checkpoint and the epoch it ends. `cnnclf train ... --resume`
rebuilds the model from the config and restores both from there.
"""

from __future__ import annotations

import copy
import json
import os
import threading
import time
from pathlib import Path

import keras
import numpy as np

PROGRESS_FILE = "progress.json"


def read_progress(staging: Path) -> dict | None:
    path = Path(staging) / PROGRESS_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def restore(model, staging: Path, progress: dict) -> None:
    """Loads a checkpoint's weights and optimizer state into a freshly compiled `model`."""
    with np.load(Path(staging) / progress["checkpoint"]) as data:
        n_weights = int(data["n_weights"])
        weights = [data[f"w{i}"] for i in range(n_weights)]
        slots = [data[f"o{i}"] for i in range(int(data["n_optimizer"]))]
    model.set_weights(weights)
    model.optimizer.build(model.trainable_variables)
    for variable, value in zip(model.optimizer.variables, slots):
        variable.assign(value)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves weights, optimizer state, history and the controls' state after every epoch.

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
        self._writer: threading.Thread | None = None
        self._mark: float | None = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._mark is None:
            self._mark = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        now = time.perf_counter()
        # Wall time since the previous epoch ended: training, validation and checkpointing,
        # everything a user waits for. This is what speed benchmarks read.
        seconds, self._mark = now - self._mark, now
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.history.setdefault("epoch", []).append(epoch + 1)
        self.history.setdefault("epoch_seconds", []).append(round(seconds, 4))
        weights = [np.array(w) for w in self.model.get_weights()]
        slots = [np.array(v) for v in self.model.optimizer.variables]
        progress = {"completed_epochs": epoch + 1, "checkpoint": f"checkpoint-{epoch + 1}.npz",
                    "history": copy.deepcopy(self.history),
                    "controls": copy.deepcopy(self.controls.state), "config": self.config}
        self.wait()
        self._writer = threading.Thread(target=self._write, args=(weights, slots, progress))
        self._writer.start()

    def on_train_end(self, logs=None):
        self.wait()

    def wait(self) -> None:
        """Blocks until the last checkpoint is on disk (before publishing or exiting)."""
        if self._writer is not None:
            self._writer.join()
            self._writer = None

    def _write(self, weights, slots, progress) -> None:
        name = progress["checkpoint"]
        temporary = self.staging / f".{name}.tmp"
        with open(temporary, "wb") as f:
            np.savez(f, n_weights=len(weights), n_optimizer=len(slots),
                     **{f"w{i}": w for i, w in enumerate(weights)},
                     **{f"o{i}": s for i, s in enumerate(slots)})
        os.replace(temporary, self.staging / name)
        progress_tmp = self.staging / f".{PROGRESS_FILE}.tmp"
        progress_tmp.write_text(json.dumps(progress), encoding="utf-8")
        os.replace(progress_tmp, self.staging / PROGRESS_FILE)
        for old in self.staging.glob("checkpoint-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)


def remove_checkpoints(staging: Path) -> None:
    """Deletes resume state from a staging folder before it is published as a bundle."""
    staging = Path(staging)
    for path in (list(staging.glob("checkpoint-*.npz")) + list(staging.glob(".checkpoint-*"))
                 + [staging / PROGRESS_FILE, staging / "best.weights.h5"]):
        path.unlink(missing_ok=True)
