"""The CLI's exit that skips the interpreter's teardown, and the private API it rests on."""

import atexit
import sys
import textwrap

from helpers import run_process

PRIVATE_API = (
    "cnnclf/cli/fast_exit.py calls atexit._run_exitfuncs() (private, CPython) to run the exit "
    "handlers before os._exit; Python {version} {problem}. Without it TensorFlow's handlers "
    "no longer run on the CLI's fast exit: find their replacement before upgrading."
)


def test_atexit_still_has_the_private_run_exitfuncs():
    run_exitfuncs = getattr(atexit, "_run_exitfuncs", None)
    assert callable(run_exitfuncs), PRIVATE_API.format(
        version=sys.version.split()[0], problem="has no callable atexit._run_exitfuncs"
    )


def test_the_exit_runs_the_handlers_flushes_the_output_and_keeps_the_code(tmp_path):
    marker = tmp_path / "handler_ran"
    program = textwrap.dedent(f"""
        import atexit, sys
        from cnnclf.cli.fast_exit import exit_skipping_teardown

        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))
        sys.stdout.write("no newline, still in the buffer")
        sys.stderr.write("on stderr")
        exit_skipping_teardown(3)
        print("never printed")
    """)
    done = run_process([sys.executable, "-c", program], "a program that exits through it")
    assert done.returncode == 3, done.stderr
    assert done.stdout == "no newline, still in the buffer"
    assert done.stderr == "on stderr"
    assert marker.exists(), PRIVATE_API.format(
        version=sys.version.split()[0], problem="no longer runs the handlers from it"
    )
