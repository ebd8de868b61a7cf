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


def build_model(config: Config, n_classes: int, channels: int):
    """Returns an uncompiled `keras.Sequential` for images of `config.data.image_size`."""
    import keras
    from keras import layers

    height, width = config.data.image_size
    m = config.model
    stack = [keras.Input(shape=(height, width, channels), name="image"),
             layers.Rescaling(config.augment.rescale, name="rescale")]
    for i, block in enumerate(m.conv_blocks, start=1):
        stack.append(layers.Conv2D(block["filters"], block["kernel_size"], padding=m.padding,
                                   use_bias=not m.batch_norm, name=f"conv{i}"))
        if m.batch_norm:
            stack.append(layers.BatchNormalization(name=f"bn{i}"))
        stack.append(layers.ReLU(name=f"relu{i}"))
        stack.append(layers.MaxPooling2D(block["pool_size"], name=f"pool{i}"))
    stack.append(layers.Flatten(name="flatten") if m.pooling == "flatten"
                 else layers.GlobalAveragePooling2D(name="global_pool"))
    for i, units in enumerate(m.dense_units, start=1):
        stack.append(layers.Dense(units, activation="relu", name=f"dense{i}"))
        if m.dropout:
            stack.append(layers.Dropout(m.dropout, name=f"dropout{i}"))
    units, activation = output_layer_for(n_classes)
    # float32 output even under a mixed-precision policy: probabilities must stay accurate.
    stack.append(layers.Dense(units, activation=activation, dtype="float32", name="output"))
    return keras.Sequential(stack, name="cnnclf")


def make_optimizer(config: Config):
    import keras

    optimizers = {"adam": keras.optimizers.Adam, "adamw": keras.optimizers.AdamW,
                  "sgd": keras.optimizers.SGD, "rmsprop": keras.optimizers.RMSprop}
    return optimizers[config.train.optimizer](learning_rate=config.train.learning_rate)
