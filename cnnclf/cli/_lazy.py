"""The CLI's one door to the modules that run TensorFlow (or Keras, ONNX Runtime, LiteRT).

Commands reach training, inference, export, serving and model loading only through these
functions, each importing its module when called, so that `cnnclf --help`, config errors and
every check that comes before a model loads answer without TensorFlow. A test
(tests/test_no_tensorflow.py) holds the CLI to it. Modules that never need TensorFlow (config,
data.layout, data.check, bundle metadata, serve.settings) are imported where they are used.
"""

from __future__ import annotations


def import_tensorflow(verbose: bool) -> None:
    """Imports TensorFlow quietly, or raises `TensorFlowMissing` (one line, exit code 1)."""
    from cnnclf.tf_loader import import_tensorflow as load

    load(verbose)


def load_bundle(model_dir, verbose: bool):
    """A Keras bundle, its model loaded."""
    from cnnclf.bundle import load_bundle as load

    import_tensorflow(verbose)
    return load(model_dir)


def load_export(path):
    """An export, run by its own runtime (TensorFlow only for SavedModels)."""
    from cnnclf.bundle.exported_models import load_export as load

    return load(path)


def training_run():
    from cnnclf.training import run

    return run


def lr_find():
    from cnnclf.training import lr_find

    return lr_find


def predict():
    from cnnclf.inference import predict

    return predict


def evaluate():
    from cnnclf.inference import evaluate

    return evaluate


def explain():
    from cnnclf.inference import explain

    return explain


def summary():
    from cnnclf.inference import summary

    return summary


def export():
    from cnnclf.bundle import export

    return export


def preview():
    from cnnclf.data import preview

    return preview


def serve_server():
    from cnnclf.serve import server

    return server
