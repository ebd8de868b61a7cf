"""Memory: a model too big for the machine fails at config time, in milliseconds.

Why here: without this, such a model fails only after TensorFlow has loaded, with a MemoryError
or a ResourceExhaustedError and a long traceback.
"""

from __future__ import annotations

import os

from cnnclf.config.schema import Config
from cnnclf.errors import ConfigError

_BYTES_PER_VALUE = 4  # float32
# Copies of every weight that training holds: the weight, its gradient and the optimizer's
# slots (Adam: two moments; RMSprop: one average; SGD without momentum: none).
_WEIGHT_COPIES = {"adam": 4, "adamw": 4, "rmsprop": 3, "sgd": 2}
_FALLBACK_MEMORY = 2**40  # where the OS does not say how much memory it has


def estimate_training_memory(config: Config) -> dict[str, int]:
    """Estimates, in plain Python, the bytes that training this config's model needs.

    Why: a model that cannot fit otherwise fails only after TensorFlow has loaded (seconds later),
    with a MemoryError or ResourceExhaustedError and a long traceback; counting weights and
    activations here refuses it in milliseconds, naming the key to change.

    It is rough and errs low, so that refusing on it is safe. The weights are exact (they match
    Keras' `count_params()`) except that the class count is unknown at config time, so the
    output layer gets 1 unit (two classes). Activations are the float32 forward outputs one
    batch keeps for backpropagation (input, each convolution, each pooling, each Dense layer);
    the backward pass's own buffers, the data pipeline and TensorFlow's workspace are left out,
    which more than covers float16 mixed precision halving the activations.

    Args:
        config: a validated config.

    Returns:
        Bytes by the key that drives them: `model.conv_blocks` (convolution weights with their
        gradients and optimizer slots), `model.dense_units` (the same for Dense layers, output
        included), `data.batch_size` (one batch of activations), plus `per_image` (one image's
        activations) and `features` (what reaches the first Dense layer).

    Example:
        estimate_training_memory(load_config("configs/demo.yaml"))["model.dense_units"]
    """
    height, width = config.data.image_size
    channels = 3 if config.data.color_mode == "rgb" else 1
    m = config.model
    copies = _WEIGHT_COPIES[config.train.optimizer] * _BYTES_PER_VALUE
    conv_weights = 0
    values_per_image = 2 * height * width * channels  # the input and its rescaled copy
    if m.backbone:
        # The backbone's weights exactly; its activations only as the input (erring low).
        from cnnclf.model.backbones import BACKBONES

        spec = BACKBONES[m.backbone.name]
        conv_weights, channels, height, width = spec.params, spec.features, 1, 1
    for block in [] if m.backbone else m.conv_blocks:
        k, filters, pool = block.kernel_size, block.filters, block.pool_size
        conv_weights += k * k * channels * filters + (4 * filters if m.batch_norm else filters)
        if m.padding == "valid":
            height, width = height - k + 1, width - k + 1
        values_per_image += height * width * filters * (2 if m.batch_norm else 1)
        height, width, channels = height // pool, width // pool, filters
        values_per_image += height * width * channels
    features = height * width * channels if m.pooling == "flatten" else channels
    dense_weights, inputs = 0, features
    for units in [*m.dense_units, 1]:
        dense_weights += inputs * units + units
        values_per_image += units
        inputs = units
    per_image = values_per_image * _BYTES_PER_VALUE
    return {
        "model.conv_blocks": conv_weights * copies,
        "model.dense_units": dense_weights * copies,
        "data.batch_size": per_image * config.data.batch_size,
        "per_image": per_image,
        "features": features,
    }


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return _FALLBACK_MEMORY


def check_memory(config: Config) -> None:
    """Refuses a config whose training would not fit this machine's memory, naming the key
    that drives the estimate most."""
    parts = estimate_training_memory(config)
    total = sum(parts[key] for key in ("model.conv_blocks", "model.dense_units", "data.batch_size"))
    limit = _physical_memory()
    if total <= limit:
        return
    key = max(("model.conv_blocks", "model.dense_units", "data.batch_size"), key=parts.__getitem__)
    held = f"each held {_WEIGHT_COPIES[config.train.optimizer]} times by {config.train.optimizer}"
    if key == "model.conv_blocks":
        detail = f"{parts[key] / 1e9:,.1f} GB of convolution weights, {held}"
        advice = "use fewer filters or a smaller kernel_size"
    elif key == "model.dense_units":
        detail = (
            f"{parts[key] / 1e9:,.1f} GB of Dense weights, {held}; "
            f"{parts['features']:,} features reach the first"
        )
        advice = (
            "use fewer dense_units, model.pooling: global_average, or a smaller data.image_size"
        )
    elif parts["per_image"] > limit:
        key = "data.image_size"
        detail = f"{parts['per_image'] / 1e9:,.1f} GB of activations for a single image"
        advice = "use a smaller data.image_size or fewer filters"
    else:
        detail = (
            f"{parts[key] / 1e9:,.1f} GB of activations for a batch of {config.data.batch_size}"
        )
        advice = "use a smaller data.batch_size"
    raise ConfigError(
        f"{key}: training would need about {total / 1e9:,.1f} GB ({detail}), more "
        f"than the {limit / 1e9:.1f} GB of memory here; {advice}"
    )
