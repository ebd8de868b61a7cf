"""The training loop for `train.distribute: multi_worker`.

Keras 3's `Model.fit` cannot run under `MultiWorkerMirroredStrategy`: before the first step it
calls `strategy.reduce("MEAN", (x, y))` on a whole batch tuple, which the collective all-reduce
strategy rejects (keras-team/keras#20585, tensorflow/tensorflow#72388). This loop does the same
work with TensorFlow's documented pieces instead (`strategy.run`, `tf.nn.compute_average_loss`,
`strategy.reduce` on single tensors) and drives the same Keras callbacks, so checkpoints,
resume, early stopping and learning-rate schedules behave as with `fit`.

With train.jit_compile, `model` is `distribute.compile_replica_forward`'s wrapper: each
replica's forward and backward pass runs in XLA, while the gradient all-reduce in
`apply_gradients` stays outside it (collective ops cannot live in an XLA cluster).
"""

from __future__ import annotations

import math


def fit_multi_worker(
    model,
    strategy,
    train_ds,
    val_ds,
    *,
    loss: str,
    epochs: int,
    initial_epoch: int,
    global_batch_size: int,
    callbacks: list,
    class_weight: dict | None = None,
    log=print,
) -> None:
    """Trains `model` (built and compiled under `strategy.scope()`) for `epochs` epochs."""
    import keras
    import tensorflow as tf

    binary = loss == "binary_crossentropy"
    loss_fn = (keras.losses.BinaryCrossentropy if binary else keras.losses.CategoricalCrossentropy)(
        reduction=None
    )
    weights = None
    if class_weight:
        weights = tf.constant([class_weight[i] for i in sorted(class_weight)], tf.float32)
    optimizer = model.optimizer

    def correct(y, pred):
        if binary:
            hits = tf.equal(tf.cast(pred[:, 0] >= 0.5, tf.float32), y[:, 0])
        else:
            hits = tf.equal(tf.argmax(pred, axis=-1), tf.argmax(y, axis=-1))
        return tf.reduce_sum(tf.cast(hits, tf.float32))

    def per_example_loss(y, pred):
        values = loss_fn(y, tf.cast(pred, tf.float32))
        if weights is not None:
            index = tf.cast(y[:, 0], tf.int32) if binary else tf.argmax(y, axis=-1)
            values = values * tf.gather(weights, index)
        return values

    def train_step(x, y):
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            values = per_example_loss(y, pred)
            scaled = tf.nn.compute_average_loss(values, global_batch_size=global_batch_size)
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return tf.reduce_sum(values), correct(y, pred), tf.cast(tf.shape(y)[0], tf.float32)

    def eval_step(x, y):
        pred = model(x, training=False)
        return (
            tf.reduce_sum(per_example_loss(y, pred)),
            correct(y, pred),
            tf.cast(tf.shape(y)[0], tf.float32),
        )

    def make_runner(step):
        @tf.function
        def run(x, y):
            sums = strategy.run(step, args=(x, y))
            return [strategy.reduce("SUM", s, axis=None) for s in sums]

        return run

    run_train, run_eval = make_runner(train_step), make_runner(eval_step)
    dist_train = strategy.experimental_distribute_dataset(train_ds)
    dist_val = strategy.experimental_distribute_dataset(val_ds)

    def run_epoch(run, dataset):
        # Sums stay tensors until the epoch ends: a float() per step would make the host wait
        # for every step before dispatching the next.
        totals = None
        for x, y in dataset:
            sums = run(x, y)
            totals = sums if totals is None else [t + s for t, s in zip(totals, sums)]
        total_loss, total_correct, total_n = (float(v) for v in totals or (0.0, 0.0, 0.0))
        n = max(total_n, 1.0)
        return total_loss / n, total_correct / n

    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    model.stop_training = False
    for epoch in range(initial_epoch, epochs):
        callback_list.on_epoch_begin(epoch)
        train_loss, train_acc = run_epoch(run_train, dist_train)
        val_loss, val_acc = run_epoch(run_eval, dist_val)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} in epoch {epoch + 1}")
        logs = {
            "accuracy": train_acc,
            "loss": train_loss,
            "val_accuracy": val_acc,
            "val_loss": val_loss,
        }
        log(f"Epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
