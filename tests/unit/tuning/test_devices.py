"""One trial per GPU: workers on one machine take distinct GPUs (cnnclf/tuning/devices.py)."""

import pytest

from cnnclf.errors import CnnclfError
from cnnclf.tuning.devices import assign_gpu, claim_gpu


def test_workers_take_the_first_free_gpu_and_a_closed_lock_frees_it(tmp_path):
    first, lock0 = claim_gpu(tmp_path, 3)
    second, lock1 = claim_gpu(tmp_path, 3)
    assert (first, second) == (0, 1)
    lock0.close()  # the first worker exits (or is killed): its GPU is free again
    again, lock2 = claim_gpu(tmp_path, 3)
    assert again == 0
    for lock in (lock1, lock2):
        lock.close()


def test_more_workers_than_gpus_is_one_line(tmp_path):
    locks = [claim_gpu(tmp_path, 2)[1] for _ in range(2)]
    with pytest.raises(CnnclfError, match=r"every GPU on this machine \(2\) already has"):
        claim_gpu(tmp_path, 2)
    for lock in locks:
        lock.close()


def test_one_gpu_or_none_needs_no_choice(tmp_path):
    assert claim_gpu(tmp_path, 1) == (None, None)
    assert claim_gpu(tmp_path, 0) == (None, None)


def test_a_device_set_by_the_scheduler_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr("cnnclf.tuning.devices.gpu_count", lambda: 4)
    assert assign_gpu(tmp_path, "auto") is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    lock = assign_gpu(tmp_path, "auto")
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    lock.close()
