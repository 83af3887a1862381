"""A job journal on the service's own disk, so a killed and restarted service finishes its jobs.

Layout under the state folder: `<job_id>/job.json` (written atomically), `<job_id>/items.jsonl` (written
atomically) and `<job_id>/results.jsonl`, appended and fsynced per batch; a result line carries the image's
file facts and its thumbnail (base64 JPEG) when the job asked for them. A torn last line (a kill mid-append)
is ignored on load, so those images are simply processed again: nothing is lost and nothing is doubled.
The folder holds a job's signed URLs while it runs: when it ends, items.jsonl is rewritten without them (`end`),
and a released job's folder is removed. It belongs to the service, never to a pipeline's data root.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import threading
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from curation.dataset.atomic import write_text_atomic


def _result_json(result: Any) -> str:
    return json.dumps(
        {
            "image_id": result.image_id,
            "tags": result.tags,
            "embedding": None if result.embedding is None else result.embedding.tolist(),
            "error": result.error,
            "facts": result.facts,
            "thumbnail": None if result.thumbnail is None else base64.b64encode(result.thumbnail).decode("ascii"),
        }
    )


class JobJournal:
    """Persists jobs and their results; `None` folder means memory only."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder else None
        self._lock = threading.Lock()
        if self.folder:
            self.folder.mkdir(parents=True, exist_ok=True)

    def record_job(self, job: Any) -> None:
        if not self.folder:
            return
        target = self.folder / job.id
        keys = ("id", "owner", "model", "embedding_model", "idempotency_key", "thumbnail_side", "request_hash")
        meta = {k: getattr(job, k) for k in keys}
        meta["created"] = job.created.isoformat()
        write_text_atomic(target / "items.jsonl", "".join(json.dumps(asdict(i)) + "\n" for i in job.items))
        write_text_atomic(target / "job.json", json.dumps(meta))  # last: a job without it is ignored

    def end(self, job: Any) -> None:
        """A job has all its results: rewrite its items without their URLs (signed, live for hours), atomically.

        A restart still loads the job (ids and sizes are all a finished job needs) so its results can be read."""
        if not self.folder:
            return
        with self._lock:
            target = self.folder / job.id
            if not (target / "job.json").exists():  # released meanwhile
                return
            lines = "".join(json.dumps({"image_id": i.image_id, "url": "", "size": i.size}) + "\n" for i in job.items)
            write_text_atomic(target / "items.jsonl", lines)

    def record_results(self, job_id: str, results: list[Any]) -> None:
        if not self.folder:
            return
        with self._lock:
            if not (self.folder / job_id).is_dir():  # released while its last batch ran
                return
            with open(self.folder / job_id / "results.jsonl", "a", encoding="utf-8") as out:
                out.write("".join(_result_json(r) + "\n" for r in results))
                out.flush()
                os.fsync(out.fileno())

    def forget(self, job_id: str) -> None:
        """Remove a released job's journal (a running job's holds signed URLs)."""
        if self.folder:
            with self._lock:  # not while a batch's results are being appended
                shutil.rmtree(self.folder / job_id, ignore_errors=True)

    def load(self) -> list[tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]]:
        """Every journalled job: (meta, items, results); results keep the first copy of each image id."""
        if not self.folder:
            return []
        jobs = []
        for meta_path in sorted(self.folder.glob("*/job.json")):
            meta = json.loads(meta_path.read_text())
            meta["created"] = datetime.fromisoformat(meta["created"])
            items = [json.loads(line) for line in (meta_path.parent / "items.jsonl").read_text().splitlines()]
            results, seen = [], set()
            results_path = meta_path.parent / "results.jsonl"
            if results_path.exists():
                for line in results_path.read_text(encoding="utf-8").splitlines():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:  # a torn append: that image is processed again
                        continue
                    if row["image_id"] not in seen:
                        seen.add(row["image_id"])
                        row["embedding"] = None if row["embedding"] is None else np.asarray(row["embedding"], np.float32)
                        row["facts"] = row.get("facts")  # lines written before facts existed have none
                        thumbnail = row.get("thumbnail")
                        row["thumbnail"] = None if thumbnail is None else base64.b64decode(thumbnail)
                        results.append(row)
            jobs.append((meta, items, results))
        return jobs
