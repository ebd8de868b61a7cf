"""cnnclf: train a config-driven Keras CNN on class folders; predict from a self-describing bundle.
"""

import importlib.util as _importlib_util

__version__ = "0.1.0"

# Checked with find_spec, not imported: `cnnclf --help` must not pay for TensorFlow's ~2 s import,
# but a missing TensorFlow should be one clear line now, not a confusing error mid-training.
if _importlib_util.find_spec("tensorflow") is None:
    raise ImportError(
        "cnnclf needs TensorFlow, which is not installed: "
        "pip install 'cnnclf[cpu]' (CPU-only build) or 'cnnclf[gpu]' (CUDA build)"
    ) from None
