"""Data: finding images and classes on disk, decoding them, the decoded store, check-data,
the tf.data pipeline and augmentation.

Everything here but `pipeline` and `augment` works without TensorFlow, so `check-data` and config
errors stay instant.
"""
