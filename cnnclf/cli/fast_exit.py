"""Ending the process without the interpreter's teardown: the CLI's one use of a private API.

`atexit._run_exitfuncs` (CPython, undocumented) runs the registered exit handlers now, which
`os._exit` would otherwise skip: TensorFlow's remove the temporary files autograph writes.
tests/unit/cli/test_fast_exit.py fails loudly if a Python release removes or changes it.
"""

from __future__ import annotations

import atexit
import os
import sys


def exit_skipping_teardown(code: int) -> None:
    """Runs the atexit handlers, flushes stdout and stderr, and ends the process with `code`."""
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)
