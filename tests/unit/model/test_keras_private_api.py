"""The private Keras and TensorFlow APIs cnnclf rests on, checked so an upgrade says so loudly.

- model/backbones.py reads each backbone's ImageNet file hash from its
  `keras.src.applications` module (Keras has no public API for it) and downloads the file from
  the folder that module names (written out in backbones.py, so no TensorFlow import comes first);
- tf_loader.seed_everything turns op determinism off again through
  `tensorflow.python.framework.config` (TensorFlow exports only the switch on).
"""

import hashlib
import importlib

import pytest

from cnnclf.model.backbones import BACKBONES

pytestmark = pytest.mark.slow  # imports TensorFlow and Keras

CHANGED = "{what} changed in this {library} ({version}): update {module} before upgrading"


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_module_still_holds_its_weight_hash_and_url(name):
    keras = pytest.importorskip("keras")
    spec = BACKBONES[name]
    changed = CHANGED.format(
        what=f"keras.src.applications.{spec.module}",
        library="Keras",
        version=keras.__version__,
        module="cnnclf/model/backbones.py",
    )
    try:
        module = importlib.import_module(f"keras.src.applications.{spec.module}")
    except ImportError as exc:
        pytest.fail(f"{changed}: {exc}")
    hashes = getattr(module, "WEIGHTS_HASHES", None)
    assert isinstance(hashes, dict) and spec.hash_key in hashes, changed
    assert len(hashes[spec.hash_key][1]) in (32, 64), changed  # MD5 or SHA-256, in hex
    base = getattr(module, "BASE_WEIGHT_PATH", None) or getattr(module, "BASE_WEIGHTS_PATH", None)
    assert isinstance(base, str) and base.startswith("https://"), changed


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_each_backbone_downloads_from_the_url_keras_would_use(name, monkeypatch):
    pytest.importorskip("keras")
    from cnnclf.model.backbones import WEIGHTS_URL_ENV, imagenet_url

    monkeypatch.delenv(WEIGHTS_URL_ENV, raising=False)
    spec = BACKBONES[name]
    module = importlib.import_module(f"keras.src.applications.{spec.module}")
    base = getattr(module, "BASE_WEIGHT_PATH", None) or module.BASE_WEIGHTS_PATH
    assert imagenet_url(spec) == base + spec.imagenet_file, CHANGED.format(
        what=f"keras.src.applications.{spec.module}'s weights URL",
        library="Keras",
        version=importlib.import_module("keras").__version__,
        module="cnnclf/model/backbones.py",
    )


def test_keras_file_hash_check_is_still_there(tmp_path):
    keras = pytest.importorskip("keras")
    from keras.src.utils import file_utils

    sample = tmp_path / "w.h5"
    sample.write_bytes(b"weights")
    md5 = "0a5ed9d3d2b3d2b7a5c5f1d8a0bd8e43"  # not the file's: must be refused
    changed = CHANGED.format(
        what="keras.src.utils.file_utils.validate_file",
        library="Keras",
        version=keras.__version__,
        module="cnnclf/model/backbones.py",
    )
    assert file_utils.validate_file(str(sample), md5) is False, changed
    right = hashlib.md5(b"weights").hexdigest()
    assert file_utils.validate_file(str(sample), right) is True, changed


def test_tensorflow_can_still_turn_op_determinism_off():
    tf = pytest.importorskip("tensorflow")
    from tensorflow.python.framework import config as tf_config

    changed = CHANGED.format(
        what="tensorflow.python.framework.config's op-determinism switch",
        library="TensorFlow",
        version=tf.__version__,
        module="cnnclf/tf_loader.py",
    )
    assert callable(getattr(tf_config, "is_op_determinism_enabled", None)), changed
    assert callable(getattr(tf_config, "disable_op_determinism", None)), changed
    was = tf_config.is_op_determinism_enabled()
    try:
        tf.config.experimental.enable_op_determinism()
        tf_config.disable_op_determinism()
        assert not tf_config.is_op_determinism_enabled(), changed
    finally:
        if was:
            tf.config.experimental.enable_op_determinism()
