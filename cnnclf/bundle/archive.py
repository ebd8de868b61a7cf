"""model.keras checked as a zip before Keras opens it: every member's size and compression ratio.

Keras reads config.json into memory and model.weights.h5 through a file object, and a seek
back in a compressed member inflates it again from its start. A few MB on disk that declare
GBs (a 2.9 MB file whose config.json inflates to 1.5 GB) cost minutes and GBs of memory
before Keras fails or, worse, predicts; Keras' own guard starts at 4 GiB. Reading a member
never yields more than the size the zip's directory declares for it (Python's zipfile stops
there and checks the CRC), so checking the declared sizes here bounds what Keras can inflate.

The weights' bound comes from the parameter count bundle.json records (`params`): 8 bytes a
parameter (float64 at most; cnnclf saves float32) plus HDF5's per-variable overhead. A bundle
without `params` (written before it was recorded) gets a generous absolute cap, and the ratio
limit catches a bomb whatever its declared size: Keras stores members uncompressed, about 1x.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

from cnnclf.regular_file import describe_size, open_regular_file

# Members read whole into memory; the largest backbone's config.json (EfficientNetV2L) is 1 MB.
SMALL_MEMBERS = ("config.json", "metadata.json")


class ArchiveError(ValueError):
    """model.keras is damaged or exceeds a limit; the message names the member when there is one."""


@dataclass(frozen=True)
class ArchiveLimits:
    """What a model.keras may inflate to. Tests lower these to build small bombs.

    Args:
        small_member_bytes: config.json and metadata.json, each.
        bytes_per_param: the weights' bytes per recorded parameter.
        weights_overhead_bytes: HDF5's headers, about 2 KB a variable (EfficientNetV2L's 1,329
            variables take 2.6 MB), with room to spare.
        unknown_params_bytes: the weights' cap when bundle.json records no parameter count.
        max_ratio, ratio_from_bytes: a member larger than `ratio_from_bytes` that inflates
            more than `max_ratio` times its stored size is a bomb (DEFLATE tops out near 1032x).
    """

    small_member_bytes: int = 16_000_000
    bytes_per_param: int = 8
    weights_overhead_bytes: int = 64_000_000
    unknown_params_bytes: int = 8_000_000_000
    max_ratio: float = 100.0
    ratio_from_bytes: int = 1_000_000

    def weights_bytes(self, params: int | None) -> int:
        if params is None:
            return self.unknown_params_bytes
        return params * self.bytes_per_param + self.weights_overhead_bytes


def check_model_archive(
    model_file: Path, params: int | None, limits: ArchiveLimits = ArchiveLimits()
) -> None:
    """Refuses a model.keras that is no zip, lacks config.json, or inflates past `limits`.

    Args:
        model_file: the model.keras file.
        params: the model's parameter count from bundle.json, or None when not recorded.
        limits: the caps; the defaults fit every model cnnclf trains.

    Raises:
        ArchiveError: one line, naming the member at fault.
    """
    try:
        with open_regular_file(model_file) as stream, zipfile.ZipFile(stream) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ArchiveError(
            f"damaged or not a Keras model file ({str(exc) or type(exc).__name__}); "
            "copy the bundle again or retrain"
        ) from None
    if not any(m.filename == "config.json" for m in members):
        raise ArchiveError(
            "damaged or not a Keras model file (no config.json in it); "
            "copy the bundle again or retrain"
        )
    weights_cap = limits.weights_bytes(params)
    for member in members:
        _check_member(member, params, weights_cap, limits)
    total = sum(m.file_size for m in members)
    total_cap = weights_cap + len(SMALL_MEMBERS) * limits.small_member_bytes
    if total > total_cap:
        raise ArchiveError(
            f"its {len(members)} members inflate to {describe_size(total)} together, more "
            f"than the {describe_size(total_cap)} {_whose(params)}; not loaded"
        )


def _check_member(
    member: zipfile.ZipInfo, params: int | None, weights_cap: int, limits: ArchiveLimits
) -> None:
    name, size = member.filename, member.file_size
    small = name in SMALL_MEMBERS
    cap = limits.small_member_bytes if small else weights_cap
    if size > cap:
        whose = "a model's config may take" if small else _whose(params)
        raise ArchiveError(
            f"{name} inflates to {describe_size(size)}, more than the "
            f"{describe_size(cap)} {whose}; not loaded"
        )
    if size > limits.ratio_from_bytes and size > limits.max_ratio * max(member.compress_size, 1):
        raise ArchiveError(
            f"{name} inflates to {describe_size(size)} from {describe_size(member.compress_size)} "
            f"stored ({size / max(member.compress_size, 1):.0f}x; Keras stores members at about "
            "1x): a decompression bomb, not loaded"
        )


def _whose(params: int | None) -> str:
    if params is None:
        return "cnnclf loads from a bundle that records no parameter count"
    return f"a model of {params:,} parameters (bundle.json's params) needs"
