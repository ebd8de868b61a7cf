"""The run directory: one owner for a training run's life on disk, from lock to published bundle.

For a destination `D` (the bundle folder the user asked for) a run uses three sibling paths:

    D/                  the published bundle: it appears complete, by one rename, or not at all
    .D.lock             an flock held while a `cnnclf train` process works on D (its pid inside)
    .D.partial/         the run's state ("staging"):
        run.json             run id, pid, start time: written when the run starts
        progress.json        names the last committed checkpoint; replaced by rename, last
        checkpoint-N.npz     weights and optimizer state after epoch N
        best-N.npz           the best epoch's weights so far (train.keep_best, early stopping)
        logs/                TensorBoard logs (moved into the bundle when it is written)
        bundle/              the bundle being written once training is over
        previous/            the old D, only while --overwrite publishes without an atomic swap

States, as seen by a process that holds the lock:

    NEW         no .D.partial                      train starts: mkdir .D.partial -> STARTED
    STARTED     .D.partial, no progress.json       nothing worth keeping (no epoch finished):
                                                   a re-run of the same command removes it
    RESUMABLE   progress.json names checkpoint-N   --resume continues after epoch N (all epochs
                                                   done: it only rewrites and publishes the
                                                   bundle); a plain re-run refuses, names --resume
    PUBLISHED   D holds a complete bundle          a leftover .D.partial whose run id D's
                                                   bundle.json carries is removed on next use

Transitions, each one rename or unlink so a kill leaves either the state before or the one after:

    commit_checkpoint   checkpoint-N.npz (and best-M.npz) written to a temporary name, fsynced,
                        renamed; then progress.json the same way; then older files unlinked.
                        progress.json always names files that are complete on disk.
    write_bundle        bundle/ rebuilt from scratch inside .D.partial (checkpoints untouched,
                        so a kill while writing leaves RESUMABLE).
    publish             bundle/ renamed to D; with --overwrite, atomically exchanged with the old
                        D (renameat2 RENAME_EXCHANGE), so D is always the old or the new bundle.
                        Where the file system cannot exchange, the old D moves to previous/ first
                        and the state stays RESUMABLE until the new D is in place. Then
                        .D.partial is removed.

The invariant that tests/test_faults.py checks after a kill, an interrupt or a full disk at every
step named by `fault_point`: D is a complete bundle, or the run is RESUMABLE, or it is STARTED
and a plain re-run starts cleanly. An earlier D is never removed before its replacement is in
place. Nothing here imports TensorFlow: resume checks cost milliseconds.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from cnnclf.bundle import MANIFEST_FILE, is_bundle  # bundle.json: written last, marks it complete
from cnnclf.errors import BundleError, CnnclfError
from cnnclf.faults import FAULT_ENV as FAULT_ENV  # tests set it
from cnnclf.faults import fault_point as fault_point  # the trainer and review --apply call it
from cnnclf.training.filesystem import NO_EXCHANGE_ENV as NO_EXCHANGE_ENV  # tests set it
from cnnclf.training.filesystem import (
    LockHeld,
    exchange,
    fsync_dir,
    fsync_file,
    release_lock,
    take_lock,
    write_atomically,
    write_json_atomically,
)
from cnnclf.training.runs import check_destination

PROGRESS_FILE = "progress.json"
RUN_FILE = "run.json"
BUNDLE_SUBDIR = "bundle"
PREVIOUS_SUBDIR = "previous"
LOGS_SUBDIR = "logs"

# ---------------------------------------------------------------------------------------------
# Fault injection: CNNCLF_FAULT="point[@n]=action" acts at the n-th time (default 1st) `point` is
# reached; action is kill (SIGKILL), interrupt (SIGINT, as Ctrl-C) or enospc (a full disk).

FAULT_POINTS = (
    "run.started",  # .D.partial and run.json exist
    "checkpoint.data_written",  # checkpoint-N.npz complete under its temporary name
    "checkpoint.data_renamed",  # checkpoint-N.npz in place, progress.json still the old one
    "checkpoint.best_renamed",  # best-N.npz in place (only when the best epoch changed)
    "checkpoint.progress_written",  # new progress.json under its temporary name
    "checkpoint.committed",  # progress.json names the new checkpoint
    "checkpoint.pruned",  # older checkpoints removed
    "bundle.model_written",  # bundle/model.keras saved
    "bundle.written",  # bundle/ complete (bundle.json written)
    "publish.previous_moved",  # (no atomic exchange) the old D moved into .D.partial/previous
    "publish.renamed",  # D is the new bundle; .D.partial still there
)


# ---------------------------------------------------------------------------------------------


class DamagedRun(BundleError):
    """A run's saved state that cannot be resumed: starting over is the only way on."""


def staging_dir(destination: Path) -> Path:
    """The hidden sibling holding a run's state; a fixed name, so `--resume` can find it."""
    destination = Path(destination)
    return destination.parent / f".{destination.name}.partial"


def lock_path(destination: Path) -> Path:
    destination = Path(destination)
    return destination.parent / f".{destination.name}.lock"


def read_progress(staging: Path) -> dict | None:
    """The committed progress of a run, or None when no epoch was committed (or it is damaged)."""
    path = Path(staging) / PROGRESS_FILE
    try:
        progress = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(progress, dict)
        or not isinstance(progress.get("checkpoint"), str)
        or isinstance(progress.get("completed_epochs"), bool)
        or not isinstance(progress.get("completed_epochs"), int)
        or progress["completed_epochs"] < 1
        or not (Path(staging) / progress["checkpoint"]).is_file()
    ):
        return None  # none committed, or damaged: not resumable
    return progress


def completed_epochs(staging: Path) -> int:
    return int((read_progress(staging) or {}).get("completed_epochs", 0))


class RunDir:
    """A locked run directory for `destination`; use as a context manager.

    Entering takes the lock, clears what a dead run left that is worth nothing, and prepares
    the staging folder (fresh, or the interrupted run's for `resume`). Leaving waits for a
    checkpoint still being written, keeps the staging folder only if it is resumable, and
    releases the lock.

    Args:
        destination: the bundle folder to publish.
        overwrite: allow replacing a non-empty destination (only once the new bundle is ready).
        resume: continue in the interrupted run's staging folder.
        label: how messages name the destination ("--out DIR", or "run folder DIR").
    """

    def __init__(
        self,
        destination: Path,
        *,
        overwrite: bool = False,
        resume: bool = False,
        label: str | None = None,
    ):
        self.destination = Path(destination)
        self.overwrite = overwrite
        self.resume = resume
        self.label = label or f"--out {self.destination}"
        self.staging = staging_dir(self.destination)
        self.run_id = uuid.uuid4().hex
        self.progress: dict | None = None
        self._lock_fd: int | None = None
        self._writer: threading.Thread | None = None
        self.checkpoints = self.staging  # where a resume reads its checkpoint from
        self.failure: BaseException | None = None  # a failed background checkpoint write
        self.published = False

    # -- entering and leaving -----------------------------------------------------------------

    def __enter__(self) -> RunDir:
        try:
            self.destination.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        except OSError as exc:
            raise BundleError(
                f"{self.label}: cannot write in {self.destination.parent} "
                f"({exc.strerror or exc}); choose a folder you can write to"
            ) from None
        try:
            self._prepare()
        except OSError as exc:
            self._unlock()
            where = f" ({exc.filename})" if exc.filename else ""
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise BundleError(
                    f"{self.label}: no space left on device{where}; free some "
                    "space, then run the same command again"
                ) from None
            raise BundleError(
                f"{self.label}: cannot prepare the run's folder "
                f"{self.staging} ({exc.strerror or exc}{where})"
            ) from None
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.wait(raise_failure=False)
            if (
                self.staging.is_dir()
                and read_progress(self.staging) is None
                and not (self.staging / PREVIOUS_SUBDIR).exists()
            ):
                shutil.rmtree(self.staging, ignore_errors=True)  # STARTED: nothing to keep
        finally:
            self._unlock()

    def _prepare(self) -> None:
        staging = self.staging
        if staging.is_dir() and self._published_from(staging):
            shutil.rmtree(staging, ignore_errors=True)  # PUBLISHED: a leftover of the last step
        progress = read_progress(staging) if staging.is_dir() else None
        if self.resume:
            if progress is None:
                if is_bundle(self.destination) and not staging.exists():
                    raise BundleError(
                        f"--resume: {self.destination} is already a finished "
                        "bundle; nothing to resume"
                    )
                raise BundleError(
                    f"--resume: no interrupted run to resume for "
                    f"{self.destination} (no completed epoch saved in {staging}); "
                    "run without --resume to start over"
                )
            started = self._read_run_file()
            self.run_id = started.get("run_id") or self.run_id
            # Replacing a non-empty D needs --overwrite, now or when the run started.
            self.overwrite = self.overwrite or bool(started.get("overwrite"))
            self.progress = progress
            if not (staging / PREVIOUS_SUBDIR).exists():
                check_destination(self.destination, self.overwrite)
            return
        if progress is not None and (staging / PREVIOUS_SUBDIR).exists():
            raise BundleError(
                f"{self.label}: an --overwrite was cut short while publishing; "
                f"the old bundle is kept in {staging / PREVIOUS_SUBDIR}: add "
                "--resume to finish publishing the new one"
            )
        if progress is not None:
            raise BundleError(
                f"{self.label}: an interrupted run's state (epoch "
                f"{progress.get('completed_epochs')}) is in {staging}; add --resume "
                "to continue it, or delete that folder to start over"
            )
        check_destination(self.destination, self.overwrite)
        if staging.exists():
            shutil.rmtree(staging)  # STARTED by a run that died: no epoch to keep
        staging.mkdir(parents=True)
        write_json_atomically(
            staging / RUN_FILE,
            {
                "run_id": self.run_id,
                "pid": os.getpid(),
                "started": time.time(),
                "overwrite": self.overwrite,
            },
        )
        fault_point("run.started")

    def _read_run_file(self) -> dict:
        try:
            started = json.loads((self.staging / RUN_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return started if isinstance(started, dict) else {}

    def _published_from(self, staging: Path) -> bool:
        """True when D already is the bundle this staging folder was publishing."""
        try:
            run_id = json.loads((staging / RUN_FILE).read_text(encoding="utf-8"))["run_id"]
            manifest = json.loads((self.destination / MANIFEST_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return manifest.get("run_id") == run_id and is_bundle(self.destination)

    def _lock(self) -> None:
        try:
            self._lock_fd = take_lock(lock_path(self.destination))
        except LockHeld as exc:
            raise BundleError(
                f"{self.label}: another cnnclf train (pid {exc.holder or '?'}) is "
                "writing this run; wait for it to finish, or choose another "
                "--out"
            ) from None

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            release_lock(lock_path(self.destination), self._lock_fd)
            self._lock_fd = None

    # -- checkpoints ----------------------------------------------------------------------------

    @property
    def logs_dir(self) -> Path:
        return self.staging / LOGS_SUBDIR

    def adopt_progress(self, staging: Path) -> None:
        """Resumes from another run's state (a multi_worker worker from the chief's)."""
        self.progress = read_progress(staging)
        self.checkpoints = Path(staging)

    def load_checkpoint(self) -> tuple[dict, dict | None]:
        """(checkpoint arrays, best-weights arrays or None) named by the committed progress."""
        import numpy as np

        folder = self.checkpoints
        progress = self.progress or read_progress(folder)
        if progress is None:
            raise DamagedRun(
                f"--resume: {folder} records no completed epoch; delete it to start over"
            )
        best = None
        name = progress["checkpoint"]
        try:
            with np.load(folder / name) as data:
                arrays = {k: data[k] for k in data.files}
            if progress.get("best"):
                name = progress["best"]
                with np.load(folder / name) as data:
                    best = {k: data[k] for k in data.files}
        except Exception as exc:  # numpy raises OSError, ValueError, BadZipFile, EOFError...
            raise DamagedRun(
                f"--resume: {folder / name} is damaged ({type(exc).__name__}: "
                f"{str(exc)[:120]}); delete {folder} to start over"
            ) from None
        return arrays, best

    def commit_checkpoint_async(
        self,
        epoch: int,
        arrays: dict,
        progress: dict,
        best: dict | None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Commits epoch `epoch`'s checkpoint in a background thread (one at a time).

        A failure (a full disk) is kept in `failure` and reported through `on_failure`, so the
        training loop can stop at the next batch instead of training on unsaved.
        """
        self.wait()

        def work() -> None:
            try:
                self.commit_checkpoint(epoch, arrays, progress, best)
            except BaseException as exc:
                self.failure = exc
                if on_failure is not None:
                    on_failure(exc)

        self._writer = threading.Thread(target=work, name="cnnclf-checkpoint", daemon=True)
        self._writer.start()

    def wait(self, raise_failure: bool = True) -> None:
        """Blocks until a checkpoint being written is on disk.

        A Ctrl-C meanwhile cannot cut the write short: it is raised once the write is done
        (when `raise_failure`; a run already stopping just finishes the write).
        """
        writer, interrupted = self._writer, None
        while writer is not None and writer.is_alive():
            try:
                writer.join()
            except KeyboardInterrupt as exc:
                interrupted = exc
        self._writer = None
        if raise_failure and interrupted is not None:
            raise interrupted
        if raise_failure and self.failure is not None:
            raise self.failure

    def commit_checkpoint(
        self, epoch: int, arrays: dict, progress: dict, best: dict | None
    ) -> None:
        """Makes epoch `epoch` resumable; see the module docstring for the order of steps."""
        import numpy as np

        name = f"checkpoint-{epoch}.npz"
        progress = {
            **progress,
            "completed_epochs": epoch,
            "checkpoint": name,
            "run_id": self.run_id,
        }
        write_atomically(
            self.staging / name,
            lambda f: np.savez(f, **arrays),
            lambda: fault_point("checkpoint.data_written"),
        )
        fault_point("checkpoint.data_renamed")
        if best is not None:
            best_name = f"best-{best['epoch']}.npz"
            if not (self.staging / best_name).is_file():
                write_atomically(self.staging / best_name, lambda f: np.savez(f, **best["arrays"]))
                fault_point("checkpoint.best_renamed")
            progress["best"] = best_name
        write_json_atomically(
            self.staging / PROGRESS_FILE,
            progress,
            lambda: fault_point("checkpoint.progress_written"),
        )
        fsync_dir(self.staging)
        fault_point("checkpoint.committed")
        keep = {name, progress.get("best"), PROGRESS_FILE}
        for old in (
            list(self.staging.glob("checkpoint-*.npz"))
            + list(self.staging.glob("best-*.npz"))
            + list(self.staging.glob(".*.tmp"))
        ):
            if old.name not in keep:
                old.unlink(missing_ok=True)
        self.progress = progress
        fault_point("checkpoint.pruned")

    # -- the bundle -------------------------------------------------------------------------------

    def write_bundle(self, write: Callable[[Path], None]) -> Path:
        """Builds the bundle in .D.partial/bundle with `write(folder)`; checkpoints stay."""
        folder = self.staging / BUNDLE_SUBDIR
        if folder.exists():
            shutil.rmtree(folder)  # a half-written bundle of an interrupted attempt
        folder.mkdir()
        if self.logs_dir.is_dir():
            shutil.copytree(self.logs_dir, folder / LOGS_SUBDIR)
        write(folder)
        if not (folder / MANIFEST_FILE).is_file():
            raise CnnclfError(f"internal: the bundle in {folder} has no {MANIFEST_FILE}")
        for path in folder.rglob("*"):
            if path.is_file():
                fsync_file(path)
        fsync_dir(folder)
        fault_point("bundle.written")
        return folder

    def publish(self) -> Path:
        """Puts the written bundle at D; an existing D is replaced only when allowed."""
        folder = self.staging / BUNDLE_SUBDIR
        previous = self.staging / PREVIOUS_SUBDIR
        destination = self.destination
        if destination.exists() and not previous.exists():
            check_destination(destination, self.overwrite)
            if not exchange(folder, destination):
                os.replace(destination, previous)  # kept in .D.partial until the new D is in
                fsync_dir(self.staging)
                fault_point("publish.previous_moved")
                os.replace(folder, destination)
        else:
            os.replace(folder, destination)
        fsync_dir(destination.parent)
        self.published = True
        fault_point("publish.renamed")
        # progress.json first: a staging folder half removed is never taken for a resumable run.
        (self.staging / PROGRESS_FILE).unlink(missing_ok=True)
        shutil.rmtree(self.staging, ignore_errors=True)
        return destination
