"""Importing TensorFlow on our terms: late (it is slow) and quiet (no C++/absl log spam).

Only the functions that really need TensorFlow call `import_tensorflow()`, so `cnnclf --help`,
config validation and every error path stay fast.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

from cnnclf.errors import CnnclfError


def import_tensorflow(verbose: bool = False):
    """Returns the `tensorflow` module, with its logging silenced unless `verbose`.

    The environment variables only take effect before TensorFlow's first import; a value the user
    set explicitly is respected.
    """
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
        os.environ.setdefault("GLOG_minloglevel", "3")
    try:
        if "tensorflow" in sys.modules or verbose:
            import tensorflow as tf
        else:
            with _stderr_captured() as captured:
                try:
                    import tensorflow as tf
                except BaseException as exc:
                    if not is_tensorflow_missing(exc):
                        sys.stderr.write(captured())
                    raise
    except ImportError as exc:
        if is_tensorflow_missing(exc):
            raise TensorFlowMissing() from None
        raise

    if not verbose:
        tf.get_logger().setLevel(logging.ERROR)
        logging.getLogger("absl").setLevel(logging.ERROR)
    return tf


class TensorFlowMissing(CnnclfError):
    """A command that needs TensorFlow ran where the `cpu`/`gpu` extra is not installed."""

    def __init__(self):
        super().__init__(
            "cnnclf needs TensorFlow: pip install 'cnnclf[cpu]' (CPU-only build) "
            "or 'cnnclf[gpu]' (CUDA build); predicting from an ONNX or TFLite "
            "export needs only onnxruntime or ai-edge-litert"
        )


def is_tensorflow_missing(exc: BaseException) -> bool:
    """True for the ImportError of an absent TensorFlow (also when raised via `import keras`)."""
    return isinstance(exc, ImportError) and (exc.name or "").split(".")[0] == "tensorflow"


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seeds Python, NumPy and TensorFlow; optionally makes TensorFlow ops deterministic.

    Op determinism is opt-in because it costs a good part of training throughput (see the
    benchmark pages: scripts/bench.py, determinism section).
    """
    tf = import_tensorflow()
    import keras

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    else:
        # The switch is process-wide: a run after a deterministic one in the same process
        # (the package API, a test session) must not inherit it, nor Keras' refusal of XLA.
        # TensorFlow exports no way back; Keras reads the same private module.
        try:
            from tensorflow.python.framework import config as tf_config

            if tf_config.is_op_determinism_enabled():
                tf_config.disable_op_determinism()
        except (ImportError, AttributeError):
            pass


@contextlib.contextmanager
def quiet_native_stderr(verbose: bool = False):
    """Hides what native libraries (TFLite's XNNPACK notice, ...) write straight to fd 2."""
    if verbose:
        yield
        return
    with _stderr_captured():
        yield


@contextlib.contextmanager
def _stderr_captured():
    """Redirects file descriptor 2 while TensorFlow loads its C++ libraries.

    TensorFlow 2.21 writes absl's "All log messages before absl::InitializeLog()" and oneDNN
    notices straight to fd 2 during import, ignoring TF_CPP_MIN_LOG_LEVEL. The text is kept so a
    failed import can still show it.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)

        def captured() -> str:
            sink.seek(0)
            return sink.read().decode("utf-8", "replace")

        try:
            yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_keras_warnings() -> None:
    """Silences Keras warnings that our pipeline triggers by design, not by user error."""
    import warnings

    # Our datasets are shuffled inside tf.data, which Keras cannot see.
    warnings.filterwarnings("ignore", message=r".*`shuffle=True` was passed.*")
    # Skipping undecodable files makes the epoch length unknown until the first epoch ends.
    warnings.filterwarnings("ignore", message=r".*Your input ran out of data.*")
