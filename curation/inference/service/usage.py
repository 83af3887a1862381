"""Usage per API key, day and model: images processed and failed (failures are not charged).

With a path, the ledger is one JSON file (a list of rows), the one the viewer's Usage page reads. Several service
processes may share it (two replicas on one data root): each increment is a read-modify-write of the file under an
exclusive `fcntl.flock`, and the new file replaces the old one atomically, so no increment is lost and a reader
always sees a complete file. A ledger written before the lock existed is the same format and is simply read on.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from curation.dataset.atomic import write_text_atomic

Key = tuple[str, str, str]  # key id, day, model


def key_id(api_key: str) -> str:
    """A stable, non-reversible name for an API key, safe to show and store."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


def _create_if_absent(path: Path) -> None:
    """Create an empty ledger without ever replacing one another process just made (a hard link does not clobber),
    so readers never see an empty, unparsable file."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.write(fd, b"[]")
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the ledger file across processes. The file is replaced on each write, so the lock
    counts only once the locked file is still the one at `path` (else another writer replaced it: lock again)."""
    _create_if_absent(path)
    while True:
        fd = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)  # releases the lock


def _read(path: Path) -> dict[Key, dict[str, int]]:
    counts: dict[Key, dict[str, int]] = {}
    if path.exists():
        for row in json.loads(path.read_text(encoding="utf-8") or "[]"):
            counts[(row["key_id"], row["day"], row["model"])] = {"processed": row["processed"], "failed": row["failed"]}
    return counts


def _rows(counts: dict[Key, dict[str, int]], key: str | None) -> list[dict[str, object]]:
    return [
        {"key_id": k, "day": d, "model": m, **c} for (k, d, m), c in sorted(counts.items()) if key is None or k == key
    ]


class UsageLedger:
    """Counts per (key id, day, model); with a path, kept in that JSON file, safely shared between processes."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        self._counts: dict[Key, dict[str, int]] = defaultdict(lambda: {"processed": 0, "failed": 0})

    def record(self, key: str, model: str, processed: int, failed: int, when: datetime | None = None) -> None:
        day = (when or datetime.now(UTC)).date().isoformat()
        with self._lock:
            if self.path is None:
                counts = self._counts[(key, day, model)]
                counts["processed"] += processed
                counts["failed"] += failed
                return
            with _exclusive(self.path):
                ledger = _read(self.path)
                counts = ledger.setdefault((key, day, model), {"processed": 0, "failed": 0})
                counts["processed"] += processed
                counts["failed"] += failed
                write_text_atomic(self.path, json.dumps(_rows(ledger, None)))

    def rows(self, key: str | None = None) -> list[dict[str, object]]:
        """Usage rows, for one key id or all (with a path: as the file holds them now, all processes' counts)."""
        with self._lock:
            return _rows(self._counts if self.path is None else _read(self.path), key)
