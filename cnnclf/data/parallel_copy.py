"""`ds.batch(n)` with the batch op's `parallel_copy` set: the pipeline's one private TensorFlow API.

tf.data's `parallel_batch` rewrite (one of its default optimizations) sets that attribute, but
the pipeline's in-place read of the store has to turn the rewrites off (any rewrite serializes
the dataset's graph, the store tensor with it). The attribute has no public switch, so this
builds the batch op itself through `tensorflow.python`: a `UnaryDataset` subclass around
`gen_dataset_ops.batch_dataset_v2(..., parallel_copy=True)`.

Where TensorFlow's internals differ, `batch_copying_in_parallel` falls back to the plain
`ds.batch` (the same batches, more slowly); tests/unit/data/test_parallel_copy.py fails loudly
when a TensorFlow upgrade makes it fall back.
"""

from __future__ import annotations


def batch_copying_in_parallel(ds, batch_size: int):
    """`ds.batch(batch_size)`, its images copied into each batch by several threads."""
    try:
        return parallel_copy_batch(ds, batch_size)
    except (ImportError, AttributeError, TypeError):
        return ds.batch(batch_size)


def parallel_copy_batch(ds, batch_size: int):
    """The batched dataset through TensorFlow's private API; raises where that API changed."""
    import tensorflow as tf
    from tensorflow.python.data.ops import dataset_ops
    from tensorflow.python.ops import gen_dataset_ops

    class _ParallelCopyBatch(dataset_ops.UnaryDataset):
        def __init__(self, input_dataset, size):
            self._input_dataset = input_dataset
            self._structure = tf.nest.map_structure(
                lambda spec: spec._batch(None), input_dataset.element_spec
            )
            self._name = None
            variant = gen_dataset_ops.batch_dataset_v2(
                input_dataset._variant_tensor,
                batch_size=tf.constant(size, tf.int64),
                drop_remainder=tf.constant(False),
                parallel_copy=True,
                **self._common_args,
            )
            super().__init__(input_dataset, variant)

        @property
        def element_spec(self):
            return self._structure

    return _ParallelCopyBatch(ds, batch_size)
