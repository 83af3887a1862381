"""Usage per API key, day and model: images processed and failed (failures are not charged)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

from curation.dataset.atomic import write_text_atomic


def key_id(api_key: str) -> str:
    """A stable, non-reversible name for an API key, safe to show and store."""
    return "key-" + hashlib.sha256(api_key.encode()).hexdigest()[:12]


class UsageLedger:
    """Counts per (key id, day, model); optionally persisted as JSON so it survives restarts."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], dict[str, int]] = defaultdict(lambda: {"processed": 0, "failed": 0})
        if path is not None and path.exists():
            for row in json.loads(path.read_text()):
                self._counts[(row["key_id"], row["day"], row["model"])] = {
                    "processed": row["processed"],
                    "failed": row["failed"],
                }

    def record(self, key: str, model: str, processed: int, failed: int, when: datetime | None = None) -> None:
        day = (when or datetime.now(UTC)).date().isoformat()
        with self._lock:
            counts = self._counts[(key, day, model)]
            counts["processed"] += processed
            counts["failed"] += failed
            if self.path is not None:
                write_text_atomic(self.path, json.dumps(self._rows_locked(None)))

    def _rows_locked(self, key: str | None) -> list[dict[str, object]]:
        return [
            {"key_id": k, "day": d, "model": m, **c}
            for (k, d, m), c in sorted(self._counts.items())
            if key is None or k == key
        ]

    def rows(self, key: str | None = None) -> list[dict[str, object]]:
        """Usage rows, for one key id or all."""
        with self._lock:
            return self._rows_locked(key)
