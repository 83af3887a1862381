"""Thumbnails: decode each image once, record its size and format, write a small JPEG."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from PIL import Image

from curation.atomic import atomic_path
from curation.ids import image_id_for
from curation.imaging import ImageDecodeError, decode_image
from curation.quality import image_signals
from curation.storage import BlobInfo


@lru_cache(maxsize=1)
def signal_names() -> tuple[str, ...]:
    """The names of curation.quality's per-image signals (phash included)."""
    return tuple(image_signals(Image.new("RGB", (8, 8)), 8, 8))


def make_thumbnail(data: bytes, target: Path, max_side: int) -> dict[str, object]:
    """Decode once: write a thumbnail (max side max_side, EXIF orientation applied) and measure quality signals.

    Returns the file facts (width, height, format, content hash), the signals, and an error string
    (None on success).
    """
    facts: dict[str, object] = {"content_hash": hashlib.sha256(data).hexdigest() if data else None}
    try:
        decoded = decode_image(data, min_side=max_side)
    except ImageDecodeError as exc:
        return {**facts, "width": None, "height": None, "format": None, "error": str(exc)}
    signals = image_signals(decoded.image, decoded.width, decoded.height)
    thumb = decoded.image
    thumb.thumbnail((max_side, max_side))
    with atomic_path(target) as tmp:
        thumb.save(tmp, format="JPEG", quality=85)
    return {**facts, **signals, "width": decoded.width, "height": decoded.height, "format": decoded.format, "error": None}


def thumbnail_rows(
    blobs: list[BlobInfo],
    read_bytes: Callable[[str], bytes],
    thumbnail_path: Callable[[str], Path],
    root: Path,
    max_side: int,
) -> list[dict[str, object]]:
    """Files-table rows for a shard of blobs, making each one's thumbnail on the way."""
    rows = []
    for blob in blobs:
        image_id = image_id_for(blob.name)
        target = thumbnail_path(image_id)
        try:
            facts = make_thumbnail(read_bytes(blob.name), target, max_side)
        except Exception as exc:  # storage read failed: the row records why, the dataset goes on
            facts = {"width": None, "height": None, "format": None, "error": f"cannot read: {exc}", "content_hash": None}
        rows.append(
            {
                "image_id": image_id,
                "blob_name": blob.name,
                "size": blob.size,
                **facts,
                "thumbnail": None if facts["error"] else target.relative_to(root).as_posix(),
            }
        )
    return rows
