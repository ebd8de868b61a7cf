"""cnnclf without TensorFlow: what works, what says so in one line, and exports that never need it.

TensorFlow is made unimportable for a child process by a `tensorflow` package on PYTHONPATH
whose import raises the same ModuleNotFoundError an uninstalled TensorFlow raises.
"""

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
from helpers import run_cli, run_process

# Runs the CLI, then reports on stderr whether TensorFlow was imported at any point.
WRAPPER = """
import sys
from cnnclf.cli import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else 1
sys.stderr.write("tensorflow imported: %s\\n" % ("tensorflow" in sys.modules))
sys.exit(code)
"""


@pytest.fixture(scope="module")
def no_tensorflow(tmp_path_factory) -> dict:
    """Environment for a child process in which `import tensorflow` fails as if not installed."""
    shim = tmp_path_factory.mktemp("shim")
    (shim / "tensorflow").mkdir()
    (shim / "tensorflow" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'tensorflow'\", name='tensorflow')\n"
    )
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), os.getcwd()])}


def cnnclf(*args, env=None, cwd=None):
    """(exit code, stdout, stderr lines without the wrapper's report, tensorflow imported)."""
    result = run_process(
        [sys.executable, "-c", WRAPPER, *map(str, args)],
        f"cnnclf {' '.join(map(str, args))}",
        env=env,
        cwd=cwd,
    )
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("tensorflow imported: "), result.stderr
    return result.returncode, result.stdout, lines[:-1], lines[-1].endswith("True")


@pytest.fixture(scope="module")
def exports(tmp_path_factory, binary_bundle) -> Path:
    folder = tmp_path_factory.mktemp("exports")
    formats = ["onnx"] + (["tflite"] if importlib.util.find_spec("ai_edge_litert") else [])
    for fmt in formats:
        result = run_cli(
            "export", "--model", binary_bundle, "--format", fmt, "--out", folder / f"model.{fmt}"
        )
        assert result.exit_code == 0, result.output
    return folder


def test_help_config_and_check_data_work_without_tensorflow(no_tensorflow, binary_tree):
    code, out, err, imported = cnnclf("--help", env=no_tensorflow)
    assert code == 0 and "predict" in out and not err and not imported
    code, out, err, _ = cnnclf("config", env=no_tensorflow)
    assert code == 0 and "image_size" in out and not err
    code, out, err, _ = cnnclf("check-data", binary_tree, env=no_tensorflow)
    assert code == 0 and "training_set" in out, err


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["predict", "--model", "{bundle}", "{image}"],
        ["evaluate", "--model", "{bundle}"],
        ["export", "--model", "{bundle}", "--format", "onnx", "--out", "{tmp}/m.onnx"],
        ["explain", "--model", "{bundle}", "--out", "{tmp}/cam", "{image}"],
        ["train", "--config", "{config}", "--out", "{tmp}/run"],
    ],
)
def test_commands_that_need_tensorflow_say_so_in_one_line(
    tmp_path, no_tensorflow, binary_bundle, binary_tree, args
):
    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    values = {
        "bundle": binary_bundle,
        "image": image,
        "tmp": tmp_path,
        "config": binary_bundle / "config.yaml",
    }
    code, out, err, _ = cnnclf(*[a.format(**values) for a in args], env=no_tensorflow)
    assert code == 1 and out == ""
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    assert errors[0].startswith("error: cnnclf needs TensorFlow: pip install 'cnnclf[cpu]'")


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_predicting_from_an_export_never_imports_tensorflow(
    exports, no_tensorflow, binary_bundle, binary_tree, fmt
):
    model = exports / f"model.{fmt}"
    if not model.exists():
        pytest.skip("ai-edge-litert is not installed: .tflite exports run on TensorFlow")
    folder = binary_tree / "test_set"
    expected = json.loads(
        run_cli("predict", "--model", binary_bundle, "--format", "json", folder).stdout
    )
    for env in (None, no_tensorflow):  # TensorFlow installed but not needed; not installed
        code, out, err, imported = cnnclf(
            "predict", "--model", model, "--format", "json", folder, env=env
        )
        assert code == 0, err
        assert not imported
        rows = json.loads(out)
        assert [r["label"] for r in rows] == [r["label"] for r in expected]
        assert max(abs(a["probability"] - b["probability"]) for a, b in zip(rows, expected)) <= 1e-4
