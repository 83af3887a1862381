"""Storage that goes away during listing, and two curations of one container at once."""

from __future__ import annotations

import http.server
import threading
from urllib.parse import urlsplit

import httpx
import pytest

from curation import Curation, StorageError
from curation.dataset.catalog import DatasetStore, Table
from tests.integration.helpers import azure_config, leftovers, new_container, upload_images


class DropSecondListingPage(http.server.BaseHTTPRequestHandler):
    """A proxy in front of Azurite that forwards everything but cuts the connection on a listing's second page."""

    upstream = ""
    first_pages = 0

    def do_GET(self) -> None:
        if "comp=list" in self.path and "marker=" in self.path:
            self.connection.close()  # Azurite "goes away" half-way through the listing
            return
        if "comp=list" in self.path:
            type(self).first_pages += 1
        response = httpx.get(self.upstream + self.path, headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
        self.send_response(response.status_code)
        for key, value in response.headers.items():
            if key.lower() not in ("transfer-encoding", "connection", "content-encoding"):
                self.send_header(key, value)
        self.end_headers()
        self.wfile.write(response.content)

    def log_message(self, *args: object) -> None:
        return


def test_storage_lost_during_listing_is_a_clear_error_and_leaves_no_dataset(azurite, settings):
    from curation.ingest import storage

    container = new_container(azurite)
    upload_images(container, 35)
    upstream = urlsplit(azurite.blob_endpoint)
    DropSecondListingPage.upstream = f"{upstream.scheme}://{upstream.netloc}"
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DropSecondListingPage)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    previous = dict(storage.AZURE_CLIENT_KWARGS)
    storage.AZURE_CLIENT_KWARGS.update(retry_total=1, initial_backoff=0.1, connection_timeout=2)
    try:
        proxied = f"http://127.0.0.1:{proxy.server_port}/{azurite.account_name}"
        config = azure_config(azurite, container).model_copy(update={"account_url": proxied})
        run = settings.model_copy(update={"azure_list_page_size": 10})  # 4 pages: the second one fails
        with pytest.raises(StorageError) as info:
            Curation(settings=run).curate_dataset("listing cut", config)
        assert f"cannot list container '{container.container_name}'" in str(info.value)
        from curation.tasks.curation_tasks import list_images

        # Each attempt of the list-images task (its declared retries) got the first page; the cut came mid-listing.
        assert DropSecondListingPage.first_pages == 1 + list_images.retries
        assert azurite.account_key not in str(info.value)
        assert leftovers(settings.data_root) == []
    finally:
        storage.AZURE_CLIENT_KWARGS.clear()
        storage.AZURE_CLIENT_KWARGS.update(previous)
        proxy.shutdown()


def test_two_curations_of_one_container_at_once(azurite, settings):
    container = new_container(azurite)
    names = upload_images(container, 33)
    config = azure_config(azurite, container)
    run = settings.model_copy(update={"azure_list_page_size": 10})  # paging on the way
    ids: dict[int, str] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def curate(n: int) -> None:
        try:
            start.wait(timeout=180)  # a deadline only
            ids[n] = Curation(settings=run).curate_dataset(f"run {n}", config, wait=True)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=curate, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not errors, errors
    assert len(set(ids.values())) == 2
    for dataset_id in ids.values():
        record = Curation(settings=run).get_dataset(dataset_id)
        assert record.status.value == "Completed" and record.counts.processed == 33
        store = DatasetStore(settings.data_root, dataset_id)
        files = store.frame(Table.FILES)
        assert sorted(files["blob_name"]) == sorted(names) and files["image_id"].n_unique() == 33
        own = {i: store.relative(store.thumbnail_path(i)) for i in files["image_id"]}  # each run's own thumbnails
        assert all(t == own[i] for i, t in zip(files["image_id"], files["thumbnail"], strict=True))
