"""cnnclf: train a config-driven Keras CNN on class folders; predict from a self-describing bundle.

TensorFlow is an extra (`cnnclf[cpu]` or `cnnclf[gpu]`) and is not imported here: `cnnclf --help`,
`cnnclf config` and `cnnclf check-data` work without it, and predicting from an ONNX or TFLite
export needs only that format's runtime. Commands that need it say so in one line
(`tf_loader.import_tensorflow`).
"""

__version__ = "0.2.0"
