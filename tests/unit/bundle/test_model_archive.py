"""`archive.check_model_archive`: model.keras's members bounded before Keras inflates any.

The zips are made by code in milliseconds: a declared size is patched into the directory, never
inflated, and the one real bomb is 2 MB of zeros.
"""

import os

import pytest
from hostile_bundles import declare_member_size, model_like_zip

from cnnclf.bundle.archive import ArchiveError, ArchiveLimits, check_model_archive


def test_a_model_like_zip_passes_with_and_without_a_parameter_count(tmp_path):
    model = model_like_zip(tmp_path / "model.keras")
    check_model_archive(model, None)
    check_model_archive(model, 1000)


def test_a_config_declaring_1_5_gb_is_refused_naming_the_member(tmp_path):
    model = model_like_zip(tmp_path / "model.keras")
    declare_member_size(model, "config.json", 1_500_000_000)
    with pytest.raises(ArchiveError, match=r"^config.json inflates to 1.5 GB, more than the 16 MB"):
        check_model_archive(model, 1000)


def test_weights_are_bounded_by_the_recorded_parameter_count(tmp_path):
    model = model_like_zip(tmp_path / "model.keras")
    declare_member_size(model, "model.weights.h5", 100_000_000)  # 1000 params: 64 MB at most
    with pytest.raises(
        ArchiveError,
        match=r"^model.weights.h5 inflates to 100 MB, more than the 64 MB a model of 1,000 "
        r"parameters \(bundle.json's params\) needs",
    ):
        check_model_archive(model, 1000)
    # A larger model may hold 100 MB of weights (the ratio, which this patched zip fails, off).
    check_model_archive(model, 20_000_000, ArchiveLimits(max_ratio=float("inf")))


def test_without_a_parameter_count_the_ratio_catches_a_bomb(tmp_path):
    """An older bundle: no params, so the absolute cap (8 GB) is far; 3 GB from 4 KB is not."""
    model = model_like_zip(tmp_path / "model.keras")
    declare_member_size(model, "model.weights.h5", 3_000_000_000)
    with pytest.raises(ArchiveError, match=r"^model.weights.h5 inflates to 3 GB from .* bomb"):
        check_model_archive(model, None)


def test_a_real_deflate_bomb_is_refused_and_honest_stored_weights_are_not(tmp_path):
    bomb = model_like_zip(tmp_path / "bomb.keras", weights=bytes(2_000_000), deflate=True)
    with pytest.raises(ArchiveError, match=r"model.weights.h5 inflates to 2 MB from .*x;"):
        check_model_archive(bomb, None)
    stored = model_like_zip(tmp_path / "stored.keras", weights=os.urandom(2_000_000))
    check_model_archive(stored, 1000)


def test_lowered_limits_apply_to_small_members_and_the_total(tmp_path):
    model = model_like_zip(tmp_path / "model.keras", weights=b"\x01" * 3000)
    small = r"^metadata.json inflates to 22 bytes, more than the 10 bytes a model's config"
    with pytest.raises(ArchiveError, match=small):
        check_model_archive(model, None, ArchiveLimits(small_member_bytes=10))
    tight = ArchiveLimits(small_member_bytes=100, bytes_per_param=1, weights_overhead_bytes=2900)
    check_model_archive(model, 100, tight)  # weights 3000 bytes: exactly the bound
    with pytest.raises(ArchiveError, match=r"^model.weights.h5 inflates to 3 KB, more than"):
        check_model_archive(model, 99, tight)


def test_the_members_together_are_bounded(tmp_path):
    model = model_like_zip(tmp_path / "model.keras", weights=b"\x01" * 900)
    import zipfile

    with zipfile.ZipFile(model, "a") as archive:
        archive.writestr("assets/extra.bin", b"\x02" * 900)
    limits = ArchiveLimits(small_member_bytes=100, bytes_per_param=1, weights_overhead_bytes=900)
    with pytest.raises(ArchiveError, match=r"^its 4 members inflate to .* together"):
        check_model_archive(model, 1, limits)


@pytest.mark.parametrize("content", [b"", b"not a zip", None])
def test_no_zip_or_no_config_is_damaged(tmp_path, content):
    model = tmp_path / "model.keras"
    if content is None:
        import zipfile

        with zipfile.ZipFile(model, "w") as archive:
            archive.writestr("notes.txt", "not a model")
    else:
        model.write_bytes(content)
    with pytest.raises(ArchiveError, match=r"^damaged or not a Keras model file \("):
        check_model_archive(model, None)


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    with pytest.raises(ArchiveError, match=r"not a regular file \(a FIFO\)"):
        check_model_archive(fifo, None)
