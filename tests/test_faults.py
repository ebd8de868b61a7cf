"""Fault injection: kill, interrupt and fill the disk under `cnnclf train` at many instants.

The invariant (cnnclf/training/rundir.py): after any fault, either the finished bundle is
published at --out, or the last committed epoch is resumable with --resume, or (before the first
epoch is saved) a plain re-run starts cleanly. An earlier bundle replaced with --overwrite is
never lost before the new one is in place. Every case below checks it the only way that counts: by
running --resume or the same command to a loadable bundle with every epoch in its history.

Deterministic instants come from CNNCLF_FAULT=point[@n]=action at each file-system step of
checkpointing and publishing; random instants from a seeded loop of SIGKILL/SIGINT delays.
scripts/soak_faults.py runs the same checks for longer.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    WAIT_S,
    communicate,
    make_tree,
    read_json,
    run_cli,
    run_process,
    train_command,
    wait_for,
    write_config,
)

from cnnclf.bundle import is_bundle, load_bundle
from cnnclf.training.rundir import (
    FAULT_ENV,
    FAULT_POINTS,
    NO_EXCHANGE_ENV,
    RunDir,
    read_progress,
    staging_dir,
)

EPOCHS = 3


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("faults"), n_train=8, n_test=4)


@pytest.fixture
def config(tmp_path, tree):
    # keep_best makes every checkpoint carry best weights too (best-N.npz is one more step).
    return write_config(
        tmp_path / "c.yaml", tree, train={"epochs": EPOCHS, "seed": 3, "keep_best": "val_loss"}
    )


def train_process(
    config: Path, out: Path, *extra: str, fault: str | None = None, no_exchange: bool = False
) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in (FAULT_ENV, NO_EXCHANGE_ENV)}
    if fault:
        env[FAULT_ENV] = fault
    if no_exchange:
        env[NO_EXCHANGE_ENV] = "1"
    # The child gets Ctrl-C's default disposition even when the suite runs in the background.
    return subprocess.Popen(
        train_command(config, out, *extra),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def finish(process: subprocess.Popen) -> tuple[int, str]:
    _, stderr = communicate(process, "a training run to exit")
    return process.returncode, stderr


def assert_complete(out: Path, epochs: int = EPOCHS) -> dict:
    assert is_bundle(out), sorted(p.name for p in out.iterdir()) if out.exists() else "absent"
    bundle = load_bundle(out)
    history = read_json(out / "history.json")
    assert history["epoch"] == list(range(1, epochs + 1))
    assert bundle.manifest["epochs"] == epochs
    return bundle.manifest


def recover(config: Path, out: Path, *extra: str, epochs: int = EPOCHS) -> str:
    """Brings the run to a published bundle the way a user would; returns what it took."""
    staging = staging_dir(out)
    resumable = read_progress(staging) is not None and not _published_from(staging, out)
    if is_bundle(out) and not resumable:
        assert_complete(out, epochs)
        return "published"  # a leftover hidden state folder is removed by the next run
    if resumable:
        # A plain re-run must refuse and point at --resume, never start over silently.
        again = run_cli("train", "--config", config, "--out", out, *extra)
        assert again.exit_code == 1 and "add --resume" in again.stderr, again.output
        result = run_cli("train", "--config", config, "--out", out, "--resume")
        assert result.exit_code == 0, result.output
        how = "resumed"
    else:
        result = run_cli("train", "--config", config, "--out", out, *extra)
        assert result.exit_code == 0, result.output
        how = "re-run"
    assert_complete(out, epochs)
    assert not staging.exists() and not (out.parent / f".{out.name}.lock").exists()
    return how


def _published_from(staging: Path, out: Path) -> bool:
    try:
        return read_json(staging / "run.json")["run_id"] == read_json(out / "bundle.json")["run_id"]
    except (OSError, KeyError, ValueError):
        return False


# Points reached by a plain run; publish.previous_moved only without an atomic exchange.
# Every step once, and a checkpoint write with an older checkpoint already committed. (The soak
# script adds later epochs and Ctrl-C at every step.)
KILL_POINTS = [p for p in FAULT_POINTS if p != "publish.previous_moved"] + [
    "checkpoint.data_written@2"
]


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_at_each_step_leaves_a_bundle_or_a_resumable_run(tmp_path, config, point):
    name, _, nth = point.partition("@")
    out = tmp_path / "bundle"
    code, stderr = finish(train_process(config, out, fault=f"{point}=kill"))
    assert code == -signal.SIGKILL, stderr  # the fault was reached
    assert not out.exists() or is_bundle(out)  # never a half-written bundle
    how = recover(config, out)
    # Before the first progress.json is committed nothing is kept; after, nothing is lost.
    before_first = {
        "run.started",
        "checkpoint.data_written",
        "checkpoint.data_renamed",
        "checkpoint.best_renamed",
        "checkpoint.progress_written",
    }
    if name == "publish.renamed":
        assert how == "published"
    elif name in before_first and nth in ("", "1"):
        assert how == "re-run"
    else:
        assert how == "resumed"


@pytest.mark.slow
@pytest.mark.parametrize(
    "point, no_exchange",
    [
        ("bundle.written", False),
        ("publish.renamed", False),
        ("publish.previous_moved", True),
        ("publish.renamed", True),
    ],
    ids=[
        "exchange-bundle.written",
        "exchange-publish.renamed",
        "two_renames-previous_moved",
        "two_renames-publish.renamed",
    ],
)
def test_overwrite_never_loses_the_old_bundle(tmp_path, config, point, no_exchange):
    out = tmp_path / "bundle"
    first = run_cli("train", "--config", config, "--out", out)
    assert first.exit_code == 0, first.output
    old_id = read_json(out / "bundle.json")["run_id"]
    code, stderr = finish(
        train_process(config, out, "--overwrite", fault=f"{point}=kill", no_exchange=no_exchange)
    )
    assert code == -signal.SIGKILL, stderr
    staging = staging_dir(out)
    if is_bundle(out):
        new_id = read_json(out / "bundle.json")["run_id"]
        assert new_id == old_id or point == "publish.renamed"
    else:  # only between the two renames: the old bundle waits in the run's state
        assert point == "publish.previous_moved"
        assert read_json(staging / "previous" / "bundle.json")["run_id"] == old_id
        assert is_bundle(staging / "bundle")
        again = run_cli("train", "--config", config, "--out", out, "--overwrite")
        assert "the old bundle is kept in" in again.stderr  # not "delete that folder"
    recover(config, out, "--overwrite")


@pytest.mark.slow
@pytest.mark.parametrize(
    "point", ["checkpoint.data_written", "bundle.model_written", "publish.renamed"]
)
def test_ctrl_c_at_each_step_exits_130_with_a_true_message(tmp_path, config, point):
    out = tmp_path / "bundle"
    code, stderr = finish(train_process(config, out, fault=f"{point}=interrupt"))
    assert "Traceback" not in stderr and "Error" not in stderr, stderr
    if point == "publish.renamed":
        # The bundle is in place before the interrupt lands: the run has succeeded.
        assert is_bundle(out)
    else:
        assert code == 130, stderr
        done = read_progress(staging_dir(out))
        if done is None:
            assert "interrupted before the first epoch finished" in stderr
        else:
            n = done["completed_epochs"]
            assert f"interrupted after epoch {n} of {EPOCHS}" in stderr
            assert f"--out {out} --resume" in stderr
    recover(config, out)


def long_run_past_its_first_epoch(tmp_path, tree):
    """A 30-epoch run in a subprocess, returned once its first epoch is committed."""
    config = write_config(tmp_path / "c.yaml", tree, train={"epochs": 30, "seed": 3})
    out = tmp_path / "bundle"
    process = train_process(config, out)
    progress = staging_dir(out) / "progress.json"
    wait_for(
        lambda: process.poll() is not None or progress.exists(),
        "the first epoch's checkpoint (progress.json)",
    )
    return config, out, process


@pytest.mark.slow
def test_sigterm_stops_like_ctrl_c(tmp_path, tree):
    config, out, process = long_run_past_its_first_epoch(tmp_path, tree)
    process.terminate()
    code, stderr = finish(process)
    assert code == 143, stderr
    done = read_progress(staging_dir(out))["completed_epochs"]
    assert f"terminated (SIGTERM) after epoch {done} of 30" in stderr
    assert f"--out {out} --resume" in stderr and "Traceback" not in stderr
    assert recover(config, out, epochs=30) == "resumed"


@pytest.mark.slow
@pytest.mark.parametrize(
    "point",
    [
        "checkpoint.data_written@2",
        "checkpoint.best_renamed",
        "checkpoint.progress_written",
        "bundle.model_written",
    ],
)
def test_full_disk_at_each_step_stops_with_one_line_and_resumes(
    tmp_path, config, point, monkeypatch
):
    out = tmp_path / "bundle"
    monkeypatch.setenv(FAULT_ENV, f"{point}=enospc")
    from cnnclf import faults

    monkeypatch.setattr(faults, "_counts", {})
    result = run_cli("train", "--config", config, "--out", out)
    monkeypatch.delenv(FAULT_ENV)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    done = read_progress(staging_dir(out))
    if done:
        assert f"--out {out} --resume" in result.stderr
    assert not out.exists()
    recover(config, out)


def started(process: subprocess.Popen, out: Path) -> float:
    """Waits until the run holds its folder (or has exited); returns that instant."""
    wait_for(
        lambda: process.poll() is not None or staging_dir(out).exists(),
        f"the run to create {staging_dir(out).name}",
        poll=0.005,
    )
    return time.monotonic()


@pytest.mark.slow
def test_random_kills_and_interrupts(tmp_path, tree):
    """A seeded loop of SIGKILL / SIGINT at random instants of a run, each then recovered.

    The instants are spread over one undisturbed run's length, measured first, so they fall
    in start-up, in epochs, at epoch ends and checkpoint writes, and in publishing alike.
    """
    config = write_config(
        tmp_path / "c.yaml", tree, train={"epochs": 10, "seed": 3, "keep_best": "val_loss"}
    )
    clean = train_process(config, tmp_path / "clean")
    begin = started(clean, tmp_path / "clean")
    assert finish(clean)[0] == 0
    length = time.monotonic() - begin
    rng = random.Random(20261125)
    outcomes = []
    while len(outcomes) < 4:  # as many trials on a slow machine as on a fast one
        out = tmp_path / f"run{len(outcomes)}"
        sig = signal.SIGKILL if len(outcomes) % 2 == 0 else signal.SIGINT
        process = train_process(config, out)
        started(process, out)
        time.sleep(rng.uniform(0.0, length))
        process.send_signal(sig)
        code, stderr = finish(process)
        assert "Traceback" not in stderr and "free()" not in stderr, stderr
        assert code in (0, 130, -signal.SIGKILL), stderr
        outcomes.append(recover(config, out, epochs=10))
    assert len(outcomes) >= 2, "too few kills in the time allowed"


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path, config):
    out = tmp_path / "bundle"
    with RunDir(out):
        for extra in ((), ("--resume",), ("--overwrite",)):
            result = run_cli("train", "--config", config, "--out", out, *extra)
            assert result.exit_code == 1
            assert "another cnnclf train (pid" in result.stderr, result.output
    assert run_cli("train", "--config", config, "--out", out).exit_code == 0


@pytest.mark.slow
def test_runs_started_together_get_different_folders(tmp_path, config):
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "cnnclf.cli", "train", "--config", str(config)],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [communicate(p, "two runs started together") for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    bundles = sorted((tmp_path / "runs").iterdir())
    assert len(bundles) == 2 and all(is_bundle(b) for b in bundles)


@pytest.mark.slow
def test_a_stale_partial_folder_without_an_epoch_does_not_block_a_re_run(tmp_path, config):
    out = tmp_path / "bundle"
    staging = staging_dir(out)
    staging.mkdir()
    (staging / ".checkpoint-1.npz.tmp").write_bytes(b"half")
    result = run_cli("train", "--config", config, "--out", out)
    assert result.exit_code == 0, result.output
    assert_complete(out)


# ---------------------------------------------------------------------------------------------
# A real full disk: a small tmpfs for --out, and for the decoded-image cache.


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()

    def resize(size: str, remount: bool = False) -> None:
        options = f"remount,size={size}" if remount else f"size={size}"
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
            check=True,
            capture_output=True,
        )

    try:
        resize("2m")
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); needs root and mount rights")
    yield mount, resize
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def big_config(tmp_path, tree, **train):
    # 32x32x3 -> 8 filters -> 15x15x8 -> Dense 64: ~115k parameters, a 1.4 MB checkpoint.
    return write_config(
        tmp_path / "big.yaml",
        tree,
        data={"image_size": [32, 32], "batch_size": 8},
        model={"conv_blocks": [{"filters": 8}], "dense_units": [64]},
        train={"epochs": EPOCHS, "seed": 3, **train},
    )


@pytest.mark.slow
def test_out_on_a_full_disk_keeps_the_last_epoch_and_resumes(tmp_path, tree, small_disk):
    disk, resize = small_disk
    config = big_config(tmp_path, tree)
    out = disk / "bundle"
    result = run_cli("train", "--config", config, "--out", out)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert read_progress(staging_dir(out))["completed_epochs"] == 1
    assert f"--out {out} --resume" in result.stderr
    resize("64m", remount=True)
    resumed = run_cli("train", "--config", config, "--out", out, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert_complete(out)


@pytest.mark.slow
def test_out_on_a_disk_too_small_for_one_checkpoint_needs_only_a_re_run(tmp_path, tree, small_disk):
    disk, resize = small_disk
    resize("1m", remount=True)
    config = big_config(tmp_path, tree)
    out = disk / "bundle"
    result = run_cli("train", "--config", config, "--out", out)
    assert result.exit_code == 1, result.output
    assert (
        "no space left on device" in result.stderr and "run the same command again" in result.stderr
    )
    assert list(disk.iterdir()) == []  # nothing half-written left to delete by hand
    resize("64m", remount=True)
    assert run_cli("train", "--config", config, "--out", out).exit_code == 0
    assert_complete(out)


@pytest.mark.slow
def test_a_full_cache_folder_is_one_line_and_a_prompt_exit(tmp_path, tree, small_disk):
    disk, _ = small_disk
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)
    try:  # page by page until not one more fits, then give back two: room to start, not more
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        os.ftruncate(fd, os.fstat(fd).st_size - 8192)
    finally:
        os.close(fd)
    config = write_config(tmp_path / "c.yaml", tree, data={"cache": "disk"})
    env = {**os.environ, "TMPDIR": str(disk)}
    process = run_process(
        train_command(config, tmp_path / "b"),
        "cnnclf train on a full cache folder",
        env=env,
    )
    assert process.returncode == 1, process.stderr
    lines = [line for line in process.stderr.splitlines() if line.startswith("error:")]
    assert (
        len(lines) == 1
        and "data.cache: disk: cannot write decoded images" in lines[0]
        and "No space left on device" in lines[0]
    ), process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "b").exists() and not staging_dir(tmp_path / "b").exists()


@pytest.mark.slow
def test_a_damaged_checkpoint_says_to_start_over(tmp_path, config, monkeypatch):
    out = tmp_path / "bundle"
    from cnnclf import faults

    monkeypatch.setenv(FAULT_ENV, "bundle.model_written=enospc")
    monkeypatch.setattr(faults, "_counts", {})
    assert run_cli("train", "--config", config, "--out", out).exit_code == 1
    monkeypatch.delenv(FAULT_ENV)
    staging = staging_dir(out)
    checkpoint = staging / read_progress(staging)["checkpoint"]
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    result = run_cli("train", "--config", config, "--out", out, "--resume")
    assert result.exit_code == 1
    assert (
        result.stderr.splitlines()
        and "is damaged" in result.stderr
        and f"delete {staging} to start over" in result.stderr
        and "resume with" not in result.stderr
    )


# ---------------------------------------------------------------------------------------------
# What a hostile review of the life cycle found, each pinned.


def stopped_before_publishing(config: Path, out: Path, *args: str):
    """A run stopped by a (simulated) full disk after its last epoch: resumable."""
    from cnnclf import faults

    os.environ[FAULT_ENV] = "bundle.model_written=enospc"
    faults._counts.clear()
    try:
        result = run_cli("train", "--config", config, "--out", out, *args)
    finally:
        del os.environ[FAULT_ENV]
    assert result.exit_code == 1 and read_progress(staging_dir(out)), result.output
    return result


@pytest.mark.slow
def test_the_printed_resume_command_works_verbatim(tmp_path, config):
    import shlex

    out = tmp_path / "my bundle"
    result = stopped_before_publishing(
        config, out, "--set", "train.class_weight={hstripes: 1.0, vstripes: 2.0}"
    )
    line = next(s for s in result.stderr.splitlines() if s.startswith("resume with: "))
    words = shlex.split(line.removeprefix("resume with: "))
    assert words[:2] == ["cnnclf", "train"]
    resumed = run_cli(*words[1:])
    assert resumed.exit_code == 0, resumed.output
    assert_complete(out)


@pytest.mark.slow
def test_resume_replaces_a_folder_only_when_the_run_was_allowed_to(tmp_path, config):
    out = tmp_path / "bundle"
    stopped_before_publishing(config, out)
    out.mkdir()
    (out / "notes.txt").write_text("mine")  # made while the run was stopped
    result = run_cli("train", "--config", config, "--out", out, "--resume")
    assert result.exit_code == 1 and "folder exists and is not empty" in result.stderr
    assert (out / "notes.txt").read_text() == "mine"
    # A run started with --overwrite may replace what is there when it is resumed.
    other = tmp_path / "other"
    assert run_cli("train", "--config", config, "--out", other).exit_code == 0
    stopped_before_publishing(config, other, "--overwrite")
    assert run_cli("train", "--config", config, "--out", other, "--resume").exit_code == 0
    assert_complete(other)


def test_the_current_folder_or_a_mount_point_is_refused_before_training(
    tmp_path, config, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path)):
        result = run_cli("train", "--config", config, "--out", out, "--overwrite")
        assert result.exit_code == 1 and "is the current folder" in result.stderr
    mount = tmp_path / "volume"
    mount.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here")
    try:
        result = run_cli("train", "--config", config, "--out", mount)
        assert result.exit_code == 1 and "is a mount point" in result.stderr
        assert f"{mount / 'model'}" in result.stderr
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_unwritable_or_impossible_folders_are_one_line(tmp_path, config):
    afile = tmp_path / "afile"
    afile.write_text("x")
    result = run_cli("train", "--config", config, "--out", afile / "x")
    assert result.exit_code == 1 and result.stderr.startswith("error: --out ")
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_ctrl_c_while_a_checkpoint_is_written_is_raised_once_it_is_on_disk(tmp_path):
    import threading

    # Ctrl-C as a terminal delivers it: a test session started in the background (`&`,
    # nohup) inherits SIGINT ignored and would never see it.
    # The writer sends the Ctrl-C once wait() joins it, and ends only after wait() has
    # caught it: the interrupt lands mid-write on any machine (no timer races the write).
    joining, caught = threading.Event(), threading.Event()
    main = threading.main_thread().ident
    assert main is not None

    class Writer(threading.Thread):
        def join(self, timeout=None):
            try:
                joining.set()  # inside the try: the Ctrl-C may land before join() blocks
                return super().join(timeout)
            except KeyboardInterrupt:
                caught.set()
                raise

    def write():
        assert joining.wait(WAIT_S), "wait() never joined the writer"
        # To the main thread itself: a process-wide signal may land on this thread, and the
        # main thread's blocked join() would then not wake to handle it until the write ends.
        # Sent again while unanswered: one landing just before join() blocks in the lock is
        # only handled once the lock is released (CPython checks signals before the wait and
        # on EINTR, not in between), so this thread would wait out its bound for it.
        deadline = time.monotonic() + WAIT_S
        while True:
            signal.pthread_kill(main, signal.SIGINT)
            if caught.wait(0.5) or time.monotonic() > deadline:
                break
        assert caught.is_set(), "the Ctrl-C never reached wait()"

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        run = RunDir(tmp_path / "b")
        run._writer = Writer(target=write)
        run._writer.start()
        with pytest.raises(KeyboardInterrupt):
            run.wait()
        assert caught.is_set(), "the Ctrl-C did not land while wait() joined the writer"
        assert run._writer is None  # the write was waited for, then the interrupt raised
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.slow
def test_ctrl_c_twice_still_says_what_was_kept(tmp_path, tree):
    config, out, process = long_run_past_its_first_epoch(tmp_path, tree)
    process.send_signal(signal.SIGINT)
    time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    code, stderr = finish(process)
    assert code == 130, stderr
    assert "interrupted after epoch" in stderr and "resume with:" in stderr
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert recover(config, out, epochs=30) == "resumed"
