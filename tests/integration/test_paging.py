"""A container of more blobs than one listing page: the listing pages through all of them, validation counts them.

Azure (and Azurite) return at most 5,000 blobs per page. 10,000 blobs was the first plan, but Azurite takes 75-175 s
to accept them on a 2-core machine (about 60-130 uploads/s, with the Prefect server of the session alongside), so
the container holds 5,001 image blobs in the prefix: one more than a page. Inference is not run on them (too slow
here); listing and validation are what paging affects.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
from azure.storage.blob import ContainerSasPermissions, generate_container_sas
from PIL import Image

from curation import Curation
from curation.dataset.catalog import DatasetStore, Table
from curation.ingest.steps import list_and_validate
from curation.ingest.storage import open_storage
from tests.integration.helpers import azure_config, new_container

COUNT = 5_001  # one over the 5,000-blob page size (10,000 is too slow to upload to Azurite here)


def tiny_jpeg(i: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (i % 256, (i // 256) % 256, 7)).save(out, format="JPEG")
    return out.getvalue()


def test_more_than_a_page_of_blobs_is_listed_and_validated(azurite, settings):
    container = new_container(azurite)
    names = [f"drive/{i % 10:02d}/img_{i:05d}.jpg" for i in range(COUNT)]
    payloads = [tiny_jpeg(i) for i in range(256)]  # identical-ish small bytes, reused
    # Put Blob straight over REST with a write SAS: the same request as ContainerClient.upload_blob(overwrite=True),
    # without the SDK's per-request pipeline, which on 2 cores costs about a third of the upload time.
    token = generate_container_sas(
        azurite.account_name, container.container_name, account_key=azurite.account_key,
        permission=ContainerSasPermissions(write=True, create=True), expiry=datetime.now(UTC) + timedelta(hours=1),
    )
    base = f"{azurite.blob_endpoint}/{container.container_name}"
    with httpx.Client(limits=httpx.Limits(max_connections=12), timeout=30) as http:

        def put(i: int) -> int:
            response = http.put(
                f"{base}/{names[i]}?{token}", content=payloads[i % 256], headers={"x-ms-blob-type": "BlockBlob"}
            )
            return response.status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = list(pool.map(put, range(COUNT)))
    assert set(statuses) == {201}
    # Outside the prefix, and rejected ones inside it.
    container.upload_blob("elsewhere/img.jpg", payloads[0])
    container.upload_blob("drive/readme.txt", b"notes")
    container.upload_blob("drive/empty.jpg", b"")
    # How long the upload took is not the point (it depends on the machine's load): the listing below is.

    # The service really pages: more than one page of (at most 5000) results.
    pages = [len(list(page)) for page in container.list_blobs(name_starts_with="drive/").by_page()]
    assert len(pages) >= 2 and pages[0] == 5000, pages

    config = azure_config(azurite, container, prefix="drive/")
    listed = list(open_storage(config, settings).list_blobs())
    assert len(listed) == COUNT + 2
    assert len({b.name for b in listed}) == len(listed)  # no page repeated
    assert {b.name for b in listed} == set(names) | {"drive/readme.txt", "drive/empty.jpg"}
    assert all(b.size > 0 for b in listed if b.name.endswith(".jpg") and b.name != "drive/empty.jpg")

    report = list_and_validate(open_storage(config, settings), settings.min_images)
    assert report.found == COUNT + 2
    assert len(report.accepted) == COUNT
    assert report.rejected == {"unsupported extension '.txt'": 1, "empty (0 bytes)": 1}
    assert [b.name for b in report.accepted] == sorted(names)

    # Without the prefix the whole container is listed.
    everything = list(open_storage(azure_config(azurite, container), settings).list_blobs())
    assert len(everything) == COUNT + 3

    # And the whole multi-page container curates to the end: every accepted blob exactly once.
    run = settings.model_copy(update={"shard_size": 512, "results_page_size": 2000})
    cr = Curation(settings=run)
    dataset_id = cr.curate_dataset("paged", config, wait=True)
    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Completed" and record.counts.accepted == COUNT
    files = DatasetStore(settings.data_root, dataset_id).frame(Table.FILES)
    assert files.height == COUNT and files["image_id"].n_unique() == COUNT
    assert sorted(files["blob_name"]) == sorted(names)
    assert record.counts.processed + record.counts.failed == COUNT
