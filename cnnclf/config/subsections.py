"""The typed sub-sections: mappings nested inside a section (model.backbone, model.conv_blocks
items, train.early_stopping, train.fine_tune).

Each is a frozen dataclass whose fields carry a checker and help text, exactly like the
sections, so one parser (parse.py) validates both and errors name the full key path. How a
value may be written in short (`backbone: resnet50_v2`, `early_stopping: true`) is decided in
defaults.py, not here.

Code reads them by attribute (`config.model.backbone.name`). Item access and equality with a
plain dict are kept because configs were dicts before they were typed: scripts and tests
written then (`config.train.early_stopping["patience"]`) keep working.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from cnnclf.config import checks
from cnnclf.config.checks import setting


class SubSection:
    """Read-only dict-like access and dict equality for a sub-section dataclass."""

    @classmethod
    def allowed(cls) -> str:
        """What the value must be, as errors word it ("null or a mapping like {...}")."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def __getitem__(self, key: str) -> Any:
        if key not in {f.name for f in dataclasses.fields(self)}:  # type: ignore[arg-type]
            raise KeyError(key)
        return getattr(self, key)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SubSection):
            return type(self) is type(other) and self.to_dict() == other.to_dict()
        if isinstance(other, dict):
            return self.to_dict() == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash((type(self), tuple(self.to_dict().items())))


def _backbone_names() -> str:
    from cnnclf.model.backbones import names

    return names()


@dataclass(frozen=True, eq=False)
class BackboneConfig(SubSection):
    """A pretrained keras.applications model used instead of model.conv_blocks."""

    name: str = setting(
        None,
        checks.backbone_name,
        "the keras.applications model: mobilenet_v3_small, mobilenet_v3_large, "
        "efficientnet_v2_b0, resnet50_v2 or convnext_tiny",
        kind="str",
        required=lambda: f", one of {_backbone_names()}",
    )
    weights: str = setting(
        "imagenet",
        checks.backbone_weights,
        "imagenet (Keras' ImageNet weights, downloaded once), none (random), or the path of "
        "a .h5 / .weights.h5 file",
        kind="str",
    )
    trainable: bool = setting(
        False,
        checks.boolean,
        "train the backbone's weights in the first phase too (false: only the head trains "
        "until train.fine_tune)",
        kind="bool",
    )

    @classmethod
    def allowed(cls) -> str:
        return f"null, a name ({_backbone_names()}) or a mapping {{name, weights, trainable}}"


@dataclass(frozen=True, eq=False)
class ConvBlock(SubSection):
    """One Conv2D + ReLU + MaxPooling2D block of the from-scratch model."""

    filters: int = setting(
        None,
        checks.integer(1, checks.MAX_UNITS),
        "convolution filters, at most 65536",
        kind="int",
        required=" (number of convolution filters)",
    )
    kernel_size: int = setting(
        3,
        checks.integer(1, checks.MAX_IMAGE_SIDE),
        "side of the square convolution kernel, at most the side of the feature map",
        kind="int",
    )
    pool_size: int = setting(
        2,
        checks.integer(1, checks.MAX_IMAGE_SIDE),
        "side of the MaxPooling2D window (and its stride)",
        kind="int",
    )

    EXAMPLE = "{filters: 32, kernel_size: 3, pool_size: 2}"

    @classmethod
    def allowed(cls) -> str:
        return f"a mapping like {cls.EXAMPLE}"

    @classmethod
    def allowed_list(cls) -> str:
        return f"a non-empty list of blocks like {cls.EXAMPLE}"


@dataclass(frozen=True, eq=False)
class EarlyStoppingConfig(SubSection):
    """Stop a phase when the monitored metric stops improving."""

    monitor: str = setting(
        "val_loss",
        checks.choice(*checks.MONITORS),
        "the metric watched: val_loss, val_accuracy, loss, accuracy (multi-label: val_auc, auc)",
        kind="str",
    )
    patience: int = setting(
        5, checks.integer(1), "epochs without improvement before stopping", kind="int"
    )
    min_delta: float = setting(
        0.0, checks.number(0), "the smallest change that counts as an improvement", kind="float"
    )
    restore_best_weights: bool = setting(
        True,
        checks.boolean,
        "keep the best epoch's weights rather than the last one's",
        kind="bool",
    )

    @classmethod
    def allowed(cls) -> str:
        return (
            "null or a mapping like {monitor: val_loss, patience: 5, min_delta: 0.0, "
            "restore_best_weights: true}"
        )


@dataclass(frozen=True, eq=False)
class FineTuneConfig(SubSection):
    """A second phase after train.epochs with the feature layers unfrozen."""

    # unfreeze was checked before epochs' value when fine_tune was a dict: keep which error a
    # doubly-wrong config gets.
    check_order: ClassVar[tuple[str, ...]] = ("unfreeze", "epochs", "learning_rate")

    epochs: int = setting(
        None,
        checks.integer(1),
        "epochs of fine-tuning, numbered on from the first phase",
        kind="int",
        required=" (epochs of fine-tuning after train.epochs)",
    )
    unfreeze: str | int = setting(
        "all",
        checks.unfreeze,
        "all, or the top N layers that hold weights (BatchNormalization stays frozen)",
        kind="all | int",
    )
    learning_rate: float = setting(
        1e-5,
        checks.learning_rate,
        "the optimizer's learning rate while fine-tuning; auto runs the range test (cnnclf "
        "lr-find) at the start of fine-tuning, from the first phase's best weights",
        kind="float | auto",
    )

    @classmethod
    def allowed(cls) -> str:
        return "null or a mapping {epochs: 10, unfreeze: all, learning_rate: 1.0e-5}"
