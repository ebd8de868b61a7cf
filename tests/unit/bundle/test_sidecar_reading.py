"""Reading a bundle's sidecars: capped, parsed without recursion errors, and cross-checked so
that no edit of one key (deleting bundle.json's class_names) lets a swap of classes through.

The bundles are sidecars written by code with a stand-in model.keras: `read_metadata` never
opens the model, so none of this needs TensorFlow.
"""

import json
import os
import threading

import pytest
from hostile_bundles import edit_json, sidecar_bundle

from cnnclf.bundle import SidecarError, read_json, read_metadata
from cnnclf.bundle.format import check_manifest, read_sidecar
from cnnclf.errors import BundleError

SWAP = {"cat": 1, "dog": 0}


def refused(bundle, file, phrase):
    with pytest.raises(BundleError) as info:
        read_metadata(bundle)
    message = str(info.value)
    assert message.startswith(f"--model {bundle}: {file}: "), message
    assert phrase in message and "\n" not in message, message


def test_the_bundle_as_written_reads(tmp_path):
    names, preprocessing, manifest = read_metadata(sidecar_bundle(tmp_path / "b"))
    assert names == ["cat", "dog"] and preprocessing.threshold == 0.5
    assert manifest["params"] == 1000


def test_an_older_bundle_without_digests_or_params_still_reads(tmp_path):
    names, _, manifest = read_metadata(sidecar_bundle(tmp_path / "b", digests=False))
    assert names == ["cat", "dog"] and "sha256" not in manifest


@pytest.mark.parametrize("digests", [True, False])
def test_a_swap_with_class_names_deleted_is_refused_new_or_old(tmp_path, digests):
    bundle = sidecar_bundle(tmp_path / "b", digests=digests)
    (bundle / "class_indices.json").write_text(json.dumps(SWAP))
    edit_json(bundle / "bundle.json", lambda m: m.pop("class_names"))
    refused(bundle, "bundle.json", "class_names: missing")


def test_a_consistent_swap_is_refused_by_the_recorded_digest(tmp_path):
    bundle = sidecar_bundle(tmp_path / "b")
    (bundle / "class_indices.json").write_text(json.dumps(SWAP))
    edit_json(bundle / "bundle.json", lambda m: m.update(class_names=["dog", "cat"]))
    refused(bundle, "class_indices.json", "sha256 differs from the one bundle.json recorded")


def test_an_edited_threshold_is_refused_by_the_recorded_digest(tmp_path):
    bundle = sidecar_bundle(tmp_path / "b")
    edit_json(bundle / "preprocessing.json", lambda p: p.update(threshold=0.01))
    refused(bundle, "preprocessing.json", "is not the file written at training")


def test_a_malformed_sidecar_is_named_by_its_fault_before_the_digest(tmp_path):
    bundle = sidecar_bundle(tmp_path / "b")
    edit_json(bundle / "class_indices.json", lambda c: c.update(bird=2))
    refused(bundle, "class_indices.json", "a binary model needs exactly 2 class names")


@pytest.mark.parametrize(
    "change, phrase",
    [
        (lambda m: m.update(class_names="cat,dog"), "class_names: must be a list of names"),
        (lambda m: m.update(params=-3), "params: must be a positive integer"),
        (lambda m: m.update(params=True), "params: must be a positive integer"),
        (lambda m: m.update(sha256={"class_indices.json": "abc"}), "sha256: must map"),
        (lambda m: m.update(sha256=["x"]), "sha256: must map"),
    ],
)
def test_manifest_keys_of_the_wrong_shape(tmp_path, change, phrase):
    bundle = sidecar_bundle(tmp_path / "b")
    edit_json(bundle / "bundle.json", change)
    refused(bundle, "bundle.json", phrase)


def test_a_300_mb_class_indices_is_refused_unread_at_its_cap(tmp_path):
    bundle = sidecar_bundle(tmp_path / "b", digests=False)
    with open(bundle / "class_indices.json", "wb") as f:
        f.truncate(300_000_000)  # sparse: no 300 MB written
    refused(bundle, "class_indices.json", "larger than 4 MB, the most it may hold")


def test_bundle_json_has_more_room_than_the_other_sidecars(tmp_path):
    """bundle.json lists every skipped file: 5 MB is legitimate there, not in class_indices."""
    (tmp_path / "bundle.json").write_bytes(b" " * 5_000_000)
    (tmp_path / "class_indices.json").write_bytes(b" " * 5_000_000)
    assert len(read_sidecar(tmp_path / "bundle.json")) == 5_000_000
    with pytest.raises(SidecarError, match="larger than 4 MB"):
        read_sidecar(tmp_path / "class_indices.json")


def test_deep_nesting_names_the_file_instead_of_a_recursion_error(tmp_path):
    bundle = sidecar_bundle(tmp_path / "b", digests=False)
    (bundle / "class_indices.json").write_text("[" * 100_000)
    refused(bundle, "class_indices.json", "nested too deeply")


def test_a_fifo_sidecar_is_refused_without_waiting_for_a_writer(tmp_path):
    fifo = tmp_path / "cnnclf.json"
    os.mkfifo(fifo)
    outcome = []

    def read():
        try:
            read_json(fifo)
        except SidecarError as exc:
            outcome.append(str(exc))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=10)
    if reader.is_alive():  # unblock the reader, so the test process can end
        with open(fifo, "w"):
            pass
        pytest.fail("reading a FIFO sidecar waited for a writer")
    assert outcome == ["not a regular file (a FIFO); give a regular file"]


def test_check_manifest_requires_class_names():
    with pytest.raises(SidecarError, match=r"^class_names: missing"):
        check_manifest({"format": 1, "threshold": None})
