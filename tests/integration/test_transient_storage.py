"""Storage that throttles, fails or goes away while the service fetches images (issue #17): transient failures are
retried; what still fails is retryable, counted, and processed again by `--resume` or the next curate-new-blobs run.

A loopback proxy in front of Azurite answers 503 and 429 for blob reads; the real service fetches through it."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import polars as pl
import pytest
from pydantic import SecretStr

from curation import Curation
from curation.dataset.catalog import Catalog, Document, Table
from curation.inference.result_pages import RETRYABLE
from curation.inference.service.server import start_in_thread
from curation.settings import Settings
from tests.azurite import DEV_ACCOUNT_KEY, DEV_ACCOUNT_NAME, HOST, AzuriteEndpoint, _free_port, _start, _stop
from tests.integration.helpers import azure_config, new_container, upload_images

KEY = "transient-storage-key-5d1e"


class ThrottlingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards to Azurite. A blob read answers 503 or 429 (Retry-After: 0) for the first `throttle_first` tries of
    each blob, and always 503 for the blobs in `broken`; listings pass."""

    upstream = ""
    throttle_first = 0
    broken: set[str] = set()
    lock = threading.Lock()
    tries: dict[str, int] = {}
    refused = 0
    served = 0

    def do_GET(self) -> None:  # noqa: N802
        path, _, query = self.path.partition("?")
        blob = path.split("/", 3)[3] if path.count("/") >= 3 and "comp=" not in query else None
        cls = type(self)
        if blob is not None:
            with cls.lock:
                cls.tries[blob] = tries = cls.tries.get(blob, 0) + 1
                refuse = blob in cls.broken or tries <= cls.throttle_first
                cls.refused += refuse
            if refuse:
                self.send_response(429 if tries % 2 == 0 and blob not in cls.broken else 503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        response = httpx.get(self.upstream + self.path, headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        self.send_response(response.status_code)
        for key, value in response.headers.items():
            if key.lower() not in ("transfer-encoding", "connection", "content-encoding", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(response.content)))
        self.end_headers()
        self.wfile.write(response.content)
        if blob is not None and response.status_code == 200:
            with cls.lock:
                cls.served += 1

    def log_message(self, *args: object) -> None:
        return


@pytest.fixture()
def proxy(azurite) -> Iterator[str]:
    """The proxy's blob endpoint (use it as account_url); its state is reset for each test."""
    upstream = urlsplit(azurite.blob_endpoint)
    ThrottlingProxy.upstream = f"{upstream.scheme}://{upstream.netloc}"
    ThrottlingProxy.throttle_first, ThrottlingProxy.broken, ThrottlingProxy.tries = 0, set(), {}
    ThrottlingProxy.refused = ThrottlingProxy.served = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), ThrottlingProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/{azurite.account_name}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def impatient_service() -> Iterator[str]:
    """The real service with a short fetch retry budget, so a blob that stays broken ends retryable quickly."""
    running = start_in_thread(
        Settings(allow_private_hosts=True, service_workers=2, fetch_retry_budget_s=0.5), SecretStr(KEY)
    )
    yield running.url
    running.stop()


def assert_every_image_once(cr: Curation, dataset_id: str, images: int) -> None:
    """Each image has exactly one row in files, metadata and embeddings, and none failed."""
    store = cr.catalog.dataset(dataset_id)
    files = store.frame(Table.FILES)
    assert files.height == images and files["image_id"].n_unique() == images
    assert files["error"].null_count() == images, files.filter(pl.col("error").is_not_null())["error"].to_list()
    for table in (Table.METADATA, Table.EMBEDDINGS):
        ids = store.frame(table, columns=["image_id"])["image_id"]
        assert len(ids) == images and ids.n_unique() == images
    record = cr.get_dataset(dataset_id)
    assert (record.status.value, record.counts.processed, record.counts.failed, record.counts.retryable) == (
        "Completed", images, 0, 0)


def test_throttled_blob_reads_are_retried_honouring_retry_after(azurite, settings, proxy):
    container = new_container(azurite)
    upload_images(container, 40)
    ThrottlingProxy.throttle_first = 2  # each blob: 503, then 429, then its bytes
    config = azure_config(azurite, container).model_copy(update={"account_url": proxy})
    cr = Curation(settings=settings)
    dataset_id = cr.curate_dataset("throttled", config, wait=True)
    assert_every_image_once(cr, dataset_id, 40)
    assert ThrottlingProxy.refused == 80 and ThrottlingProxy.served == 40  # every blob refused twice, read once


def test_too_many_transient_failures_fail_the_run_and_resume_processes_them(azurite, settings, proxy,
                                                                             impatient_service):
    container = new_container(azurite)
    names = upload_images(container, 40)
    ThrottlingProxy.broken = set(names[:6])  # 15% of the images: more than the 5% a run may leave retryable
    config = azure_config(azurite, container).model_copy(update={"account_url": proxy})
    cr = Curation(settings=settings.model_copy(update={"service_url": impatient_service, "api_key": SecretStr(KEY)}))
    dataset_id = cr.curate_dataset("storage hiccup", config, wait=True)

    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Failed" and record.counts.retryable == 6 and record.counts.failed == 6
    assert "6 of 40 images (15%) failed for a transient reason" in record.failure_reason
    assert f"curation curate --resume {dataset_id}" in record.failure_reason
    errors = cr.catalog.dataset(dataset_id).frame(Table.FILES).filter(pl.col("error").is_not_null())
    assert sorted(errors["blob_name"]) == sorted(names[:6])
    assert all(e.startswith(f"{RETRYABLE}HTTP 503 fetching") and "sig=" not in e for e in errors["error"])

    ThrottlingProxy.broken = set()  # the storage answers again
    served_before = ThrottlingProxy.served
    assert cr.curate_dataset("ignored", config, wait=True, resume=dataset_id) == dataset_id
    assert ThrottlingProxy.served - served_before == 6  # only the retryable images were fetched again
    assert_every_image_once(cr, dataset_id, 40)
    store = cr.catalog.dataset(dataset_id)
    entry = store.read_json(Document.VERSIONS)[-1]
    assert (entry["version"], entry["added"], entry["failed"], entry["images"]) == (2, 6, 0, 40)
    assert store.frame(Table.LINEAGE)["image_id"].n_unique() == 40

    with pytest.raises(ValueError, match="no retryable images; nothing to resume"):
        cr.curate_dataset("ignored", config, wait=True, resume=dataset_id)


def test_curate_new_blobs_treats_retryable_images_as_not_yet_curated(azurite, settings, proxy, impatient_service):
    container = new_container(azurite)
    names = upload_images(container, 40)
    ThrottlingProxy.broken = set(names[-3:])
    config = azure_config(azurite, container).model_copy(update={"account_url": proxy})
    run = settings.model_copy(update={"service_url": impatient_service, "api_key": SecretStr(KEY),
                                      "max_retryable_share": 0.1})
    cr = Curation(settings=run)
    dataset_id = cr.curate_dataset("a few hiccups", config, wait=True)
    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Completed" and record.counts.retryable == 3  # 7.5%: within the share

    ThrottlingProxy.broken = set()
    summary = cr.curate_new_blobs(config)
    assert (summary["dataset_id"], summary["version"], summary["added"], summary["failed"]) == (dataset_id, 2, 3, 0)
    assert_every_image_once(cr, dataset_id, 40)


def _azurite_at(workdir, port: int):
    """Azurite on this port with its data in workdir: the process and its endpoint."""
    proc = _start(workdir, port)
    assert not isinstance(proc, str), proc
    endpoint = f"http://{HOST}:{port}/{DEV_ACCOUNT_NAME}"
    connection = (f"DefaultEndpointsProtocol=http;AccountName={DEV_ACCOUNT_NAME};AccountKey={DEV_ACCOUNT_KEY};"
                  f"BlobEndpoint={endpoint};")
    return proc, AzuriteEndpoint(DEV_ACCOUNT_NAME, DEV_ACCOUNT_KEY, endpoint, connection, HOST, port)


def test_azurite_killed_mid_run_and_restarted_45_s_later_loses_nothing(tmp_path, settings):
    """The real outage: Azurite stops while the service fetches, and comes back 45 s later on the same port."""
    workdir, port = tmp_path / "azurite", _free_port()
    workdir.mkdir()
    first, azurite = _azurite_at(workdir, port)
    procs = [first]
    try:
        container = new_container(azurite)
        upload_images(container, 160)
        _stop(first)  # a graceful stop and start, so the uploads are on Azurite's disk before the outage
        procs.append(_azurite_at(workdir, port)[0])
        cr = Curation(settings=settings)
        config = azure_config(azurite, container)
        done: dict[str, str] = {}
        run = threading.Thread(target=lambda: done.update(id=cr.curate_dataset("outage", config, wait=True)))
        run.start()
        catalog = Catalog(settings.data_root)
        while not any(r.counts.processed for r in catalog.records()):  # the service has fetched the first images
            assert run.is_alive(), "the run ended before the outage"
            time.sleep(0.05)
        _stop(procs[-1])  # the outage
        time.sleep(45)  # the outage lasts 45 s: the scenario's length, not a synchronisation
        procs.append(_azurite_at(workdir, port)[0])
        run.join()
        dataset_id = done["id"]
        record = cr.get_dataset(dataset_id)
        if record.counts.retryable:  # what outlived the service's retries: the resume processes it
            cr.curate_dataset("ignored", config, wait=True, resume=dataset_id)
        assert_every_image_once(cr, dataset_id, 160)
    finally:
        for proc in procs:
            _stop(proc)
