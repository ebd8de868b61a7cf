"""The multi-worker loop trains a multi-label model as `fit` does: each class's positive
weight in the loss, and accuracy per label (not the first class's alone)."""

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # imports TensorFlow


def test_multi_label_loss_and_accuracy_in_the_multi_worker_loop():
    import tensorflow as tf

    from cnnclf.model.build import multi_label_loss
    from cnnclf.training.multiworker import MultiWorkerLoop

    weighted = multi_label_loss([3.0, 1.0])
    loop = MultiWorkerLoop(
        None, None, loss="binary_crossentropy", global_batch_size=2, multi_label_loss=weighted
    )
    y = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    pred = tf.constant([[0.9, 0.2], [0.4, 0.3]])
    # Row 1: both labels right; row 2: one of two. The first class alone would say 2 of 2.
    assert float(loop._correct(y, pred)) == pytest.approx(1.5)
    expected = np.asarray(weighted(y, pred))
    assert np.allclose(np.asarray(loop._per_example_loss(y, pred)), expected)
    plain = MultiWorkerLoop(
        None,
        None,
        loss="binary_crossentropy",
        global_batch_size=2,
        multi_label_loss="binary_crossentropy",
    )
    assert not np.allclose(np.asarray(plain._per_example_loss(y, pred)), expected)
