"""The worker-process pool: the same results as in-process work, and a dying worker loses nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from curation import workpool
from curation.models.cpu import CpuModel
from curation.service.jobs import predict_batch
from curation.settings import Settings, use_settings
from curation.storage import BlobInfo
from curation.thumbnails import thumbnail_rows
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


def images(tmp: Path, count: int) -> dict[str, bytes]:
    data = {f"img_{i:02d}.jpg": jpeg_bytes(i, (96 + i, 64)) for i in range(count)}
    data["broken.jpg"] = b"\xff\xd8\xff\xe0 not a jpeg"
    data["unreadable.jpg"] = b""
    return data


def rows_under(root: Path, data: dict[str, bytes], settings: Settings) -> list[dict]:
    def read(name: str) -> bytes:
        if name == "unreadable.jpg":
            raise OSError("storage said no")
        return data[name]

    blobs = [BlobInfo(name, len(b)) for name, b in data.items()]
    with use_settings(settings):
        return thumbnail_rows(blobs, read, lambda image_id: root / "thumbs" / f"{image_id}.jpg", root, 64)


def test_thumbnail_rows_in_workers_equal_in_thread(tmp_path):
    data = images(tmp_path, 33)
    pooled = rows_under(tmp_path / "a", data, POOLED)
    in_thread = rows_under(tmp_path / "b", data, IN_THREAD)
    assert pooled == in_thread  # every value, signals and phash included, in blob order
    assert [r["blob_name"] for r in pooled] == list(data)
    assert sum(r["error"] is None for r in pooled) == 33
    errors = {r["blob_name"]: r["error"] for r in pooled if r["error"]}
    assert errors["broken.jpg"].startswith("cannot decode image")
    assert errors["unreadable.jpg"] == "cannot read: storage said no"
    for row in pooled:
        if row["thumbnail"]:
            assert (tmp_path / "a" / row["thumbnail"]).read_bytes() == (tmp_path / "b" / row["thumbnail"]).read_bytes()


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
