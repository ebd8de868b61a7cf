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
import socket
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
DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class Backbone:
    name: str  # the config's model.backbone.name
    constructor: str  # attribute of keras.applications
    default_size: int  # the ImageNet training resolution: the default data.image_size
    min_size: int  # Keras refuses smaller inputs
    input_scaling: str  # what the model does to [0, 255] pixels before the backbone
    imagenet_file: str  # Keras' file name for the weights without the top
    module: str  # keras.src.applications module holding WEIGHTS_HASHES
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

    `imagenet` looks in Keras' cache first; a missing file is downloaded with Keras' own
    `get_file` (hash-checked), unless CNNCLF_OFFLINE=1 or the download fails: then one
    ConfigError names the file, where to put it, and the `weights: PATH` alternative.
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
    path = fetch_imagenet(spec, cached)
    return WeightsSource("imagenet", path, sha256_of(path))


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
    import importlib

    module = importlib.import_module(f"keras.src.applications.{spec.module}")
    return module.WEIGHTS_HASHES[spec.hash_key][1]


def _check_cached(spec: Backbone, cached: Path) -> str:
    """Keras' get_file checks a cached file's hash before using it; so does cnnclf, since a
    truncated or foreign file there would otherwise train as if it were ImageNet's. Returns
    the file's SHA-256 (read once: the files are up to 110 MB)."""
    from keras.src.utils import file_utils

    expected, digest = _keras_hash(spec), sha256_of(cached)
    same = (
        digest == expected
        if len(expected) == 64
        else file_utils.validate_file(str(cached), expected)
    )  # an MD5, as Keras' older files have
    if not same:
        raise ConfigError(
            f"model.backbone.weights: {cached} is not Keras' ImageNet file for "
            f"{spec.name} (its hash does not match: truncated or replaced); "
            "delete it so that it is downloaded again, or copy the right file "
            "there"
        )
    return digest


def fetch_imagenet(spec: Backbone, cached: Path) -> str:
    """Downloads the ImageNet file through Keras' get_file, which checks its hash."""
    import importlib

    from keras.utils import get_file

    module = importlib.import_module(f"keras.src.applications.{spec.module}")
    base = getattr(module, "BASE_WEIGHT_PATH", None) or module.BASE_WEIGHTS_PATH
    file_hash = _keras_hash(spec)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib has no timeout of its own here
    try:
        return get_file(
            spec.imagenet_file,
            base + spec.imagenet_file,
            cache_subdir=KERAS_CACHE_SUBDIR,
            file_hash=file_hash,
        )
    except Exception as exc:  # no network, a proxy, a bad hash: all mean "get the file"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise _missing_imagenet(spec, cached, f"the download failed: {first}") from None
    finally:
        socket.setdefaulttimeout(previous)


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
