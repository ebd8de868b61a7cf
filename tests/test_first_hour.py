"""What a missing extra or an unreachable weights server costs: one line, before TensorFlow loads.

The CLI runs in a child process through a wrapper that hides the modules named in
CNNCLF_TEST_HIDE (as if not installed: `import` fails and `importlib.util.find_spec` answers
None) and writes `[tensorflow import starts]` to the real stderr when something first imports
TensorFlow. With CNNCLF_TEST_STOP_AT_TENSORFLOW=1 that import then fails as if TensorFlow were
not installed, so a test sees what came before it without waiting for it.
"""

import json
import os
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from helpers import free_port, run_process

from cnnclf.config import load_config
from cnnclf.errors import ConfigError
from cnnclf.model import backbones
from cnnclf.model.backbones import BACKBONES

MARKER = "[tensorflow import starts]"

WRAPPER = """
import builtins, os, sys
for name in filter(None, os.environ.get("CNNCLF_TEST_HIDE", "").split(",")):
    sys.modules[name] = None
real_stderr = os.dup(2)  # still the pipe while tf_loader redirects fd 2 during the import
stop = os.environ.get("CNNCLF_TEST_STOP_AT_TENSORFLOW") == "1"
original_import = builtins.__import__

def spying_import(name, *args, **kwargs):
    if name.split(".")[0] == "tensorflow" and "tensorflow" not in sys.modules:
        sys.stderr.flush()
        os.write(real_stderr, b"MARKER\\n")
        if stop:
            raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
    return original_import(name, *args, **kwargs)

builtins.__import__ = spying_import
from cnnclf.cli import main
main()
""".replace("MARKER", MARKER)


def cnnclf(*args, hide=(), stop_at_tensorflow=False, **env):
    """(exit code, stdout, stderr lines) of the CLI run through WRAPPER."""
    environment = {
        **os.environ,
        "CNNCLF_TEST_HIDE": ",".join(hide),
        "CNNCLF_TEST_STOP_AT_TENSORFLOW": "1" if stop_at_tensorflow else "0",
        **env,
    }
    result = run_process(
        [sys.executable, "-c", WRAPPER, *map(str, args)],
        f"cnnclf {' '.join(map(str, args))}",
        env=environment,
    )
    return result.returncode, result.stdout, result.stderr.strip().splitlines()


def fake_bundle(folder: Path) -> Path:
    """Enough of a bundle for the CLI to get to loading its model (which is not there)."""
    folder.mkdir()
    (folder / "model.keras").write_bytes(b"not read: the command stops before")
    return folder


def test_export_onnx_without_tf2onnx_says_so_before_tensorflow(tmp_path, binary_tree):
    bundle = fake_bundle(tmp_path / "bundle")
    code, out, err = cnnclf(
        "export",
        "--model",
        bundle,
        "--format",
        "onnx",
        "--out",
        tmp_path / "m.onnx",
        "--data",
        binary_tree / "test_set",
        hide=["tf2onnx"],
    )
    assert code == 1 and out == ""
    assert err == [
        "error: --format onnx needs tf2onnx (to convert) and onnxruntime (for the parity "
        "check); tf2onnx is not installed: pip install 'cnnclf[onnx]'"
    ]
    assert not (tmp_path / "m.onnx").exists()


def tflite_export(folder: Path) -> Path:
    """A .tflite file with its sidecars: read up to the point its runtime opens it."""
    folder.mkdir()
    model = folder / "model.tflite"
    model.write_bytes(b"not read: the runtime is never reached")
    meta = {
        "format": "tflite",
        "quantize": "none",
        "source_bundle": None,
        "class_indices": {"a": 0, "b": 1},
        "preprocessing": {
            "image_size": [32, 32],
            "color_mode": "rgb",
            "interpolation": "bilinear",
            "rescale": 1 / 255,
            "rescale_in_model": True,
            "class_mode": "binary",
            "threshold": 0.5,
        },
    }
    (folder / "model.tflite.cnnclf.json").write_text(json.dumps(meta), encoding="utf-8")
    (folder / "model.tflite.labels.txt").write_text("a\nb\n", encoding="utf-8")
    return model


def test_predict_tflite_without_litert_says_so_before_tensorflow_loads(tmp_path, binary_tree):
    model = tflite_export(tmp_path / "export")
    image = sorted((binary_tree / "test_set" / "hstripes").iterdir())[0]
    code, _, err = cnnclf(
        "predict", "--model", model, image, hide=["ai_edge_litert"], stop_at_tensorflow=True
    )
    note = (
        "note: ai-edge-litert is not installed, so model.tflite runs on TensorFlow (slower to "
        "start): pip install 'cnnclf[litert]'"
    )
    assert err[:2] == [note, MARKER], err
    assert code == 1  # the wrapper stopped TensorFlow's import: "cnnclf needs TensorFlow"


def weights_config(path: Path, tree: Path, backbone: dict) -> Path:
    import yaml

    config = {
        "data": {
            "train_dir": str(tree / "training_set"),
            "test_dir": str(tree / "test_set"),
            "image_size": [32, 32],
        },
        "model": {"backbone": backbone, "dense_units": [8]},
        "train": {"epochs": 1},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_an_unreachable_weights_server_is_one_whole_line_before_tensorflow(tmp_path, binary_tree):
    config = weights_config(
        tmp_path / "c.yaml", binary_tree, {"name": "mobilenet_v3_small", "weights": "imagenet"}
    )
    port = free_port()  # nothing listens there
    code, out, err = cnnclf(
        "train",
        "--config",
        config,
        "--out",
        tmp_path / "b",
        CNNCLF_OFFLINE="0",
        CNNCLF_WEIGHTS_URL=f"http://127.0.0.1:{port}/",
        KERAS_HOME=str(tmp_path / "keras"),
    )
    spec = BACKBONES["mobilenet_v3_small"]
    cached = tmp_path / "keras" / "models" / spec.imagenet_file
    url = f"http://127.0.0.1:{port}/mobilenet_v3/{spec.imagenet_file}"
    assert code == 2 and out == ""
    assert err == [
        f"error: model.backbone.weights: imagenet needs {spec.imagenet_file} and it is not in "
        f"Keras' cache (the download from {url} failed: Connection refused); copy that file "
        f"to {cached}, or set model.backbone.weights to the path of a weights file (.h5 / "
        ".weights.h5) for mobilenet_v3_small without its top, or to none"
    ]
    assert not list((tmp_path / "keras" / "models").iterdir())  # no partial file left


class _Weights(BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def weights_server(monkeypatch):
    """A local server answering every GET with `_Weights.body`; its URL is the weights URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Weights)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(backbones.WEIGHTS_URL_ENV, f"http://127.0.0.1:{server.server_port}")
    yield _Weights
    server.shutdown()
    server.server_close()


def test_a_download_is_hash_checked_then_renamed_into_the_cache(
    tmp_path, weights_server, monkeypatch
):
    import hashlib

    spec = BACKBONES["mobilenet_v3_small"]
    cached = tmp_path / "models" / spec.imagenet_file
    weights_server.body = b"the weights"
    # Keras' table, read only to check the hash, is replaced: no TensorFlow import here.
    monkeypatch.setattr(backbones, "_keras_hash", lambda _: hashlib.md5(b"other").hexdigest())
    with pytest.raises(ConfigError, match=r"does not have Keras' hash for it\); copy"):
        backbones.fetch_imagenet(spec, cached)
    assert not list(cached.parent.iterdir())

    monkeypatch.setattr(backbones, "_keras_hash", lambda _: hashlib.md5(b"the weights").hexdigest())
    digest = backbones.fetch_imagenet(spec, cached)
    assert cached.read_bytes() == b"the weights"
    assert digest == hashlib.sha256(b"the weights").hexdigest()
    assert [p.name for p in cached.parent.iterdir()] == [spec.imagenet_file]


def test_a_long_download_error_is_cut_at_a_word_not_mid_token():
    reason = backbones._download_error(ValueError("unknown url type: " + "word " * 60))
    assert reason.endswith("word ...") and len(reason) <= 164


def test_a_random_frozen_backbone_is_warned_about(tmp_path, binary_tree):
    from cnnclf.model.transfer import random_features_warning

    def config(**backbone):
        path = weights_config(
            tmp_path / "c.yaml", binary_tree, {"name": "mobilenet_v3_small", **backbone}
        )
        return load_config(path)

    warning = random_features_warning(config(weights="none"))
    assert warning and warning.startswith("warning: model.backbone.weights: none with ")
    assert "model.backbone.trainable: true" in warning
    assert random_features_warning(config(weights="none", trainable=True)) is None
    assert random_features_warning(config(weights="imagenet")) is None
