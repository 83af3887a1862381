"""Thumbnails: decode each image once, record its size and format, write a small JPEG."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import Image

from curation.inference.imaging import DecodedImage, ImageDecodeError, decode_image
from curation.analysis.quality import WORK_SIDE, image_signals, working_copy


@lru_cache(maxsize=1)
def signal_names() -> tuple[str, ...]:
    """The names of curation.analysis.quality's per-image signals (phash included)."""
    return tuple(image_signals(Image.new("RGB", (8, 8)), 8, 8))


@dataclass(frozen=True)
class FileFacts:
    """What one decode tells about an image file: its facts, quality signals and thumbnail.

    `facts` holds content_hash, width, height, format and error (None on success) and, when the image decoded,
    every quality signal (curation.analysis.quality, phash included); `thumbnail` is the JPEG bytes (None when the image did
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
    # At the default size the thumbnail is the signals' working copy: no second resize (curation.analysis.quality). Blur is
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
    thread beside the target, then a rename. Cheaper than curation.dataset.atomic's mkstemp (a store writes thousands of
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
