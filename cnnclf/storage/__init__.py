"""Object storage (s3://, gs://, anything fsspec knows): data, bundles and inputs by URL.

The rest of cnnclf reads local files only. This room turns a URL into a local path before
anything else looks at it (data is mirrored into a cache once, a bundle is downloaded and
checked) and uploads a bundle built locally, marker last. fsspec is imported only when a URL
is used, so `cnnclf --help` and config errors never pay for it. No TensorFlow here.
"""

from cnnclf.storage.bundles import (
    MARKER,
    BundleState,
    bundle_state,
    local_bundle,
    upload_bundle,
    upload_dir,
)
from cnnclf.storage.errors import StorageError
from cnnclf.storage.mirroring import MirrorStats, cache_root, mirror, mirror_inputs
from cnnclf.storage.urls import is_url

__all__ = [
    "MARKER",
    "BundleState",
    "MirrorStats",
    "StorageError",
    "bundle_state",
    "cache_root",
    "is_url",
    "local_bundle",
    "mirror",
    "mirror_inputs",
    "upload_bundle",
    "upload_dir",
]
