"""The `cnnclf` executable (`cnnclf.cli:run`, `python -m cnnclf`): `main`, then, where it is
safe, an exit that skips the interpreter's teardown.

Why: once the output is flushed and every file is closed there is nothing left to do, and
tearing TensorFlow down costs time (often more than predicting one image took), can hang (a
full disk left tf.data threads waiting), or abort (`free(): invalid pointer` after Ctrl-C, with
tf.data threads running).

Only here, never in `main`: click's CliRunner (the tests) calls `main` in-process, where
`os._exit` would end the test run. `main` runs in click's standalone mode, so its error
printing and exit codes are click's own; the command's with-blocks, temporary folders
included, have all closed by the time it returns. atexit handlers still run (see
`fast_exit`). See `can_skip_teardown` for when the interpreter's own exit is kept.
"""

from __future__ import annotations

import sys

from cnnclf.cli.group import main


def run() -> None:
    state: dict = {}
    code: int | str | None = 0
    try:
        main(obj=state)
    except SystemExit as exc:  # --debug tracebacks are other exceptions: they go the usual way
        if not can_skip_teardown(state):
            raise
        code = exc.code
    if not isinstance(code, int):  # as the interpreter treats sys.exit("message")
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    from cnnclf.cli.fast_exit import exit_skipping_teardown

    exit_skipping_teardown(code)


def can_skip_teardown(state: dict) -> bool:
    """Whether `run` may end the process without the interpreter's teardown.

    Not when TensorFlow was never imported (`--help`, `config`, `check-data`, an ONNX or
    LiteRT export: their teardown is quick), not while a thread that is not a daemon still
    runs (the interpreter would wait for it to finish its work), and not for a command that
    owns its shutdown (`serve`: uvicorn's worker processes and signal handling).

    An import that Ctrl-C cut short counts as imported: `tensorflow` itself is gone from
    `sys.modules` then, but its submodules stay, and so may CPython's "unhandled
    KeyboardInterrupt" flag, set when the interrupt escaped code TensorFlow runs through
    `PyRun_String` (pybind11's exec). The interpreter's own exit honours that flag by killing
    itself with SIGINT, the exit code 130 and its message notwithstanding; `os._exit` does not.
    """
    import threading

    if state.get("own_shutdown") or not _tensorflow_loaded():
        return False
    return not any(
        t is not threading.main_thread() and not t.daemon and t.is_alive()
        for t in threading.enumerate()
    )


def _tensorflow_loaded() -> bool:
    """Whether any part of TensorFlow was imported, even by an import that did not finish."""
    return any(name == "tensorflow" or name.startswith("tensorflow.") for name in list(sys.modules))
