"""Thumbnail shards read blobs ahead of the decoding, several at once, in order, and keep a failed read's reason."""

from __future__ import annotations

import threading
import time

import pytest

from curation.settings import Settings
from curation.thumbnails import read_ahead


class SlowStorage:
    """A storage boundary with latency: each read sleeps, and the most reads in flight at once are counted."""

    def __init__(self, latency_s: float) -> None:
        self.latency_s, self.in_flight, self.most, self.lock = latency_s, 0, 0, threading.Lock()

    def read_bytes(self, name: str) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.latency_s)
        with self.lock:
            self.in_flight -= 1
        if name.startswith("missing"):
            raise FileNotFoundError(f"no blob {name}")
        return name.encode()


@pytest.mark.parametrize("count", [0, 3, 8, 40])
def test_reads_come_back_in_order_with_errors_in_place(count):
    names = [f"missing-{i}" if i % 7 == 3 else f"img-{i}.jpg" for i in range(count)]
    storage = SlowStorage(0.001)
    out = list(read_ahead(names, storage.read_bytes, 8))
    assert len(out) == count
    for name, got in zip(names, out, strict=True):
        if name.startswith("missing"):
            assert isinstance(got, FileNotFoundError) and name in str(got)
        else:
            assert got == name.encode()
    assert storage.most <= 8


def test_latency_overlaps_instead_of_adding_up():
    names = [f"img-{i}.jpg" for i in range(40)]
    storage = SlowStorage(0.05)
    t0 = time.perf_counter()
    assert [b.decode() for b in read_ahead(names, storage.read_bytes, 8)] == names
    overlapped = time.perf_counter() - t0
    assert storage.most == 8
    assert overlapped < 40 * 0.05 / 3  # 2 s one by one; ~0.25 s with 8 in flight

    storage = SlowStorage(0.01)
    assert [b.decode() for b in read_ahead(names[:5], storage.read_bytes, 1)] == names[:5]
    assert storage.most == 1  # concurrency 1: one after the other, as before


def test_the_setting_defaults_to_several_reads_and_refuses_zero():
    assert Settings().read_concurrency == 8
    with pytest.raises(ValueError):
        Settings(read_concurrency=0)


def test_thumbnail_rows_are_the_same_read_one_by_one_or_ahead(tmp_path):
    from curation.settings import use_settings
    from curation.storage import BlobInfo
    from curation.thumbnails import thumbnail_rows
    from tests.images import jpeg_bytes

    data = {f"img_{i:02d}.jpg": jpeg_bytes(i, (96 + i, 64)) for i in range(20)}
    data["missing-1.jpg"] = b""
    blobs = [BlobInfo(name, len(b)) for name, b in data.items()]

    def read(name: str) -> bytes:
        if name.startswith("missing"):
            raise FileNotFoundError(f"no blob {name}")
        return data[name]

    def rows(root, concurrency):
        with use_settings(Settings(work_processes=0)):
            return thumbnail_rows(blobs, read, lambda i: root / f"{i}.jpg", root, 64, read_concurrency=concurrency)

    one_by_one, ahead = rows(tmp_path / "a", 1), rows(tmp_path / "b", 8)
    assert ahead == one_by_one and len(ahead) == 21
    assert [r["blob_name"] for r in ahead] == list(data)
    assert ahead[-1]["error"] == "cannot read: no blob missing-1.jpg" and ahead[0]["error"] is None
