"""The worker-process pool: the same results as in-process work, and a dying worker loses nothing."""

from __future__ import annotations

import os

import pytest

from curation.inference import workpool
from curation.inference.models.cpu import CpuModel
from curation.inference.service.jobs import predict_batch
from curation.settings import Settings, use_settings
from tests.images import jpeg_bytes

POOLED, IN_THREAD = Settings(work_processes=2), Settings(work_processes=0)


def die_on_boom(batch: list[bytes]) -> list[str]:
    """Worker side: kills its process on b"boom" (as a crashing native decoder would), else echoes."""
    if b"boom" in batch:
        os._exit(3)
    return [item.decode() for item in batch]


def fail_on_bad(batch: list[bytes]) -> list[str]:
    if b"bad" in batch:
        raise ValueError("cannot handle bad")
    return [item.decode() for item in batch]


def error_row(item: bytes, reason: str) -> str:
    return f"error {item.decode()}: {reason}"


def test_service_predictions_in_workers_equal_in_thread():
    model = CpuModel()
    work = [(model, jpeg_bytes(i, (200, 150)), model.input_side, None) for i in range(20)]
    work.insert(7, (model, b"not an image", model.input_side, None))
    pooled = workpool.run_batch(predict_batch, work, lambda item, reason: (None, reason, None, None), settings=POOLED)
    in_thread = predict_batch(work)
    assert len(pooled) == len(in_thread) == 21
    for (p, e, *_), (q, f, *_) in zip(pooled, in_thread, strict=True):
        assert e == f
        if p is None:
            assert q is None and e == "not a recognised image format"
        else:
            assert p.tags == q.tags and p.embedding.tobytes() == q.embedding.tobytes()


def test_a_dying_worker_fails_only_its_image_with_a_reason():
    batches = [[f"{b}-{i}".encode() for i in range(4)] for b in range(5)]
    batches[2][1] = b"boom"
    with use_settings(POOLED):
        out = list(workpool.map_batches(die_on_boom, batches, error_row, max_pending=3))
    assert len(out) == 5 and all(len(results) == 4 for results in out)
    assert out[2][1] == "error boom: the worker process died while processing this image (crash or out of memory)"
    expected = [[item.decode() for item in batch] for batch in batches]
    expected[2][1] = out[2][1]
    assert out == expected  # every other item has its result, in order
    # and the pool works again afterwards
    assert workpool.run_batch(die_on_boom, [b"after"], error_row, settings=POOLED) == ["after"]


@pytest.mark.parametrize("settings", [POOLED, IN_THREAD], ids=["pooled", "in-thread"])
def test_an_exception_fails_only_the_item_that_raises(settings):
    batch = [b"a", b"bad", b"c"]
    assert workpool.run_batch(fail_on_bad, batch, error_row, settings=settings) == [
        "a", "error bad: the worker failed: ValueError: cannot handle bad", "c"
    ]


def test_daemonic_process_and_setting_zero_work_in_thread(monkeypatch):
    assert workpool.worker_count(Settings(work_processes=0)) == 0
    assert workpool.worker_count(Settings(work_processes=3)) == 3
    assert workpool.worker_count(Settings()) == (os.cpu_count() or 1)

    class Daemonic:
        daemon = True

    monkeypatch.setattr(workpool.multiprocessing, "current_process", lambda: Daemonic())
    assert workpool.worker_count(Settings(work_processes=3)) == 0
    # in a daemonic process (a Dask worker) the function runs right here: a crash-on-boom would kill pytest
    assert workpool.run_batch(fail_on_bad, [b"x"], error_row, settings=Settings(work_processes=3)) == ["x"]
