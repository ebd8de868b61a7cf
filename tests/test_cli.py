"""Command-line behaviour: start-up cost, exit codes, one-line errors, no tracebacks."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import make_tree, run_cli, run_process, write_config

ROOT = Path(__file__).resolve().parents[1]


def run_isolated(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Runs the CLI in a fresh interpreter and reports whether TensorFlow got imported."""
    code = textwrap.dedent(f"""
        import sys
        from cnnclf.cli import main
        try:
            main({list(args)!r})
        except SystemExit as exc:
            code = exc.code
        print("TF_IMPORTED" if "tensorflow" in sys.modules else "TF_NOT_IMPORTED")
        sys.exit(code)
    """)
    return run_process([sys.executable, "-c", code], f"cnnclf {' '.join(args)}", cwd=cwd)


def test_help_does_not_import_tensorflow():
    result = run_isolated("--help")
    assert result.returncode == 0
    assert "train" in result.stdout and "predict" in result.stdout
    assert result.stdout.strip().endswith("TF_NOT_IMPORTED")


def test_version():
    result = run_cli("--version")
    assert result.exit_code == 0 and "cnnclf, version" in result.stdout


def test_config_errors_fail_before_tensorflow(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train:\n  epochs: ten\n")
    result = run_isolated("train", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: train.epochs: must be a positive integer, got 'ten'"
    assert result.stdout.strip().endswith("TF_NOT_IMPORTED")


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_config", "config file {tmp}/absent.yaml does not exist"),
        ("missing_train_dir", "data.train_dir: folder {tmp}/nowhere does not exist"),
        (
            "class_mismatch",
            "data.test_dir: classes differ from data.train_dir's (missing vstripes; extra zebra)",
        ),
        ("single_class", "has only one class folder (hstripes); a classifier needs at least two"),
        (
            "empty_class",
            "data.train_dir: class folder {tmp}/data/training_set/vstripes has no images",
        ),
        ("loose_images", "has no class sub-folders (images lie directly in it"),
        ("wrong_loss", "train.loss: categorical_crossentropy does not fit 2 classes"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, case, message):
    tree = make_tree(tmp_path / "data", n_train=3, n_test=2)
    config = write_config(tmp_path / "c.yaml", tree)
    args = ["train", "--config", config]
    if case == "missing_config":
        args = ["train", "--config", tmp_path / "absent.yaml"]
    elif case == "missing_train_dir":
        args += ["--set", f"data.train_dir={tmp_path}/nowhere"]
    elif case == "class_mismatch":
        (tree / "test_set" / "vstripes").rename(tree / "test_set" / "zebra")
    elif case == "single_class":
        for p in (tree / "training_set" / "vstripes").iterdir():
            p.unlink()
        (tree / "training_set" / "vstripes").rmdir()
    elif case == "empty_class":
        for p in (tree / "training_set" / "vstripes").iterdir():
            p.unlink()
    elif case == "loose_images":
        loose = tmp_path / "loose"
        loose.mkdir()
        (tree / "training_set" / "hstripes" / "hstripes_000.jpg").rename(loose / "a.jpg")
        args += ["--set", f"data.train_dir={loose}"]
    elif case == "wrong_loss":
        args += ["--set", "train.loss=categorical_crossentropy"]
    result = run_cli(*args, cwd=tmp_path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert message.format(tmp=tmp_path) in lines[0]
    assert not (tmp_path / "runs").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = run_process(
        [
            sys.executable,
            "-m",
            "cnnclf.cli",
            "train",
            "--config",
            str(tmp_path / "absent.yaml"),
            "--debug",
        ],
        "cnnclf train --debug",
    )
    assert result.returncode != 0 and "Traceback" in result.stderr
    plain = run_process(
        [sys.executable, "-m", "cnnclf.cli", "train", "--config", str(tmp_path / "absent.yaml")],
        "cnnclf train",
    )
    assert plain.returncode == 2 and "Traceback" not in plain.stderr


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    command = next(
        line.strip() for line in ci.splitlines() if "pytest" in line and "pip install" in line
    )
    assert command in readme


def cnnclf(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real `cnnclf` command (`python -m cnnclf` runs `cli.run`, like the executable),
    with stdout and stderr piped."""
    return run_process(
        [sys.executable, "-m", "cnnclf", *map(str, args)], f"cnnclf {args[0]}", cwd=cwd
    )


@pytest.mark.slow
def test_the_command_exits_fast_with_its_output_complete(binary_bundle, binary_tree):
    # After TensorFlow, `run` ends the process with os._exit: everything printed must still
    # arrive through a pipe, and the exit code be the command's.
    import json

    images = sorted((binary_tree / "test_set").rglob("*.png"))[:3]
    done = cnnclf("predict", "--model", binary_bundle, "--format", "json", *images)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [Path(r["path"]).name for r in rows] == [p.name for p in images]
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_a_failing_command_still_exits_non_zero_with_its_error(
    binary_bundle, binary_tree, tmp_path
):
    import json

    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    good = next((binary_tree / "test_set").rglob("*.png"))
    done = cnnclf("predict", "--model", binary_bundle, "--format", "json", good, bad)
    assert done.returncode == 1
    assert [r["path"] for r in json.loads(done.stdout)] == [str(good)]
    errors = done.stderr.strip().splitlines()
    assert errors[0].startswith(f"error: {bad}: ") and "Traceback" not in done.stderr
    assert errors[-1] == "error: 1 of 2 image(s) could not be predicted"
    # A usage error found after TensorFlow loaded the bundle: one line, exit 2.
    missing = cnnclf("evaluate", "--model", binary_bundle, tmp_path / "nowhere")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: DATA_DIR: folder {tmp_path / 'nowhere'} does not exist"
    ]


@pytest.mark.slow
def test_teardown_is_skipped_only_after_tensorflow_with_no_thread_left(monkeypatch):
    import threading

    import tensorflow  # noqa: F401  (what makes the teardown slow)

    from cnnclf.cli.entry import can_skip_teardown as _can_skip_teardown

    assert _can_skip_teardown({})
    assert not _can_skip_teardown({"own_shutdown": True})  # serve
    release = threading.Event()
    worker = threading.Thread(target=release.wait)  # not a daemon: Python would wait for it
    worker.start()
    try:
        assert not _can_skip_teardown({})
    finally:
        release.set()
        worker.join()
    hold = threading.Event()
    threading.Thread(target=hold.wait, daemon=True).start()  # dies with the process anyway
    try:
        assert _can_skip_teardown({})
    finally:
        hold.set()
    monkeypatch.delitem(sys.modules, "tensorflow")  # as an import cut short by Ctrl-C leaves it
    assert _can_skip_teardown({})
    without = {k: v for k, v in sys.modules.items() if not k.startswith("tensorflow.")}
    monkeypatch.setattr(sys, "modules", without)
    assert not _can_skip_teardown({})


def test_serve_refuses_an_allowed_host_that_is_not_a_host_name(tmp_path):
    for name in ("bad host/x", "gpu-box.lan:8000", ""):
        result = run_cli("serve", "--allowed-host", name, "--model", tmp_path / "nowhere")
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            f"error: --allowed-host {name!r}: not a host name (letters, digits, dots and "
            "hyphens, without a port or a path; or '*')"
        ]
