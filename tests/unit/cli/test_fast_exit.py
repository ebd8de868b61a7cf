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


# A Ctrl-C that lands while TensorFlow's pybind11 code runs Python through PyRun_String sets
# CPython's "unhandled KeyboardInterrupt" flag even though cnnclf catches the interrupt; an
# interpreter started with -m then ends by killing itself with SIGINT, whatever exit code
# cnnclf chose (the flaky returncode -2 of test_random_kills_and_interrupts). ctypes sets the
# flag the same way here, without TensorFlow.
_INTERRUPTED_IMPORT = """
import ctypes, sys
from cnnclf.cli.entry import run  # first: an import may run code that clears the flag
run_string = ctypes.pythonapi.PyRun_String
run_string.restype = ctypes.py_object
run_string.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
try:
    run_string(b"raise KeyboardInterrupt", 257, {}, {})  # 257: Py_file_input
except KeyboardInterrupt:
    pass
if sys.argv[1] == "half-imported":  # what an `import tensorflow` cut short leaves behind
    sys.modules["tensorflow.python"] = type(sys)("tensorflow.python")
sys.argv = ["cnnclf", "--version"]
run()
"""


def test_an_interrupt_inside_a_half_finished_tensorflow_import_keeps_the_exit_code(tmp_path):
    (tmp_path / "interrupted_import.py").write_text(_INTERRUPTED_IMPORT)
    command = [sys.executable, "-m", "interrupted_import"]
    flagged = run_process([*command, "no-tensorflow"], "the control program", cwd=tmp_path)
    assert flagged.returncode == -2, "CPython no longer dies by SIGINT here: the test is moot"
    done = run_process([*command, "half-imported"], "the CLI after the interrupt", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("cnnclf, version")
