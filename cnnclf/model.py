"""Builds the config-driven Keras Sequential CNN.

The model starts with `Rescaling`, so the pixel scaling used in training travels inside
`model.keras` and prediction cannot forget it. No random augmentation layer is ever added here
(see augment.py for why).
"""

from __future__ import annotations

from cnnclf.config import Config


def output_layer_for(n_classes: int) -> tuple[int, str]:
    """(units, activation): one sigmoid unit for 2 classes, N softmax units for 3+."""
    return (1, "sigmoid") if n_classes == 2 else (n_classes, "softmax")


def loss_for(config: Config, n_classes: int) -> str:
    loss = config.train.loss
    if loss == "auto":
        return "binary_crossentropy" if n_classes == 2 else "categorical_crossentropy"
    wanted = "binary_crossentropy" if n_classes == 2 else "categorical_crossentropy"
    if loss != wanted:
        from cnnclf.errors import ConfigError

        raise ConfigError(f"train.loss: {loss} does not fit {n_classes} classes "
                          f"(the output layer is {output_layer_for(n_classes)[1]}); use auto or "
                          f"{wanted}")
    return loss


def build_model(config: Config, n_classes: int, channels: int, precision: str = "float32"):
    """Returns an uncompiled `keras.Sequential` for images of `config.data.image_size`.

    `precision` is a Keras dtype policy name ("mixed_float16", ...) given to each layer, not
    set globally, so building a model never changes Keras' state for other code.
    """
    import keras
    from keras import layers

    height, width = config.data.image_size
    m = config.model
    dtype = keras.DTypePolicy(precision)
    stack = [keras.Input(shape=(height, width, channels), name="image"),
             layers.Rescaling(config.augment.rescale, name="rescale", dtype=dtype)]
    for i, block in enumerate(m.conv_blocks, start=1):
        stack.append(layers.Conv2D(block["filters"], block["kernel_size"], padding=m.padding,
                                   use_bias=not m.batch_norm, name=f"conv{i}", dtype=dtype))
        if m.batch_norm:
            stack.append(layers.BatchNormalization(name=f"bn{i}", dtype=dtype))
        stack.append(layers.ReLU(name=f"relu{i}", dtype=dtype))
        stack.append(layers.MaxPooling2D(block["pool_size"], name=f"pool{i}", dtype=dtype))
    stack.append(layers.Flatten(name="flatten", dtype=dtype) if m.pooling == "flatten"
                 else layers.GlobalAveragePooling2D(name="global_pool", dtype=dtype))
    for i, units in enumerate(m.dense_units, start=1):
        stack.append(layers.Dense(units, activation="relu", name=f"dense{i}", dtype=dtype))
        if m.dropout:
            stack.append(layers.Dropout(m.dropout, name=f"dropout{i}", dtype=dtype))
    units, activation = output_layer_for(n_classes)
    # float32 output even under a mixed-precision policy: probabilities must stay accurate.
    stack.append(layers.Dense(units, activation=activation, dtype="float32", name="output"))
    return keras.Sequential(stack, name="cnnclf")


def make_optimizer(config: Config, precision: str = "float32", replicas: int = 1):
    """The configured optimizer; float16 training gets dynamic loss scaling against underflow."""
    import keras

    optimizers = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                  "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    rate = config.train.learning_rate * (replicas if config.train.scale_learning_rate else 1)
    optimizer = optimizers[config.train.optimizer](learning_rate=rate)
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
