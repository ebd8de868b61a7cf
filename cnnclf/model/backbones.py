"""Pretrained `keras.applications` backbones: which ones, their inputs, and their weight files.

One table (`BACKBONES`) says everything cnnclf knows about a backbone: the Keras constructor,
the default and minimum image size, how it scales its input (inside the saved model, so predict,
evaluate, serve and exports cannot get it wrong), and the name of Keras' own ImageNet weights
file without the classifier top. Config validation and the offline check read the table in
plain Python; only `build_backbone` and `fetch_imagenet` import Keras.

Every backbone takes pixels in [0, 255], as the data pipeline gives them: MobileNetV3,
EfficientNetV2 and ConvNeXt scale them with their own preprocessing layers
(`include_preprocessing=True`); ResNet50V2 gets a `Rescaling(1/127.5, offset=-1)` in front,
which is what `keras.applications.resnet_v2.preprocess_input` does.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnnclf.errors import ConfigError

if TYPE_CHECKING:
    from cnnclf.config import BackboneConfig

# Where Keras' get_file keeps downloads; `fetch_imagenet` looks there before downloading.
KERAS_CACHE_SUBDIR = "models"
# Set to 1 to forbid downloads: a missing ImageNet file is then an error before training.
OFFLINE_ENV = "CNNCLF_OFFLINE"
# Keras' weights folder (each backbone's file is in the sub-folder named like its Keras module);
# the variable replaces it, for a mirror inside a network that cannot reach Google's storage.
KERAS_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/"
WEIGHTS_URL_ENV = "CNNCLF_WEIGHTS_URL"
# Seconds without an answer (to connect, or between two reads) before a download is given up:
# short, so that a machine without network says so at once.
DOWNLOAD_TIMEOUT_S = 15


@dataclass(frozen=True)
class Backbone:
    name: str  # the config's model.backbone.name
    constructor: str  # attribute of keras.applications
    default_size: int  # the ImageNet training resolution: the default data.image_size
    min_size: int  # Keras refuses smaller inputs
    input_scaling: str  # what the model does to [0, 255] pixels before the backbone
    imagenet_file: str  # Keras' file name for the weights without the top
    module: str  # keras.src.applications module holding WEIGHTS_HASHES (and the URL folder)
    hash_key: str  # key of that module's WEIGHTS_HASHES
    variables: int  # arrays in a .weights.h5 saved from it without its top
    params: int  # without its top, at any input size
    features: int  # channels of its last feature map (what global pooling passes on)
    # Keyword arguments of the constructor beyond include_top/weights/input_shape/name.
    options: tuple = ()


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "mobilenet_v3_small",
            "MobileNetV3Small",
            224,
            32,
            "its own Rescaling to [-1, 1]",
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            "mobilenet_v3",
            "small_224_1.0_float",
            206,
            939120,
            576,
            (("include_preprocessing", True),),
        ),
        Backbone(
            "mobilenet_v3_large",
            "MobileNetV3Large",
            224,
            32,
            "its own Rescaling to [-1, 1]",
            "weights_mobilenet_v3_large_224_1.0_float_no_top_v2.h5",
            "mobilenet_v3",
            "large_224_1.0_float",
            262,
            2996352,
            960,
            (("include_preprocessing", True),),
        ),
        Backbone(
            "efficientnet_v2_b0",
            "EfficientNetV2B0",
            224,
            32,
            "its own Rescaling to [-1, 1]",
            "efficientnetv2-b0_notop.h5",
            "efficientnet_v2",
            "b0",
            359,
            5919312,
            1280,
            (("include_preprocessing", True),),
        ),
        Backbone(
            "resnet50_v2",
            "ResNet50V2",
            224,
            32,
            "Rescaling(1/127.5, offset=-1) added in front",
            "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "resnet",
            "resnet50v2",
            270,
            23564800,
            2048,
        ),
        Backbone(
            "convnext_tiny",
            "ConvNeXtTiny",
            224,
            32,
            "its own ImageNet mean/std Normalization",
            "convnext_tiny_notop.h5",
            "convnext",
            "convnext_tiny",
            180,
            27820128,
            768,
            (("include_preprocessing", True),),
        ),
    )
}

# tf2onnx cannot convert these (measured with tf2onnx 1.17): EfficientNetV2's Normalization
# constants go missing from the graph and ConvNeXt's exact GELU needs Erfc. TFLite and
# SavedModel exports of them work.
NO_ONNX = {
    "efficientnet_v2_b0": "its Normalization layer's constants are lost by tf2onnx",
    "convnext_tiny": "tf2onnx has no Erfc, which its GELU uses",
}

# Layer names inside a cnnclf model: feature layers are everything before the head.
GRAY_TO_RGB_LAYER = "gray_to_rgb"
INPUT_SCALING_LAYER = "backbone_input"


def names() -> str:
    return ", ".join(BACKBONES)


def keras_cache_dir() -> Path:
    """The folder Keras' get_file uses for cache_subdir "models" (KERAS_HOME or ~/.keras)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / KERAS_CACHE_SUBDIR


@dataclass(frozen=True)
class WeightsSource:
    """What the backbone starts from: recorded in bundle.json."""

    kind: str  # imagenet | file | none
    path: str | None = None  # the weights file loaded, when there is one
    sha256: str | None = None

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "file": os.path.basename(self.path) if self.path else None,
            "sha256": self.sha256,
        }


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_weights(backbone: BackboneConfig) -> WeightsSource:
    """Finds the weights file a backbone config needs, before TensorFlow trains anything.

    `imagenet` looks in Keras' cache first; a missing file is downloaded from Keras' URL (no
    TensorFlow import first) and checked against Keras' hash, unless CNNCLF_OFFLINE=1 or the
    download fails: then one ConfigError names the file, where to put it, and the
    `weights: PATH` alternative.
    """
    weights = backbone.weights
    if weights == "none":
        return WeightsSource("none")
    if weights != "imagenet":
        _check_weights_file(weights, BACKBONES[backbone.name])
        return WeightsSource("file", weights, sha256_of(weights))
    spec = BACKBONES[backbone.name]
    cached = keras_cache_dir() / spec.imagenet_file
    if cached.is_file():
        return WeightsSource("imagenet", str(cached), _check_cached(spec, cached))
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise _missing_imagenet(spec, cached, f"{OFFLINE_ENV} is set")
    return WeightsSource("imagenet", str(cached), fetch_imagenet(spec, cached))


def _check_weights_file(path: str, spec: Backbone) -> None:
    """A Keras 3 `.weights.h5` of another model only warns when loaded (see
    `load_weights_exactly`): count its arrays here, before TensorFlow loads. Legacy `.h5`
    files (Keras' own ImageNet layout) are checked by Keras itself, loudly, when loaded."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            arrays = []
            f.visititems(
                lambda _, item: arrays.append(1) if isinstance(item, h5py.Dataset) else None
            )
    except OSError as exc:
        raise _bad_file(path, spec, f"not an HDF5 file: {exc}") from None
    if path.endswith(".weights.h5") and len(arrays) != spec.variables:
        raise _bad_file(
            path, spec, f"it holds {len(arrays)} arrays, {spec.name} has {spec.variables}"
        )


def _bad_file(path: str, spec: Backbone, why: str) -> ConfigError:
    return ConfigError(
        f"model.backbone.weights: {path} does not fit {spec.name} without its top ({why}); "
        f"give a weights file saved from keras.applications.{spec.constructor}"
        "(include_top=False)"
    )


def _missing_imagenet(spec: Backbone, cached: Path, why: str) -> ConfigError:
    return ConfigError(
        f"model.backbone.weights: imagenet needs {spec.imagenet_file} and it is not in Keras' "
        f"cache ({why}); copy that file to {cached}, or set model.backbone.weights to the path "
        f"of a weights file (.h5 / .weights.h5) for {spec.name} without its top, or to none"
    )


def _keras_hash(spec: Backbone) -> str:
    """The hash Keras' own table gives the file (importing Keras imports TensorFlow: quietly)."""
    import importlib

    from cnnclf.tf_loader import import_tensorflow

    import_tensorflow()
    module = importlib.import_module(f"keras.src.applications.{spec.module}")
    return module.WEIGHTS_HASHES[spec.hash_key][1]


def _check_cached(spec: Backbone, cached: Path) -> str:
    """Keras' get_file checks a cached file's hash before using it; so does cnnclf, since a
    truncated or foreign file there would otherwise train as if it were ImageNet's. Returns
    the file's SHA-256 (read once: the files are up to 110 MB)."""
    digest = _keras_digest(spec, cached)
    if digest is None:
        raise ConfigError(
            f"model.backbone.weights: {cached} is not Keras' ImageNet file for "
            f"{spec.name} (its hash does not match: truncated or replaced); "
            "delete it so that it is downloaded again, or copy the right file "
            "there"
        )
    return digest


def _keras_digest(spec: Backbone, path: Path) -> str | None:
    """The file's SHA-256 if it has the hash Keras gives the backbone's file, else None."""
    expected = _keras_hash(spec)
    sha256, md5 = hashlib.sha256(), hashlib.md5()  # Keras' older files have an MD5
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha256.update(chunk)
            md5.update(chunk)
    same = expected == (sha256 if len(expected) == 64 else md5).hexdigest()
    return sha256.hexdigest() if same else None


def imagenet_url(spec: Backbone) -> str:
    """Where Keras downloads the backbone's file from (or the same path under the mirror)."""
    base = os.environ.get(WEIGHTS_URL_ENV) or KERAS_WEIGHTS_URL
    return f"{base.rstrip('/')}/{spec.module}/{spec.imagenet_file}"


def fetch_imagenet(spec: Backbone, cached: Path) -> str:
    """Downloads the ImageNet file into Keras' cache, checks its hash, returns its SHA-256.

    Why not Keras' `get_file`: it imports TensorFlow (most of a minute on a cold start, and its
    log lines) before trying the network, has no timeout, and prints its own progress. The file
    is written beside `cached` and renamed into place only once its hash is right.
    """
    import logging
    import urllib.request

    url = imagenet_url(spec)
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f".{cached.name}.{os.getpid()}.partial")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as answer:
            size = answer.headers.get("Content-Length")
            logging.getLogger("cnnclf").info(
                "downloading %s's ImageNet weights%s from %s to %s",
                spec.name,
                f" ({int(size) / 1e6:.0f} MB)" if size and size.isdigit() else "",
                url,
                cached,
            )
            with open(partial, "wb") as out:
                while chunk := answer.read(1 << 20):
                    out.write(chunk)
        digest = _keras_digest(spec, partial)
        if digest is None:
            raise _missing_imagenet(
                spec, cached, f"what {url} sent does not have Keras' hash for it"
            )
        os.replace(partial, cached)
        return digest
    except (OSError, ValueError) as exc:  # no network, a proxy, an HTTP error, a bad URL
        raise _missing_imagenet(
            spec, cached, f"the download from {url} failed: {_download_error(exc)}"
        ) from None
    finally:
        partial.unlink(missing_ok=True)


def _download_error(exc: BaseException) -> str:
    """Why a download failed, whole and on one line (`Connection refused`, `HTTP 404 Not
    Found`, `no answer within 15 s`), however long urllib's own text is."""
    import urllib.error

    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer within {DOWNLOAD_TIMEOUT_S} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    text = " ".join(str(reason).split()) or type(reason).__name__
    return text if len(text) <= 160 else text[:160].rsplit(" ", 1)[0] + " ..."


def build_backbone(name: str, image_size, weights_path: str | None):
    """The backbone without its top (a nested model), its weights loaded from a file.

    Built with weights=None and then loaded, so that ImageNet files and user files go through
    the same code (Keras' own `load_weights`, which is what weights="imagenet" calls).
    """
    import keras

    spec = BACKBONES[name]
    height, width = image_size
    constructor = getattr(keras.applications, spec.constructor)
    # Keras' own model name is kept: EfficientNetV2 looks its blocks up by it.
    model = constructor(
        include_top=False, weights=None, input_shape=(height, width, 3), **dict(spec.options)
    )
    if weights_path:
        load_weights_exactly(model, weights_path, name, spec)
    return model


def load_weights_exactly(model, path: str, name: str, spec: Backbone) -> None:
    """Loads `path` into `model` or raises ConfigError: every variable must come from the file.

    Why not just `load_weights`: for a `.weights.h5` file of another model Keras only warns
    ("Skipping ... no matching group") and leaves fresh random weights, which would then train
    as if pretrained. Any warning while loading is refused (`resolve_weights` has counted
    the file's arrays already, before TensorFlow loaded).
    """
    import warnings

    def fail(why: str) -> ConfigError:
        return _bad_file(path, spec, why)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model.load_weights(path)
        except Exception as exc:
            raise fail((str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]) from None
    loud = [w for w in caught if "keras" in (w.filename or "") and "sav" in w.filename]
    if loud:
        raise fail(str(loud[0].message).splitlines()[0][:200])


def input_layers(name: str, channels: int) -> list:
    """Layers between the image input and the backbone: colour, then scaling.

    A grayscale image feeds an RGB backbone through a fixed 1x1 convolution with weights of
    one (the channel repeated three times): a built-in layer, so the model still loads with
    safe_mode=True and exports to ONNX and TFLite, which a Lambda would not.
    """
    import keras
    from keras import layers

    stack = []
    if channels == 1:
        stack.append(
            layers.Conv2D(
                3,
                1,
                use_bias=False,
                trainable=False,
                kernel_initializer=keras.initializers.Ones(),
                name=GRAY_TO_RGB_LAYER,
            )
        )
    if BACKBONES[name].constructor == "ResNet50V2":
        stack.append(layers.Rescaling(1 / 127.5, offset=-1.0, name=INPUT_SCALING_LAYER))
    return stack
