"""Hostile bundles made by code, cheaply: zips that declare sizes they do not hold, and the
sidecars of a bundle written without a model, for tests that need no TensorFlow.

A zip's central directory declares each member's uncompressed size; patching that field costs
nothing, so a test can present a 1.5 GB config.json without inflating (or writing) 1.5 GB.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zipfile
from pathlib import Path

_CENTRAL_ENTRY = b"PK\x01\x02"


def declare_member_size(zip_path: Path, member: str, size: int) -> None:
    """Rewrites `member`'s uncompressed size in the zip's central directory to `size` bytes.

    Only the directory changes: the stored bytes, and so the file's size, stay the same.
    `size` must fit the 32-bit field (under 4 GiB, no ZIP64).
    """
    assert size < 0xFFFFFFFF, "a 32-bit size field; ZIP64 sizes are not patched here"
    data = bytearray(Path(zip_path).read_bytes())
    offset = data.find(_CENTRAL_ENTRY)
    while offset != -1:
        (name_length,) = struct.unpack_from("<H", data, offset + 28)
        if data[offset + 46 : offset + 46 + name_length] == member.encode():
            struct.pack_into("<I", data, offset + 24, size)
            Path(zip_path).write_bytes(bytes(data))
            return
        offset = data.find(_CENTRAL_ENTRY, offset + 46)
    raise ValueError(f"{zip_path} has no member {member}")


def model_like_zip(path: Path, weights: bytes = b"\x01" * 4096, deflate: bool = False) -> Path:
    """A zip with model.keras's three members (not loadable: enough for the archive checks)."""
    compression = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3"}))
        archive.writestr("config.json", json.dumps({"class_name": "Sequential"}))
        archive.writestr("model.weights.h5", weights)
    return Path(path)


def sidecar_bundle(folder: Path, *, digests: bool = True) -> Path:
    """A bundle's sidecars as cnnclf writes them (binary, classes cat and dog) and a stand-in
    model.keras: what `read_metadata` reads. `digests=False` writes an older bundle.json,
    without `params` and `sha256`."""
    folder.mkdir(parents=True)
    (folder / "class_indices.json").write_text(json.dumps({"cat": 0, "dog": 1}))
    preprocessing = {
        "image_size": [16, 16],
        "color_mode": "rgb",
        "interpolation": "bilinear",
        "rescale": 1 / 255,
        "rescale_in_model": True,
        "class_mode": "binary",
        "threshold": 0.5,
    }
    (folder / "preprocessing.json").write_text(json.dumps(preprocessing))
    model_like_zip(folder / "model.keras")
    manifest = {"format": 1, "class_names": ["cat", "dog"], "threshold": None}
    if digests:
        manifest["params"] = 1000
        manifest["sha256"] = {
            name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
            for name in ("class_indices.json", "preprocessing.json")
        }
    (folder / "bundle.json").write_text(json.dumps(manifest))
    return folder


def edit_json(path: Path, change) -> None:
    """Loads `path`, lets `change` edit the object in place, writes it back."""
    data = json.loads(Path(path).read_text())
    change(data)
    Path(path).write_text(json.dumps(data))
