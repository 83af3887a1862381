"""The usage ledger: exact across processes sharing one file, readable by the viewer, legacy files read on."""

from __future__ import annotations

import json
import multiprocessing
from datetime import UTC, datetime
from pathlib import Path

from curation.inference.service.usage import UsageLedger, key_id
from curation.viewer.data import read_usage

RECORDS = 200  # per process; each records 2 processed and 1 failed


def _record_many(path: str, key: str, start, ready) -> None:  # noqa: ANN001 - multiprocessing events
    ledger = UsageLedger(Path(path))
    ready.set()
    start.wait()
    for _ in range(RECORDS):
        ledger.record(key, "cnn", processed=2, failed=1)


def test_two_processes_recording_on_one_file_end_with_the_exact_total(tmp_path):
    path = tmp_path / "usage.json"
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = []
    for key in ("key-a", "key-a", "key-b"):  # two processes on the same row, one on another
        ready = context.Event()
        worker = context.Process(target=_record_many, args=(str(path), key, start, ready))
        worker.start()
        assert ready.wait(180)  # a deadline only: a spawned process starts slowly on a busy machine
        workers.append(worker)
    start.set()  # all record at once
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    rows = {r["key_id"]: (r["processed"], r["failed"]) for r in UsageLedger(path).rows()}
    assert rows == {"key-a": (4 * RECORDS, 2 * RECORDS), "key-b": (2 * RECORDS, RECORDS)}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["usage.json"]  # no temporary or side file left
    frame = read_usage(path)  # the viewer's reader: the same JSON list of rows
    assert int(frame["processed"].sum()) == 6 * RECORDS


def test_a_legacy_ledger_is_read_on_and_counts_add_to_it(tmp_path):
    path = tmp_path / "usage.json"
    day = datetime.now(UTC).date().isoformat()
    path.write_text(json.dumps([{"key_id": "key-a", "day": day, "model": "cnn", "processed": 10, "failed": 1}]))
    ledger = UsageLedger(path)
    ledger.record("key-a", "cnn", processed=5, failed=0)
    ledger.record("key-b", "cnn", processed=1, failed=2)
    assert ledger.rows("key-a") == [{"key_id": "key-a", "day": day, "model": "cnn", "processed": 15, "failed": 1}]
    assert len(json.loads(path.read_text())) == 2


def test_a_ledger_without_a_path_counts_in_memory():
    ledger = UsageLedger()
    ledger.record(key_id("k"), "cpu", processed=3, failed=1, when=datetime(2024, 5, 1, tzinfo=UTC))
    assert ledger.rows() == [{"key_id": key_id("k"), "day": "2024-05-01", "model": "cpu", "processed": 3, "failed": 1}]
