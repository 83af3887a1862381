"""curate-new-blobs: versions with lineage, idempotent re-runs, and recovery from a failed run (real service, Prefect)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from pydantic import SecretStr

from curation import Curation, LocalStorageConfig
from curation.dataset import versions
from curation.dataset.catalog import Catalog, Document, Table
from curation.inference.service.server import start_in_thread
from curation.ingest.ids import image_id_for
from curation.settings import Settings
from tests.images import jpeg_bytes, write_images
from tests.integration.helpers import azure_config, new_container, upload_images


def _snapshot(root: Path) -> dict[str, int]:
    """Every file and folder under the data root with its mtime, but the catalog's root-level files (the usage
    ledger the embedded service keeps, the demo images)."""
    catalog = Catalog(root)
    kept = (catalog.usage_file, catalog.demo_images)
    return {
        str(p.relative_to(catalog.root)): p.stat().st_mtime_ns
        for p in sorted(catalog.root.rglob("*"))
        if not any(p.is_relative_to(k) for k in kept)
    }


def _flow_run_name(flow_run_id: str) -> str:
    from prefect import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def read() -> str:
        async with get_client() as client:
            run = await client.read_flow_run(flow_run_id)
            flow = await client.read_flow(run.flow_id)
            return flow.name

    return run_coro_as_sync(read())


def _assert_whole(root: Path, dataset_id: str, images: int) -> pl.DataFrame:
    """Every table has one row per image (no doubles), and the shards feeding analytics hold each image once."""
    catalog = Catalog(root)
    store = catalog.dataset(dataset_id)
    files = store.frame(Table.FILES)
    assert files.height == images and files["image_id"].n_unique() == images
    for table in (Table.METADATA, Table.ANALYTICS, Table.SAMPLING, Table.EMBEDDINGS):
        frame = store.frame(table)
        assert frame.height == images and set(frame["image_id"]) == set(files["image_id"]), table
    shards = pl.concat([pl.from_arrow(t) for t in store.iter_files_shards(columns=["image_id"])])
    assert shards.height == images and shards["image_id"].n_unique() == images
    assert all(catalog.resolve(t).exists() for t in files["thumbnail"].drop_nulls())
    assert [r.id for r in catalog.records(include_staging=True)] == [dataset_id]  # staging erased
    return files


@pytest.fixture()
def cr(settings: Settings) -> Curation:
    return Curation(settings=settings.model_copy(update={"service_url": None, "api_key": None}))


def test_versions_lineage_and_idempotent_rerun(tmp_path, cr):
    folder = tmp_path / "images"
    write_images(folder, 35)
    config = LocalStorageConfig(path=folder)
    root = cr.settings.data_root

    first = cr.curate_new_blobs(config, name="drives")
    dataset_id = first["dataset_id"]
    assert (first["version"], first["added"], first["changed"], first["failed"], first["images"]) == (1, 35, 0, 0, 35)
    assert cr.get_dataset(dataset_id).version == 1

    write_images(folder, 5, start=35)
    (folder / "img_0003.jpg").write_bytes(changed := jpeg_bytes(999))
    second = cr.curate_new_blobs(config)
    assert second["dataset_id"] == dataset_id
    assert (second["version"], second["added"], second["changed"], second["failed"], second["images"]) == (2, 5, 1, 0, 40)
    files = _assert_whole(root, dataset_id, 40)
    row = files.filter(pl.col("blob_name") == "img_0003.jpg").row(0, named=True)
    assert row["content_hash"] == hashlib.sha256(changed).hexdigest() and row["error"] is None

    store = Catalog(root).dataset(dataset_id)
    lineage = versions.read_lineage(store)
    v2 = lineage.filter(pl.col("version") == 2)
    assert sorted(v2["blob_name"]) == ["img_0003.jpg", *[f"img_{i:04d}.jpg" for i in range(35, 40)]]
    assert set(v2["flow_run_id"]) == {second["flow_run_id"]} != {first["flow_run_id"]}
    assert _flow_run_name(second["flow_run_id"]) == "curate-new-blobs"  # lineage names a real Prefect flow run
    manifest = store.read_json(Document.VERSIONS)
    assert [(v["version"], v["added"], v["changed"]) for v in manifest] == [(1, 35, 0), (2, 5, 1)]
    record = cr.get_dataset(dataset_id)
    assert (record.version, record.counts.accepted, record.counts.processed) == (2, 40, 40)
    assert not store.thumbnail_path(image_id_for("img_0003.jpg")).exists()  # v1's thumbnail of the changed image

    before = _snapshot(root)
    third = cr.curate_new_blobs(config)
    assert (third["version"], third["added"], third["changed"]) == (None, 0, 0)
    assert _snapshot(root) == before  # nothing written, not even touched
    assert [r.id for r in Catalog(root).records(include_staging=True)] == [dataset_id]

    from typer.testing import CliRunner

    from curation.cli import app
    from curation.settings import use_settings

    with use_settings(cr.settings):
        result = CliRunner().invoke(app, ["curate-new", "--local", str(folder)])
    assert result.exit_code == 0 and f"dataset {dataset_id}: nothing new" in result.output
    assert _snapshot(root) == before


def test_crash_before_commit_then_rerun_picks_up_exactly_the_missing(tmp_path, cr, monkeypatch):
    folder = tmp_path / "images"
    write_images(folder, 33)
    config = LocalStorageConfig(path=folder)
    dataset_id = cr.curate_new_blobs(config)["dataset_id"]
    write_images(folder, 4, start=33)

    real_publish = versions.publish_version

    def publish_then_die(*args, **kwargs):  # the worst moment: the new tables are published, the lineage is not
        real_publish(*args, **kwargs)
        raise RuntimeError("process died before the commit")

    monkeypatch.setattr(versions, "publish_version", publish_then_die)
    with pytest.raises(RuntimeError, match="died before the commit"):
        cr.curate_new_blobs(config)
    store = Catalog(cr.settings.data_root).dataset(dataset_id)
    assert versions.current_version(store) == 1 and cr.get_dataset(dataset_id).version == 1

    monkeypatch.setattr(versions, "publish_version", real_publish)
    retried = cr.curate_new_blobs(config)
    assert (retried["version"], retried["added"], retried["changed"], retried["images"]) == (2, 4, 0, 37)
    _assert_whole(cr.settings.data_root, dataset_id, 37)
    assert versions.read_lineage(store).height == 37
    assert [v["version"] for v in versions.read_versions(store)] == [1, 2]


def test_service_stopped_mid_run_then_next_run_adds_the_delta(tmp_path, settings, monkeypatch):
    """The real service over HTTP stops once the delta's curation began: the run fails, the dataset is untouched."""
    key = SecretStr("incremental-test-key")
    service = start_in_thread(Settings(allow_file_urls=True, allow_private_hosts=True, service_workers=1), key)
    fast = settings.model_copy(update={"service_url": service.url, "api_key": key, "transient_budget_s": 1.0})
    cr = Curation(settings=fast)
    folder = tmp_path / "images"
    write_images(folder, 31)
    config = LocalStorageConfig(path=folder)
    dataset_id = cr.curate_new_blobs(config)["dataset_id"]
    write_images(folder, 3, start=31)
    catalog = Catalog(fast.data_root)
    store = catalog.dataset(dataset_id)
    tables = [store.table_path(t) for t in (Table.FILES, Table.EMBEDDINGS, Table.LINEAGE)]
    before = {p: p.stat().st_mtime_ns for p in tables}
    manifest = store.read_json(Document.VERSIONS)

    real_register = versions.register_staging

    def register_then_stop(*args, **kwargs):  # the service goes away once the delta's curation has begun
        staging = real_register(*args, **kwargs)
        service.stop()
        return staging

    monkeypatch.setattr(versions, "register_staging", register_then_stop)
    with pytest.raises(Exception) as failed:
        cr.curate_new_blobs(config)
    assert key.get_secret_value() not in str(failed.value)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert store.read_json(Document.VERSIONS) == manifest
    assert [r.id for r in catalog.records(include_staging=True)] == [dataset_id]

    monkeypatch.setattr(versions, "register_staging", real_register)
    restarted = start_in_thread(Settings(allow_file_urls=True, allow_private_hosts=True, service_workers=1), key)
    try:
        cr = Curation(settings=fast.model_copy(update={"service_url": restarted.url}))
        retried = cr.curate_new_blobs(config)
    finally:
        restarted.stop()
    assert (retried["version"], retried["added"], retried["failed"], retried["images"]) == (2, 3, 0, 34)
    _assert_whole(fast.data_root, dataset_id, 34)


def test_azure_etag_detects_a_blob_overwritten_with_the_same_size(azurite, settings):
    container = new_container(azurite)
    upload_images(container, 31)
    config = azure_config(azurite, container)
    cr = Curation(settings=settings)
    dataset_id = cr.curate_new_blobs(config)["dataset_id"]
    etag = versions.read_lineage(Catalog(settings.data_root).dataset(dataset_id)).filter(pl.col("blob_name") == "img_0001.jpg")["etag"][0]
    assert etag and etag == container.get_blob_client("img_0001.jpg").get_blob_properties().etag.strip('"')

    same = container.download_blob("img_0001.jpg").readall()
    container.upload_blob("img_0001.jpg", same, overwrite=True)  # same bytes, same size: only the ETag changes
    container.upload_blob("new/a.jpg", jpeg_bytes(500))
    second = cr.curate_new_blobs(config)
    assert (second["version"], second["added"], second["changed"], second["images"]) == (2, 1, 1, 32)
    assert cr.curate_new_blobs(config)["version"] is None
    _assert_whole(settings.data_root, dataset_id, 32)


def test_a_dataset_from_curate_dataset_is_adopted_as_version_1_not_redone(tmp_path, cr):
    """Scheduling curate-new-blobs over a container already curated by curate-dataset re-curates nothing."""
    folder = tmp_path / "images"
    write_images(folder, 33)
    config = LocalStorageConfig(path=folder)
    root = cr.settings.data_root
    dataset_id = cr.curate_dataset("drives", config, wait=True)
    store = Catalog(root).dataset(dataset_id)

    first = cr.curate_new_blobs(config)
    assert (first["dataset_id"], first["version"], first["added"], first["changed"]) == (dataset_id, None, 0, 0)
    lineage = versions.read_lineage(store)
    assert lineage.height == 33 and set(lineage["version"]) == {1}
    (run_id,) = set(lineage["flow_run_id"])
    assert _flow_run_name(run_id) == "curate-dataset"  # which run added the images: the original curation
    assert [v["adopted"] for v in versions.read_versions(store)] == [True]

    write_images(folder, 2, start=33)
    second = cr.curate_new_blobs(config)
    assert (second["version"], second["added"], second["changed"], second["images"]) == (2, 2, 0, 35)
    _assert_whole(root, dataset_id, 35)
