"""Faults during a real curation: a flaky, slow or dead inference service, storage that is down, a writer killed
mid-file, and expired SAS URLs. Every case runs the real flows (Prefect), the real service over real HTTP, and
checks that each submitted image is accounted for exactly once, or that the dataset ends Failed with a reason.
"""

from __future__ import annotations

import fnmatch
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
from pydantic import SecretStr

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import DatasetStore, Table
from curation.dataset.registry import DatasetRecord
from curation.ingest.ids import image_id_for
from curation.settings import Settings
from tests.images import write_images
from tests.integration.conftest import SERVICE_KEY
from tests.integration.fault_front import serve
from tests.integration.helpers import azure_config, leftovers, new_container, upload_images
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SIG = re.compile(r"sig=(?!REDACTED)[^&\s'\"]+", re.IGNORECASE)  # a signature value (the Azure SDK logs REDACTED)


# ---------------------------------------------------------------------------------------------------------------
# Accounting: every submitted image once, no more, no less.


def assert_results_account_for(settings: Settings, record: DatasetRecord, names: list[str]) -> pl.DataFrame:
    """files/metadata/embeddings Parquet hold exactly the accepted images, once each; errors carry reasons."""
    store = DatasetStore(settings.data_root, record.id)
    files = store.frame(Table.FILES)
    expected = {image_id_for(n): n for n in names}
    assert record.counts.accepted == len(names) == files.height
    assert files["image_id"].n_unique() == files.height, "duplicate image_id rows in files.parquet"
    assert dict(zip(files["image_id"], files["blob_name"], strict=True)) == expected
    errors = files.filter(pl.col("error").is_not_null())
    assert all(isinstance(e, str) and len(e.strip()) > 5 for e in errors["error"]), errors["error"].to_list()
    assert errors.height == record.counts.failed
    assert record.counts.processed + record.counts.failed == len(names)
    metadata = store.frame(Table.METADATA)
    assert metadata.height == len(names) and set(metadata["image_id"]) == set(expected)
    embeddings = store.frame(Table.EMBEDDINGS)
    ok_ids = set(files.filter(pl.col("error").is_null())["image_id"])
    assert embeddings["image_id"].n_unique() == embeddings.height and set(embeddings["image_id"]) == ok_ids
    return files


def assert_registered_once(settings: Settings, record: DatasetRecord, names: list[str]) -> None:
    """A dataset that Failed before results: its listing holds each image exactly once, the shards it stored hold
    each of their images once, and no partial results were written."""
    store = DatasetStore(settings.data_root, record.id)
    listing = store.read(Table.LISTING).to_pydict()["name"]
    assert sorted(listing) == sorted(names) and record.counts.accepted == len(names)
    stored = [pl.from_arrow(t) for t in store.iter_files_shards()]
    if stored:
        shards = pl.concat(stored)
        assert shards["image_id"].n_unique() == shards.height and set(shards["blob_name"]) <= set(names)
    assert not store.has(Table.FILES) and not store.has(Table.METADATA) and not store.has(Table.EMBEDDINGS)


def remote_settings(settings: Settings, url: str, **changes) -> Settings:
    return settings.model_copy(update={"service_url": url, **changes})


# ---------------------------------------------------------------------------------------------------------------
# 1. A flaky service: 500s, 429 with Retry-After, a hung status call, a results page cut mid-body.


def test_flaky_service_is_retried_and_every_image_is_written_once(tmp_path, settings):
    names = write_images(tmp_path / "images", 35)
    front, running = serve(
        {"status_plan": ["500", "429", "hang"], "results_plan": ["500", "pass", "drop"], "hang_s": 120.0}, SERVICE_KEY
    )
    try:
        # A request timeout no answer of a loaded machine comes near (a slow page retried would be an extra call),
        # and a hang far beyond it.
        cr = Curation(settings=remote_settings(settings, running.url, request_timeout_s=5.0, results_page_size=8))
        dataset_id = cr.curate_dataset("flaky", LocalStorageConfig(path=tmp_path / "images"), wait=True)
    finally:
        running.stop()

    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Completed", record.failure_reason
    files = assert_results_account_for(settings, record, names)
    assert files["error"].null_count() == 35 and record.counts.processed == 35

    s = front.status_calls
    assert [c.action for c in s[:4]] == ["500", "429", "hang", "pass"]
    # Lower bounds only: a loaded machine makes every gap longer, never shorter.
    after_429 = s[2].at - s[1].at
    assert after_429 >= 0.95, f"Retry-After: 1 not honoured: next call after {after_429:.2f}s"
    after_hang = s[3].at - s[2].at
    # The client gave up on the hung call at request_timeout_s (5 s) and asked again: had it waited out the 120 s
    # hang, the hung call's answer would have ended the polling there, with no fourth call.
    assert after_hang >= 5.0 and s[3].action == "pass", f"the hung call was not abandoned ({after_hang:.2f}s)"
    r = front.results_calls
    # Three shard jobs (16 + 16 + 3 images), each read in pages of 8 as it completes (shards are stored
    # concurrently, so their calls interleave); a failed or cut page is read again at the same offset.
    assert sorted(c.action for c in r) == sorted(["500", "pass", "drop", "pass", "pass", "pass", "pass"])
    by_job: dict[str, list[tuple[str, str]]] = {}
    for c in r:
        by_job.setdefault(c.path, []).append((c.action, c.query.split("&")[0]))
    assert len(by_job) == 3
    for calls in by_job.values():
        offset = 0
        for action, query in calls:
            assert query == f"offset={offset}", calls
            offset += 8 if action == "pass" else 0
    assert sorted(sum(a == "pass" for a, _ in calls) for calls in by_job.values()) == [1, 2, 2]


# ---------------------------------------------------------------------------------------------------------------
# 2. The service dies for longer than transient_budget_s.


def test_service_down_after_submit_fails_the_dataset_within_the_budget(tmp_path, settings):
    names = write_images(tmp_path / "images", 31)
    _, running = serve({}, SERVICE_KEY)
    # The default request timeout: a slow answer of a loaded machine while the service is up is not a failure; once
    # it is down, connections are refused at once and the 2 s budget ends the run.
    cr = Curation(settings=remote_settings(settings, running.url, transient_budget_s=2.0))
    try:
        dataset_id = cr.curate_dataset("down", LocalStorageConfig(path=tmp_path / "images"), wait=False)
    finally:
        running.stop()
    assert cr.get_dataset(dataset_id).status.value == "Processing"  # submitted, then the service went away

    # Not stuck in Processing: tracking ends, Failed with the reason (how long it took is not asserted: a loaded
    # machine is slower, and the budget itself is the client's, tested in tests/unit/inference/test_client.py).
    assert cr.tracing_curation_task(dataset_id) == "Failed"
    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Failed"
    assert "inference service" in record.failure_reason and "cannot reach" in record.failure_reason
    assert_registered_once(settings, record, names)


def test_service_down_while_results_are_read_fails_the_dataset(tmp_path, settings):
    """The job Completed, then the service died on the first results page: not stuck in Processing."""
    names = write_images(tmp_path / "images", 31)
    front, running = serve({"results_plan": ["stop"]}, SERVICE_KEY)
    cr = Curation(settings=remote_settings(settings, running.url, transient_budget_s=2.0))  # as above
    try:
        dataset_id = cr.curate_dataset("down at results", LocalStorageConfig(path=tmp_path / "images"), wait=False)
        status = cr.tracing_curation_task(dataset_id)
    finally:
        running.stop()
    record = cr.get_dataset(dataset_id)
    assert status == "Failed" and record.status.value == "Failed"
    assert "inference service" in record.failure_reason, record.failure_reason
    assert front.results_calls and front.results_calls[0].action == "stop"
    assert_registered_once(settings, record, names)


# ---------------------------------------------------------------------------------------------------------------
# 3. Azure storage down at the start.


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_storage_down_at_start_is_a_clear_error_and_leaves_no_dataset(settings, monkeypatch):
    """With the production retry policy (storage.AZURE_RETRIES_AND_TIMEOUTS: 3 connection attempts, bounded to ~20 s;
    tests/unit/ingest/test_storage.py checks the bound) and no retry of the list-images task."""
    from curation.ingest.storage import AzureStorageConfig, StorageError
    from tests.azurite import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME

    import urllib3.util.connection as connection

    attempts: list[object] = []
    real = connection.create_connection

    def counting(address, *args, **kwargs):
        if address[1] == port:
            attempts.append(address)
        return real(address, *args, **kwargs)

    monkeypatch.setattr(connection, "create_connection", counting)
    port = closed_port()
    config = AzureStorageConfig(
        account_name=DEV_ACCOUNT_NAME,
        container_name="drives",
        account_key=SecretStr(DEV_ACCOUNT_KEY),
        account_url=f"http://127.0.0.1:{port}/{DEV_ACCOUNT_NAME}",
    )
    with pytest.raises(StorageError) as raised:
        Curation(settings=settings).curate_dataset("no storage", config, wait=True)
    message = str(raised.value)
    assert message == f"cannot list container 'drives': could not reach http://127.0.0.1:{port} (Connection refused)"
    assert raised.value.unreachable and DEV_ACCOUNT_KEY not in message
    assert len(attempts) == 3  # the client's 3 connection attempts, and no task retry multiplying them
    assert leftovers(settings.data_root) == []


# ---------------------------------------------------------------------------------------------------------------
# 4. SIGKILL while a Parquet file is written.

KILL_ROWS = 100_000
READER_PATTERNS = ["*.parquet", "files-*.parquet", "files.parquet", "dataset.json", "*.json"]
HOLD_AT = [0, 1, 2, 0, 2, 1]  # per round: the generation the child is killed in the middle of


def test_sigkill_while_writing_parquet_never_leaves_a_partial_file(tmp_path):
    """A writer SIGKILLed half-way through a Parquet file leaves the target absent (nothing finished yet) or whole
    (the last complete write), never partial; its temporary file is one no reader lists. The child says when half
    of a write is on disk and waits there, so each kill lands mid-write, on any machine (no sleep, no timing)."""
    store = DatasetStore(tmp_path, "6b07853ea0d81f32342580f4")
    target = store.files_shard_path(0)
    work = target.parent
    work.mkdir(parents=True)
    last_complete: int | None = None
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for round_, hold_at in enumerate(HOLD_AT):
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.parquet_kill_child", str(target), str(KILL_ROWS), str(hold_at)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
        )
        lines: list[str] = []
        try:
            while not lines or not lines[-1].startswith("writing"):  # the event: half of generation hold_at written
                line = child.stdout.readline()
                assert line, f"round {round_}: the writer ended before writing: {lines}"
                lines.append(line.strip())
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=60)
            child.stdout.close()
        assert child.returncode == -signal.SIGKILL
        assert lines == ["ready", *(f"wrote {g}" for g in range(hold_at)), f"writing {hold_at}"], lines
        last_complete = hold_at - 1 if hold_at else last_complete

        if last_complete is None:  # nothing finished yet: no file at all
            assert not target.exists(), f"round {round_}: a target with no complete write"
        else:  # the last complete write, whole
            table = pq.read_table(target)
            assert table.num_rows == KILL_ROWS, f"round {round_}: partial file with {table.num_rows} rows"
            assert table.column("gen").unique().to_pylist() == [last_complete], f"round {round_}: not the last write"
            assert table.column("i").to_pylist()[-1] == KILL_ROWS - 1
        leftovers = [p.name for p in work.iterdir() if p != target]
        assert len(leftovers) == round_ + 1, leftovers  # each kill left its half-written temporary file

    for name in leftovers:
        assert name.startswith(".") and name.endswith(".tmp"), name
        assert not any(fnmatch.fnmatch(name, pattern) for pattern in READER_PATTERNS), name
        assert (work / name).stat().st_size > 0  # really half-written, not an empty placeholder
    assert store.files_shards() == [target]  # what the readers list


# ---------------------------------------------------------------------------------------------------------------
# 5. Expired SAS URLs.


def test_expired_sas_fails_every_image_with_a_clear_reason_and_no_signature(azurite, settings):
    container = new_container(azurite)
    names = upload_images(container, 32)
    expired = settings.model_copy(update={"sas_expiry_minutes": -1})  # signed valid from -5 min to -1 min
    cr = Curation(settings=expired)
    dataset_id = cr.curate_dataset("expired", azure_config(azurite, container), wait=True)

    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Failed"
    assert record.failure_reason.startswith("all 32 images failed; first error: HTTP 403"), record.failure_reason
    assert "expired" in record.failure_reason, record.failure_reason
    files = assert_results_account_for(settings, record, names)
    assert files["error"].null_count() == 0
    for error in files["error"]:
        assert error.startswith("HTTP 403 (AuthorizationFailure) fetching http://"), error
        assert "expired SAS or no read permission" in error
        assert "?" not in error
    texts = [record.failure_reason, *files["error"]]
    texts += [p.read_bytes().decode("latin-1") for p in settings.data_root.rglob("*") if p.is_file()]
    leaked = [t[:200] for t in texts if SIG.search(t)]
    assert not leaked, leaked[:3]


def test_service_fetch_logs_carry_no_sas_signature(azurite, service, captured_logs):
    """httpx logs each request's full URL at INFO: the service's fetches must not put SAS signatures in logs."""
    from datetime import UTC, datetime, timedelta

    from curation.inference.client import InferenceClient
    from curation.ingest.storage import open_storage

    container = new_container(azurite)
    upload_images(container, 2)
    local = Settings(request_timeout_s=5)
    storage = open_storage(azure_config(azurite, container), local)
    expiry = datetime.now(UTC) + timedelta(minutes=5)
    items = [{"image_id": n, "url": storage.sign_url(n, expiry), "size": 1} for n in ("img_0000.png", "img_0001.jpg")]
    with InferenceClient(service.url, SecretStr(SERVICE_KEY), local) as client:
        job_id = client.submit_job(items, idempotency_key=container.container_name)
        wait_for(lambda: client.job_status(job_id).finished, f"job {job_id} finishing", poll_s=0.1)
        assert [r["error"] for page in client.iter_results(job_id) for r in page] == [None, None]
    leaked = [line[:160] for line in captured_logs.lines if SIG.search(line)]
    assert not leaked, leaked[:2]
