"""Dataset and image identifiers."""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
import time

_counter = itertools.count(int.from_bytes(os.urandom(3), "big"))
_lock = threading.Lock()
_PROCESS_RANDOM = os.urandom(5)


def new_object_id() -> str:
    """A 24-hex-character ObjectId: 4-byte timestamp, 5 random bytes, 3-byte counter."""
    with _lock:
        count = next(_counter) & 0xFFFFFF
    return (int(time.time()).to_bytes(4, "big") + _PROCESS_RANDOM + count.to_bytes(3, "big")).hex()


def is_object_id(value: str) -> bool:
    """True when value looks like a dataset id (24 lowercase hex characters)."""
    return len(value) == 24 and all(c in "0123456789abcdef" for c in value)


def image_id_for(blob_name: str) -> str:
    """A stable image id from the blob name, so re-runs and incremental curation agree."""
    return hashlib.sha1(blob_name.encode("utf-8")).hexdigest()[:16]
