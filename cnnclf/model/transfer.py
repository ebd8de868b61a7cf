"""Transfer learning: what a run starts from (a backbone's weights, an earlier bundle) and its
phases (a frozen first phase, then optional fine-tuning at a low learning rate).

Why one module: the decisions "which layers are frozen when" and "what must match to reuse a
bundle's features" are made once, here, and train.py only asks. Everything that reads the
user's files runs before TensorFlow is imported, so a missing weights file or a mismatched
bundle costs milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnclf.config import Config
from cnnclf.errors import ConfigError

if TYPE_CHECKING:
    from cnnclf.model.backbones import WeightsSource

# What must be equal between a config and the bundle named by model.init_from for its feature
# layers to mean the same thing: (section, key) pairs of the dumped config.
_FEATURE_KEYS = {
    "backbone": (("model", "backbone"), ("data", "image_size"), ("data", "color_mode")),
    "conv_blocks": (
        ("model", "conv_blocks"),
        ("model", "padding"),
        ("model", "batch_norm"),
        ("data", "image_size"),
        ("data", "color_mode"),
        ("augment", "rescale"),
    ),
}


@dataclass(frozen=True)
class Phase:
    name: str  # "train" (train.epochs) or "fine_tune" (train.fine_tune)
    epochs: int
    learning_rate: float
    frozen: bool  # feature layers frozen (phase 1 of a backbone or init_from)
    unfreeze: str | int | None = None  # fine_tune only: all, or the top N weighted layers


@dataclass(frozen=True)
class Start:
    """What a run starts from, found before TensorFlow loads."""

    weights: WeightsSource | None = None  # for model.backbone
    init_from: Path | None = None  # a bundle folder
    init_from_run_id: str | None = None

    def to_json(self, config: Config) -> dict | None:
        if not config.model.backbone and not self.init_from:
            return None
        return {
            "backbone": (
                dict(
                    config.model.backbone.to_dict(),
                    weights=self.weights.to_json() if self.weights else None,
                )
                if config.model.backbone
                else None
            ),
            "init_from": (
                {"bundle": str(self.init_from), "run_id": self.init_from_run_id}
                if self.init_from
                else None
            ),
        }


def phases(config: Config) -> list[Phase]:
    backbone = config.model.backbone
    frozen = not backbone.trainable if backbone else bool(config.model.init_from)
    plan = [Phase("train", config.train.epochs, config.train.learning_rate, frozen)]
    tune = config.train.fine_tune
    if tune:
        plan.append(Phase("fine_tune", tune.epochs, tune.learning_rate, False, tune.unfreeze))
    return plan


def planned_epochs(config: Config) -> int:
    return sum(p.epochs for p in phases(config))


def prepare(config: Config) -> Start:
    """Checks and finds the files a run starts from; raises ConfigError naming the key."""
    from cnnclf.model.backbones import WeightsSource, resolve_weights

    if not config.model.init_from:
        return Start(resolve_weights(config.model.backbone) if config.model.backbone else None)
    # The bundle's feature layers replace the backbone's weights: none are needed (nor
    # downloaded) to build it.
    weights = WeightsSource("init_from") if config.model.backbone else None
    source = Path(config.model.init_from)
    _check_same_features(config, source)
    run_id = None
    manifest = source / "bundle.json"
    try:
        from cnnclf.bundle import SidecarError, read_json

        run_id = read_json(manifest).get("run_id")
    except (SidecarError, AttributeError):
        pass  # only recorded in the new bundle; load_bundle checks the manifest itself
    return Start(weights, source, run_id)


def _check_same_features(config: Config, source: Path) -> None:
    from cnnclf.bundle import CONFIG_FILE, MODEL_FILE
    from cnnclf.config import read_yaml

    key = "model.init_from"
    if not (source / MODEL_FILE).is_file() or not (source / CONFIG_FILE).is_file():
        raise ConfigError(
            f"{key}: {source} is not a cnnclf bundle (it needs {MODEL_FILE} and "
            f"{CONFIG_FILE}); give the folder cnnclf train wrote"
        )
    saved = read_yaml(source / CONFIG_FILE)
    mine = config.to_dict()
    kind = "backbone" if config.model.backbone else "conv_blocks"
    theirs_kind = "backbone" if (saved.get("model") or {}).get("backbone") else "conv_blocks"
    if kind != theirs_kind:
        raise ConfigError(
            f"{key}: {source} was trained with model.{theirs_kind} but this "
            f"config uses model.{kind}; the feature layers must be the same kind"
        )
    for section, name in _FEATURE_KEYS[kind]:
        theirs = (saved.get(section) or {}).get(name)
        ours = mine[section][name]
        if section == "model" and name == "backbone":
            theirs, ours = (theirs or {}).get("name"), ours["name"]
        if isinstance(ours, float) and isinstance(theirs, (int, float)):
            same = abs(ours - theirs) <= 1e-12 * max(1.0, abs(ours))
        else:
            same = theirs == ours
        if not same:
            raise ConfigError(
                f"{key}: {section}.{name} is {ours!r} here but {theirs!r} in "
                f"{source}; the feature layers must match the bundle's (set "
                f"{section}.{name} to {theirs!r})"
            )


def copy_features(model, source: Path) -> None:
    """Copies the feature layers' weights of the bundle at `source` into `model`."""
    from cnnclf.bundle import load_bundle
    from cnnclf.model.build import feature_layers

    source_model: Any = load_bundle(source).model  # a keras.Model
    for layer in feature_layers(model):
        if not layer.weights:
            continue
        try:
            donor = source_model.get_layer(layer.name)
            layer.set_weights(donor.get_weights())
        except ValueError as exc:
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise ConfigError(
                f"model.init_from: layer {layer.name} of {source} does not fit this model ({first})"
            ) from None


def weighted_layers(model) -> list:
    """Feature layers holding weights, in order, looking inside a nested backbone; without
    BatchNormalization (kept frozen: see `apply_phase`) and the fixed grayscale layer."""
    import keras

    from cnnclf.model.backbones import GRAY_TO_RGB_LAYER
    from cnnclf.model.build import feature_layers

    return [
        layer
        for layer in _flat_layers(feature_layers(model))
        if layer.weights
        and layer.name != GRAY_TO_RGB_LAYER
        and not isinstance(layer, keras.layers.BatchNormalization)
    ]


def apply_phase(model, phase: Phase) -> str:
    """Sets which feature layers train in `phase`; returns a line saying what changed.

    BatchNormalization layers inside the features stay frozen (in Keras 3 that also means
    inference mode) in every phase, as Keras' transfer-learning guide advises: updating their
    statistics from a few small batches wrecks what the pretrained layers learned.
    """
    import keras

    from cnnclf.model.build import feature_layers

    features = feature_layers(model)
    if phase.name == "train":
        if phase.frozen:
            for layer in features:
                layer.trainable = False
            return "feature layers frozen: training the new head"
        for layer in _batch_norm_layers(features):  # trainable: true trains all but these
            layer.trainable = False
        return ""
    candidates = weighted_layers(model)
    chosen = layers_to_unfreeze(candidates, phase)
    for layer in features:
        if isinstance(layer, keras.Model):
            layer.trainable = True  # the container must train for any layer inside to
            for inner in layer.layers:
                inner.trainable = False
        else:
            layer.trainable = False
    for layer in chosen:  # never BatchNormalization nor the fixed grayscale layer
        layer.trainable = True
    which = "all" if phase.unfreeze == "all" else f"the top {len(chosen)}"
    # The range test applies the phase before it has found the rate: "auto" is still a string.
    rate = phase.learning_rate
    shown = f"{rate:g}" if isinstance(rate, (int, float)) else "to be found (auto)"
    return (
        f"fine-tuning: {which} of {len(candidates)} feature layers with weights unfrozen "
        f"(BatchNormalization stays frozen), learning rate {shown}"
    )


def layers_to_unfreeze(candidates: list, phase: Phase) -> list:
    """The layers a fine-tune phase trains, out of `weighted_layers`: all, or the top N (all
    of them when N is more than there are)."""
    if phase.unfreeze == "all":
        return candidates
    assert phase.unfreeze is not None  # a fine_tune phase always says how many
    return candidates[-int(phase.unfreeze) :]


def _batch_norm_layers(features: list) -> list:
    import keras

    return [
        layer
        for layer in _flat_layers(features)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


def _flat_layers(features: list) -> list:
    """The feature layers with a nested backbone (a keras.Model) replaced by its layers."""
    import keras

    flat: list = []
    for layer in features:
        flat += layer.layers if isinstance(layer, keras.Model) else [layer]
    return flat


def random_features_warning(config: Config) -> str | None:
    """A warning for a backbone that is random (`weights: none`) and frozen in every phase.

    Such a run trains the head on the features of random filters, which carry little about the
    images: its loss barely moves. Warned, not refused: it is also the quickest way to try a
    backbone's plumbing (the tests do).
    """
    backbone = config.model.backbone
    if not backbone or backbone.weights != "none" or config.model.init_from:
        return None
    if not all(phase.frozen for phase in phases(config)):
        return None
    return (
        "warning: model.backbone.weights: none with trainable: false trains only the head, on "
        "the features of a random backbone, and learns little; set model.backbone.trainable: "
        "true (or add train.fine_tune), or weights: imagenet"
    )


def suggest_backbone(config: Config, counts: dict[str, int]) -> str | None:
    """A hint for small data sets trained from scratch (under 1000 images a class)."""
    from cnnclf.data.check import SMALL_CLASS

    if config.model.backbone or config.model.init_from or not counts:
        return None
    smallest = min(counts.values())
    if smallest >= SMALL_CLASS:
        return None
    return (
        f"hint: {smallest} training images in the smallest class is few for a model "
        f"trained from scratch; {small_data_advice(config.data.image_size, config.data.color_mode)}"
    )


def small_data_advice(image_size: list[int] | tuple[int, int] | None, color_mode: str) -> str:
    """What to start from instead of random weights when classes are small, for these images.

    A pretrained ImageNet backbone refuses images under its minimum size and learned from colour
    photographs: tiny images cannot use one at all, and grayscale ones (the channel repeated as
    RGB) gain less, so for those an earlier bundle trained on similar images comes first; on
    28x28 grayscale Fashion-MNIST it was worth 8 points at 25 images a class
    (docs/benchmarks/2026-11-25-transfer.md).

    Args:
        image_size: the model's [height, width]; None when unknown (the backbone advice).
        color_mode: "rgb" or "grayscale".

    Returns:
        The advice, to follow "N images in the smallest class is few ...; ".

    Example: `small_data_advice([28, 28], "grayscale")` starts "28x28 images are too small".
    """
    from cnnclf.model.backbones import BACKBONES

    min_side = min(b.min_size for b in BACKBONES.values())
    if image_size is not None and min(image_size) < min_side:
        height, width = image_size
        return (
            f"{height}x{width} images are too small for a pretrained ImageNet backbone (at "
            f"least {min_side} a side): start from a bundle trained on similar images "
            "(model.init_from), or add images or augmentation"
        )
    if color_mode == "grayscale":
        return (
            "start from a bundle trained on similar images (model.init_from), or try a "
            "pretrained backbone, which sees grayscale as repeated RGB and helps most on "
            "photograph-like images: see configs/transfer.yaml (model.backbone)"
        )
    return (
        "a pretrained backbone usually does much better: see configs/transfer.yaml (model.backbone)"
    )
