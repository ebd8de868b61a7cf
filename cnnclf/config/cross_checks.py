"""Checks across keys: values each valid alone that cannot work together.

They run on a config whose sections are each valid, so they can read it by attribute; every
error names the key to change.
"""

from __future__ import annotations

from cnnclf.config.memory import check_memory
from cnnclf.config.schema import SCRATCH_ONLY, Config
from cnnclf.errors import ConfigError


def check_pretrained_keys(config: Config, given: set[str]) -> None:
    """Refuses fine-tuning with nothing pretrained, and from-scratch keys beside a backbone.

    Why refuse rather than ignore: a user who wrote both conv_blocks and backbone expects one
    of them to be used, and silently training the other is the one wrong answer.
    """
    backbone, fine_tune = config.model.backbone, config.train.fine_tune
    if fine_tune and not backbone and not config.model.init_from:
        raise ConfigError(
            "train.fine_tune: there is nothing pretrained to fine-tune; set "
            "model.backbone or model.init_from, or remove train.fine_tune"
        )
    if not backbone:
        return
    for key in SCRATCH_ONLY:
        if key in given:
            scales = " and scales its own input" if key == "augment.rescale" else ""
            raise ConfigError(
                f"{key}: does not apply with model.backbone (the backbone "
                f"replaces the conv_blocks model{scales}); "
                f"remove {key} or model.backbone"
            )


def check_across_sections(config: Config) -> None:
    """Image size against the backbone or the conv blocks, XLA against determinism, memory."""
    _check_backbone_size(config)
    _check_conv_geometry(config)
    if config.train.jit_compile is True and config.train.deterministic:
        raise ConfigError(
            "train.jit_compile: true does not work with train.deterministic: "
            "true (Keras turns XLA off under TensorFlow's op determinism: not "
            "every XLA kernel is deterministic); set train.jit_compile: auto or "
            "false"
        )
    check_memory(config)


def _check_backbone_size(config: Config) -> None:
    if config.model.backbone is None:
        return
    from cnnclf.model.backbones import BACKBONES

    spec = BACKBONES[config.model.backbone.name]
    if min(config.data.image_size) < spec.min_size:
        raise ConfigError(
            f"data.image_size: {config.data.image_size} is too small for "
            f"{spec.name}; each side must be at least {spec.min_size} (its "
            f"default is {spec.default_size})"
        )


def _check_conv_geometry(config: Config) -> None:
    """Each kernel fits the feature map it convolves, and every block leaves one to pool."""
    height, width = config.data.image_size
    blocks = [] if config.model.backbone else config.model.conv_blocks
    for i, block in enumerate(blocks):
        k, p = block.kernel_size, block.pool_size
        if k > min(height, width):
            where = "data.image_size" + (" after the blocks before it" if i else "")
            raise ConfigError(
                f"model.conv_blocks[{i}].kernel_size: must be at most the side of the "
                f"{height}x{width} feature map it convolves ({where}), got {k}"
            )
        if config.model.padding == "valid":
            height, width = height - k + 1, width - k + 1
        height, width = height // p, width // p
        if height < 1 or width < 1:
            raise ConfigError(
                f"data.image_size: {config.data.image_size} is too small for model.conv_blocks "
                f"(block {i} leaves nothing to pool); use a larger image_size, fewer blocks, "
                "or model.padding: same"
            )
