"""Data: finding images and classes on disk, decoding them, the decoded store, check-data,
the tf.data pipeline and augmentation.

Everything here but `pipeline`, `parallel_copy`, `augment` and `preview` works without
TensorFlow, so `check-data` and config errors stay instant. `parallel_copy` holds the one private
TensorFlow API the pipeline uses, and nothing else.
"""
