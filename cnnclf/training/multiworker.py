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


class MultiWorkerLoop:
    """Trains `model` (built and compiled under `strategy.scope()`) phase after phase.

    Args:
        model: the compiled model; its optimizer applies the gradients.
        strategy: the `MultiWorkerMirroredStrategy`.
        loss: the Keras loss name (`model.build.loss_for`).
        global_batch_size: data.batch_size, which losses are averaged over across replicas.
        class_weight: Keras `class_weight`, or None.
        multi_label_loss: for a multi-label model, its loss (`build.multi_label_loss`: the
            function with each class's positive weight, or the name of plain binary
            cross-entropy); accuracy is then per label, as Keras' binary accuracy counts it.
    """

    def __init__(
        self,
        model,
        strategy,
        *,
        loss: str,
        global_batch_size: int,
        class_weight: dict | None = None,
        multi_label_loss=None,
    ):
        import keras
        import tensorflow as tf

        self.model = model
        self.strategy = strategy
        self.global_batch_size = global_batch_size
        self.binary = loss == "binary_crossentropy"
        self.loss_fn = (
            keras.losses.BinaryCrossentropy if self.binary else keras.losses.CategoricalCrossentropy
        )(reduction=None)
        self.multi_label = multi_label_loss is not None
        if callable(multi_label_loss):  # per example: the mean over classes, as Keras' own
            self.loss_fn = multi_label_loss
        self.weights = None
        if class_weight:
            self.weights = tf.constant([class_weight[i] for i in sorted(class_weight)], tf.float32)

    def fit(
        self, train_ds, val_ds, *, epochs: int, initial_epoch: int, callbacks: list, log=print
    ) -> None:
        """Trains from `initial_epoch` up to `epochs`, driving `callbacks` as `Model.fit` does."""
        import keras

        model, strategy = self.model, self.strategy
        run_train, run_eval = self._runner(self._train_step), self._runner(self._eval_step)
        dist_train = strategy.experimental_distribute_dataset(train_ds)
        dist_val = strategy.experimental_distribute_dataset(val_ds)
        callback_list = keras.callbacks.CallbackList(callbacks, model=model)
        model.stop_training = False
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            train_loss, train_acc = _run_epoch(run_train, dist_train)
            val_loss, val_acc = _run_epoch(run_eval, dist_val)
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"training loss became {train_loss} in epoch {epoch + 1}")
            logs = {
                "accuracy": train_acc,
                "loss": train_loss,
                "val_accuracy": val_acc,
                "val_loss": val_loss,
            }
            log(
                f"Epoch {epoch + 1}/{epochs} - "
                + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items())
            )
            callback_list.on_epoch_end(epoch, logs)
            if model.stop_training:
                break

    def _correct(self, y, pred):
        import tensorflow as tf

        if self.multi_label:  # each image counts the share of its labels that are right
            right = tf.equal(tf.cast(pred >= 0.5, tf.float32), tf.cast(y, tf.float32))
            hits = tf.reduce_mean(tf.cast(right, tf.float32), axis=-1)
        elif self.binary:
            hits = tf.equal(tf.cast(pred[:, 0] >= 0.5, tf.float32), y[:, 0])
        else:
            hits = tf.equal(tf.argmax(pred, axis=-1), tf.argmax(y, axis=-1))
        return tf.reduce_sum(tf.cast(hits, tf.float32))

    def _per_example_loss(self, y, pred):
        import tensorflow as tf

        values = self.loss_fn(y, tf.cast(pred, tf.float32))
        if self.weights is not None:
            index = tf.cast(y[:, 0], tf.int32) if self.binary else tf.argmax(y, axis=-1)
            values = values * tf.gather(self.weights, index)
        return values

    def _train_step(self, x, y):
        import tensorflow as tf

        model = self.model
        with tf.GradientTape() as tape:
            pred = model(x, training=True)
            values = self._per_example_loss(y, pred)
            scaled = tf.nn.compute_average_loss(values, global_batch_size=self.global_batch_size)
        grads = tape.gradient(scaled, model.trainable_variables)
        model.optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return tf.reduce_sum(values), self._correct(y, pred), tf.cast(tf.shape(y)[0], tf.float32)

    def _eval_step(self, x, y):
        import tensorflow as tf

        pred = self.model(x, training=False)
        return (
            tf.reduce_sum(self._per_example_loss(y, pred)),
            self._correct(y, pred),
            tf.cast(tf.shape(y)[0], tf.float32),
        )

    def _runner(self, step):
        import tensorflow as tf

        strategy = self.strategy

        @tf.function
        def run(x, y):
            sums = strategy.run(step, args=(x, y))
            return [strategy.reduce("SUM", s, axis=None) for s in sums]

        return run


def _run_epoch(run, dataset) -> tuple[float, float]:
    """(mean loss, accuracy) over one pass of `dataset`."""
    # Sums stay tensors until the epoch ends: a float() per step would make the host wait
    # for every step before dispatching the next.
    totals = None
    for x, y in dataset:
        sums = run(x, y)
        totals = sums if totals is None else [t + s for t, s in zip(totals, sums)]
    total_loss, total_correct, total_n = (float(v) for v in totals or (0.0, 0.0, 0.0))
    n = max(total_n, 1.0)
    return total_loss / n, total_correct / n
