"""Builds the config-driven Keras Sequential CNN.

The model starts with `Rescaling` (or, with model.backbone, the backbone's own input scaling),
so the pixel scaling used in training travels inside `model.keras` and prediction cannot forget
it. No random augmentation layer is ever added here
(see augment.py for why).
"""

from __future__ import annotations

from cnnclf.config import Config


def output_layer_for(n_classes: int, multi_label: bool = False) -> tuple[int, str]:
    """(units, activation): one sigmoid unit for 2 classes, N softmax units for 3+, and one
    sigmoid per class for a multi-label model (each class is its own yes/no question, so
    two classes need two units there)."""
    if multi_label:
        return n_classes, "sigmoid"
    return (1, "sigmoid") if n_classes == 2 else (n_classes, "softmax")


def loss_for(config: Config, n_classes: int, multi_label: bool = False) -> str:
    """The Keras loss for the output layer: binary cross-entropy for one sigmoid (binary) or
    one per class (multi-label), categorical cross-entropy for softmax."""
    loss = config.train.loss
    binary = multi_label or n_classes == 2
    wanted = "binary_crossentropy" if binary else "categorical_crossentropy"
    if loss == "auto":
        return wanted
    if loss != wanted:
        from cnnclf.errors import ConfigError

        what = "a multi-label model" if multi_label else f"{n_classes} classes"
        raise ConfigError(
            f"train.loss: {loss} does not fit {what} "
            f"(the output layer is {output_layer_for(n_classes, multi_label)[1]}); use auto or "
            f"{wanted}"
        )
    return loss


def multi_label_loss(positive_weights: list[float] | None):
    """Binary cross-entropy over every class, each class's positive term weighted.

    Keras' `class_weight` weighs whole samples by their single class, which means nothing when
    an image has several labels (or none); a per-class weight on the positive term instead
    (PyTorch's `pos_weight`) says how much a missed label of that class costs against a false
    alarm. None gives plain binary cross-entropy.
    """
    import keras
    from keras import ops

    if positive_weights is None:
        return "binary_crossentropy"
    weights = ops.convert_to_tensor(positive_weights, dtype="float32")

    @keras.saving.register_keras_serializable(package="cnnclf")
    def weighted_binary_crossentropy(y_true, y_pred):
        y_true = ops.cast(y_true, "float32")
        y_pred = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1 - 1e-7)
        per_class = -(weights * y_true * ops.log(y_pred) + (1 - y_true) * ops.log(1 - y_pred))
        return ops.mean(per_class, axis=-1)

    return weighted_binary_crossentropy


def multi_label_metrics() -> list:
    """AUC over each class (averaged) and per-label accuracy, logged as `auc` and `accuracy`.

    Naming the binary accuracy `accuracy` keeps history.json, the training curves and a
    monitor of val_accuracy meaning "share of right yes/no answers" rather than failing.
    """
    import keras

    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.AUC(multi_label=True, name="auc"),
    ]


def build_model(
    config: Config,
    n_classes: int,
    channels: int,
    precision: str = "float32",
    weights_path: str | None = None,
    multi_label: bool = False,
):
    """Returns an uncompiled `keras.Sequential` for images of `config.data.image_size`.

    `precision` is a Keras dtype policy name ("mixed_float16", ...) given to each layer, not
    set globally, so building a model never changes Keras' state for other code.
    `weights_path` is the backbone's weights file (see backbones.resolve_weights).
    `multi_label` ends it in one sigmoid per class (`output_layer_for`).
    """
    import keras
    from keras import layers

    height, width = config.data.image_size
    m = config.model
    dtype = keras.DTypePolicy(precision)
    stack = [keras.Input(shape=(height, width, channels), name="image")]
    if m.backbone:
        stack += backbone_layers(config, channels, precision, weights_path)
    else:
        stack.append(layers.Rescaling(config.augment.rescale, name="rescale", dtype=dtype))
    for i, block in enumerate([] if m.backbone else m.conv_blocks, start=1):
        stack.append(
            layers.Conv2D(
                block.filters,
                block.kernel_size,
                padding=m.padding,
                use_bias=not m.batch_norm,
                name=f"conv{i}",
                dtype=dtype,
            )
        )
        if m.batch_norm:
            stack.append(layers.BatchNormalization(name=f"bn{i}", dtype=dtype))
        stack.append(layers.ReLU(name=f"relu{i}", dtype=dtype))
        stack.append(layers.MaxPooling2D(block.pool_size, name=f"pool{i}", dtype=dtype))
    stack.append(
        layers.Flatten(name="flatten", dtype=dtype)
        if m.pooling == "flatten"
        else layers.GlobalAveragePooling2D(name="global_pool", dtype=dtype)
    )
    for i, units in enumerate(m.dense_units, start=1):
        stack.append(layers.Dense(units, activation="relu", name=f"dense{i}", dtype=dtype))
        if m.dropout:
            stack.append(layers.Dropout(m.dropout, name=f"dropout{i}", dtype=dtype))
    units, activation = output_layer_for(n_classes, multi_label)
    # float32 output even under a mixed-precision policy: probabilities must stay accurate.
    stack.append(layers.Dense(units, activation=activation, dtype="float32", name="output"))
    return keras.Sequential(stack, name="cnnclf")


HEAD_LAYERS = ("flatten", "global_pool")  # the first head layer: feature layers come before


def feature_layers(model) -> list:
    """The layers before the head (pooling, Dense): what init_from copies and fine_tune thaws."""
    out: list = []
    for layer in model.layers:
        if layer.name in HEAD_LAYERS:
            return out
        out.append(layer)
    raise ValueError(f"model {model.name} has no {' or '.join(HEAD_LAYERS)} layer")


def backbone_layers(config: Config, channels: int, precision: str, weights_path: str | None):
    """Colour and scaling layers, then the pretrained backbone (see backbones.py).

    Keras applications take their dtype from the global policy, so it is set for the build
    alone and put back: building a model must not change Keras' state for other code.
    """
    import keras

    from cnnclf.model.backbones import build_backbone, input_layers

    assert config.model.backbone is not None  # only called for a model.backbone
    name = config.model.backbone.name
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        return [
            *input_layers(name, channels),
            build_backbone(name, config.data.image_size, weights_path),
        ]
    finally:
        keras.config.set_dtype_policy(previous)


def make_optimizer(
    config: Config,
    precision: str = "float32",
    replicas: int = 1,
    learning_rate: float | None = None,
):
    """The configured optimizer; float16 training gets dynamic loss scaling against underflow.

    bfloat16 gets none: it has float32's exponent range, so small gradients do not flush to
    zero (Keras' own `compile(auto_scale_loss=True)` likewise wraps only mixed_float16).
    `learning_rate` overrides train.learning_rate (fine-tuning uses its own).
    """
    import keras

    optimizers = {
        "adam": keras.optimizers.Adam,
        "adamw": keras.optimizers.AdamW,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }
    base = config.train.learning_rate if learning_rate is None else learning_rate
    rate = base * (replicas if config.train.scale_learning_rate else 1)
    optimizer = optimizers[config.train.optimizer](learning_rate=rate)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
