"""Thumbnails: decode each image once, record its size and format, write a small JPEG."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

from curation import workpool
from curation.ids import image_id_for
from curation.imaging import DecodedImage, ImageDecodeError, decode_image
from curation.quality import WORK_SIDE, image_signals, working_copy
from curation.storage import BlobInfo


@lru_cache(maxsize=1)
def signal_names() -> tuple[str, ...]:
    """The names of curation.quality's per-image signals (phash included)."""
    return tuple(image_signals(Image.new("RGB", (8, 8)), 8, 8))


@dataclass(frozen=True)
class FileFacts:
    """What one decode tells about an image file: its facts, quality signals and thumbnail.

    `facts` holds content_hash, width, height, format and error (None on success) and, when the image decoded,
    every quality signal (curation.quality, phash included); `thumbnail` is the JPEG bytes (None when the image did
    not decode); `decoded` is the image at the thumbnail's scale, for a caller that needs its pixels too."""

    facts: dict[str, object]
    thumbnail: bytes | None
    decoded: DecodedImage | None


def decode_with_facts(data: bytes, max_side: int) -> FileFacts:
    """Decode once (JPEG draft mode keeping max_side, and at least the signals' 256, pixels on the short side): the file
    facts, the quality signals (blur on that decode, the others on the 256 px thumbnail), and a thumbnail of max side
    max_side (EXIF orientation applied) as JPEG bytes.

    The one place a thumbnail is made: the inference service does it on the decode it needs for the model, and the
    pipeline on its own decode when a service does not return thumbnails."""
    facts: dict[str, object] = {"content_hash": hashlib.sha256(data).hexdigest() if data else None}
    try:  # enough pixels for the signals' working copy even when thumbnails are smaller than it
        decoded = decode_image(data, min_side=max(max_side, WORK_SIDE))
    except ImageDecodeError as exc:
        return FileFacts({**facts, "width": None, "height": None, "format": None, "error": str(exc)}, None, None)
    thumb = working_copy(decoded.image) if max_side == WORK_SIDE else decoded.image.copy()
    thumb.thumbnail((max_side, max_side))  # a no-op on the working copy, which fits already
    # At the default size the thumbnail is the signals' working copy: no second resize (curation.quality). Blur is
    # measured on the decode itself, where a blur of a few full-size pixels is still visible.
    work = thumb if max_side == WORK_SIDE else decoded.image
    signals = image_signals(work, decoded.width, decoded.height, detail=decoded.image)
    out = io.BytesIO()
    thumb.save(out, format="JPEG", quality=THUMBNAIL_QUALITY)
    facts |= {**signals, "width": decoded.width, "height": decoded.height, "format": decoded.format, "error": None}
    return FileFacts(facts, out.getvalue(), decoded)


THUMBNAIL_QUALITY = 85


def write_thumbnail(target: Path, jpeg: bytes) -> None:
    """Write thumbnail bytes atomically (a reader never sees half a file): to a temporary name of this process and
    thread beside the target, then a rename. Cheaper than curation.atomic's mkstemp (a store writes thousands of
    these): the folder is only made when the first write into it finds it missing."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        try:
            tmp.write_bytes(jpeg)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(jpeg)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_thumbnail(data: bytes, target: Path, max_side: int) -> dict[str, object]:
    """Decode once: write a thumbnail (max side max_side, EXIF orientation applied) and measure quality signals.

    Returns the file facts (width, height, format, content hash), the signals, and an error string
    (None on success).
    """
    made = decode_with_facts(data, max_side)
    if made.thumbnail is not None:
        write_thumbnail(target, made.thumbnail)
    return made.facts


BATCH_SIZE = 8  # images per hand-over to a worker process: ~0.1 s of work, ~3 MB of 1080p JPEG bytes


def _thumbnail_batch(jobs: list[tuple[bytes, str, int]]) -> list[dict[str, object]]:
    """Worker side: make_thumbnail for each (bytes, target path, max side)."""
    return [make_thumbnail(data, Path(target), max_side) for data, target, max_side in jobs]


def _crashed(job: tuple[bytes, str, int], reason: str) -> dict[str, object]:
    data = job[0]
    return {
        "content_hash": hashlib.sha256(data).hexdigest() if data else None,
        "width": None, "height": None, "format": None, "error": f"cannot decode image: {reason}",
    }


def read_ahead(
    names: list[str], read_bytes: Callable[[str], bytes], concurrency: int
) -> Iterator[bytes | Exception]:
    """read_bytes of each name, in order, with up to `concurrency` reads in flight; a failed read yields its error.

    Memory holds at most `concurrency` blobs the caller has not taken yet."""
    if concurrency <= 1:
        for name in names:
            try:
                yield read_bytes(name)
            except Exception as exc:  # noqa: BLE001 - the caller records it as the image's error
                yield exc
        return
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="read") as pool:
        pending: deque[Future[bytes]] = deque(pool.submit(read_bytes, n) for n in names[:concurrency])
        for name in names[concurrency:] + [None] * len(pending):
            future = pending.popleft()
            if name is not None:
                pending.append(pool.submit(read_bytes, name))
            try:
                yield future.result()
            except Exception as exc:  # noqa: BLE001
                yield exc


def thumbnail_rows(
    blobs: list[BlobInfo],
    read_bytes: Callable[[str], bytes],
    thumbnail_path: Callable[[str], Path],
    root: Path,
    max_side: int,
    read_concurrency: int = 1,
) -> list[dict[str, object]]:
    """Files-table rows for a shard of blobs, making each one's thumbnail on the way.

    Bytes are read in this thread (up to `read_concurrency` blobs at once) while worker processes
    (curation.workpool) decode, measure and encode the previous batches; a read that fails, or an image whose worker
    dies, is a row with the reason.
    """
    facts: list[dict[str, object] | None] = [None] * len(blobs)
    targets = [thumbnail_path(image_id_for(blob.name)) for blob in blobs]

    def batches() -> Iterator[list[tuple[bytes, str, int]]]:
        batch: list[tuple[bytes, str, int]] = []
        reads = read_ahead([b.name for b in blobs], read_bytes, read_concurrency)
        for i, data in enumerate(reads):
            if isinstance(data, Exception):  # storage read failed: the row records why, the dataset goes on
                facts[i] = {"width": None, "height": None, "format": None, "error": f"cannot read: {data}",
                            "content_hash": None}
            else:
                batch.append((data, str(targets[i]), max_side))
                where.append(i)
            if len(batch) == BATCH_SIZE:
                yield batch
                batch = []
        if batch:
            yield batch

    where: list[int] = []  # blob index of each job handed over, in order
    done = 0
    for results in workpool.map_batches(_thumbnail_batch, batches(), _crashed):
        for result in results:
            facts[where[done]] = result
            done += 1
    rows = []
    for blob, target, fact in zip(blobs, targets, facts, strict=True):
        assert fact is not None
        rows.append(
            {
                "image_id": image_id_for(blob.name),
                "blob_name": blob.name,
                "size": blob.size,
                **fact,
                "thumbnail": None if fact["error"] else target.relative_to(root).as_posix(),
            }
        )
    return rows
