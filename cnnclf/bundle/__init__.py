"""The model bundle: what a trained model is saved as, and how it is written and read back.

The format (file names, version, sidecar schema) is in `format.py`, reading and checking in
`reader.py`, writing in `writer.py`, exports to other runtimes in `export.py`. This package
re-exports what the rest of cnnclf reads bundles with; importing it loads no TensorFlow.
"""

from __future__ import annotations

from cnnclf.bundle.format import (
    BUNDLE_FORMAT,
    CLASS_INDICES_FILE,
    CLASS_MODES,
    COLOR_MODES,
    CONFIG_FILE,
    CURVES_FILE,
    HISTORY_FILE,
    IMAGE_SIZE_RANGE,
    INTERPOLATIONS,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PREPROCESSING_FILE,
    REQUIRED_FILES,
    Preprocessing,
    SidecarError,
    class_names_from_json,
    read_json,
    write_json,
)
from cnnclf.bundle.reader import (
    Bundle,
    check_model_shapes,
    is_bundle,
    load_bundle,
    read_metadata,
    trained_flips,
)

__all__ = [
    "BUNDLE_FORMAT",
    "CLASS_INDICES_FILE",
    "CLASS_MODES",
    "COLOR_MODES",
    "CONFIG_FILE",
    "CURVES_FILE",
    "HISTORY_FILE",
    "IMAGE_SIZE_RANGE",
    "INTERPOLATIONS",
    "MANIFEST_FILE",
    "METRICS_FILE",
    "MODEL_FILE",
    "PREPROCESSING_FILE",
    "REQUIRED_FILES",
    "Bundle",
    "Preprocessing",
    "SidecarError",
    "check_model_shapes",
    "class_names_from_json",
    "is_bundle",
    "load_bundle",
    "read_json",
    "read_metadata",
    "trained_flips",
    "write_json",
]
