"""curation.dataset.versions: the diff of a listing against the lineage, lineage rules, finding the dataset, the merge."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from curation.dataset import versions
from curation.dataset.catalog import Catalog, Table
from curation.dataset.parquet_io import FILES_SCHEMA, metadata_schema, rows_to_table
from curation.dataset.registry import Status
from curation.dataset.results import write_embeddings
from curation.ingest.ids import image_id_for
from curation.ingest.storage import BlobInfo
from curation.ingest.validation import ValidationReport

NOW = datetime(2026, 1, 2, tzinfo=UTC)
LOCAL = {"kind": "local", "path": "/images", "prefix": None}


def _lineage(*rows: tuple[str, str, int, int]) -> pl.DataFrame:
    return pl.from_arrow(pa.Table.from_pylist(
        [{"image_id": image_id_for(n), "blob_name": n, "etag": e, "size": s, "version": v, "flow_run_id": "r",
          "added_at": NOW, "error": None} for n, e, s, v in rows],
        schema=versions.LINEAGE_SCHEMA,
    ))


def test_diff_finds_new_and_changed_blobs_against_the_latest_version():
    lineage = _lineage(("a.jpg", "e1", 10, 1), ("b.jpg", "e1", 10, 1), ("b.jpg", "e2", 11, 2), ("c.jpg", "e1", 5, 1))
    listing = [BlobInfo("a.jpg", 10, "e1"), BlobInfo("b.jpg", 11, "e2"), BlobInfo("c.jpg", 5, "e9"), BlobInfo("d.jpg", 3, "e1")]
    delta = versions.diff_listing(listing, lineage)
    assert [b.name for b in delta.new] == ["d.jpg"]
    assert [b.name for b in delta.changed] == ["c.jpg"]  # b.jpg matches its version-2 row
    assert [b.name for b in delta.blobs] == ["c.jpg", "d.jpg"] and len(delta) == 2
    assert not versions.diff_listing(listing[:2], lineage)
    assert len(versions.diff_listing(listing, versions.read_lineage(Catalog("/nowhere").dataset("0" * 24)))) == 4


def test_lineage_records_successes_and_undecodable_bytes_but_not_read_or_service_failures():
    files = pl.DataFrame({
        "image_id": [image_id_for(n) for n in ("ok.jpg", "bad.jpg", "unread.jpg", "service.jpg")],
        "error": [None, "cannot decode image: truncated", "cannot read: gone", "HTTP 500"],
        "width": [10, None, None, 10],
    })
    blobs = [BlobInfo(n, 1, "t") for n in ("ok.jpg", "bad.jpg", "unread.jpg", "service.jpg", "missing.jpg")]
    rows = versions.lineage_rows(files, blobs, 3, "run-1", NOW)
    assert rows["blob_name"].to_list() == ["ok.jpg", "bad.jpg"]
    assert rows["error"].to_list() == [None, "cannot decode image: truncated"]
    assert set(rows["version"]) == {3} and set(rows["flow_run_id"]) == {"run-1"}
    entry = versions.version_entry(versions.Delta(new=blobs[:3], changed=blobs[3:4]), rows, files, 3, "run-1", NOW)
    assert (entry["added"], entry["changed"], entry["failed"], entry["images"]) == (1, 0, 3, 4)


def test_find_target_picks_the_completed_dataset_of_that_storage_and_hides_staging(tmp_path):
    catalog = Catalog(tmp_path)
    other = catalog.register("other", storage={**LOCAL, "prefix": "2024/"})
    catalog.dataset(other.id).update_record(status=Status.COMPLETED)
    assert versions.find_target(catalog, LOCAL) is None
    target = catalog.register("drives", storage=LOCAL)
    assert versions.find_target(catalog, LOCAL) is None  # still Processing
    target = catalog.dataset(target.id).update_record(status=Status.COMPLETED)
    staging = versions.register_staging(catalog, target, [BlobInfo("a.jpg", 1)], 2)
    assert versions.find_target(catalog, LOCAL).id == target.id
    assert staging.id not in {r.id for r in catalog.records()}
    assert staging.id in {r.id for r in catalog.records(include_staging=True)}
    assert catalog.dataset(staging.id).frame(Table.LISTING)["name"].to_list() == ["a.jpg"]
    versions.register_staging(catalog, target, [BlobInfo("a.jpg", 1)], 2)  # a crashed run's staging is erased
    assert len([r for r in catalog.records(include_staging=True) if r.parent_id]) == 1
    assert len(versions.drop_staging(catalog, target.id)) == 1
    assert {r.id for r in catalog.records(include_staging=True)} == {other.id, target.id}


def _write_dataset(catalog: Catalog, dataset_id: str, names: list[str], seed: int) -> None:
    store = catalog.dataset(dataset_id)
    rows = []
    for n in names:
        thumb = store.thumbnail_path(image_id_for(n))
        thumb.parent.mkdir(parents=True, exist_ok=True)
        thumb.write_bytes(f"{n}-{seed}".encode())
        rows.append({"image_id": image_id_for(n), "blob_name": n, "size": seed, "width": 8, "height": 8, "format": "jpeg",
                     "thumbnail": store.relative(thumb), "error": None, "content_hash": f"{n}-{seed}"})
    store.write(Table.FILES, rows_to_table(rows, FILES_SCHEMA))
    store.write_files_shard(0, rows_to_table(rows, FILES_SCHEMA))
    meta = [{"image_id": image_id_for(n), "time": "day", "time_confidence": 0.9} for n in names]
    store.write(Table.METADATA, rows_to_table(meta, metadata_schema()))
    vectors = np.random.default_rng(seed).normal(size=(len(names), 4)).astype(np.float32)
    write_embeddings(store, [image_id_for(n) for n in names], vectors)


@pytest.mark.parametrize("version", [2, 1])  # 1: a dataset curated by curate-dataset, adopted without lineage
def test_build_and_publish_replace_changed_rows_and_append_new_ones(tmp_path, version):
    catalog = Catalog(tmp_path)
    target = catalog.register("drives", storage=LOCAL)
    target = catalog.dataset(target.id).update_record(status=Status.COMPLETED)
    _write_dataset(catalog, target.id, ["a.jpg", "b.jpg", "c.jpg"], seed=1)
    t = catalog.dataset(target.id)
    before = t.frame(Table.FILES)
    staging = versions.register_staging(catalog, target, [BlobInfo("b.jpg", 2), BlobInfo("d.jpg", 2)], version)
    _write_dataset(catalog, staging.id, ["b.jpg", "d.jpg"], seed=2)
    s = catalog.dataset(staging.id)

    built = versions.build_version(t, s, version)
    assert_frame_equal(t.frame(Table.FILES), before)  # the target is untouched until published
    assert built["orphans"] == [before.filter(pl.col("blob_name") == "b.jpg")["thumbnail"][0]]

    versions.publish_version(t, s)
    files = t.frame(Table.FILES).sort("blob_name")
    assert files["blob_name"].to_list() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert files["content_hash"].to_list() == ["a.jpg-1", "b.jpg-2", "c.jpg-1", "d.jpg-2"]
    b_thumb = files.filter(pl.col("blob_name") == "b.jpg")["thumbnail"][0]
    assert b_thumb == t.relative(t.thumbnail_path(image_id_for("b.jpg"), version))
    assert catalog.resolve(b_thumb).read_bytes() == b"b.jpg-2"
    assert t.frame(Table.METADATA).height == 4
    embeddings = t.frame(Table.EMBEDDINGS)
    assert embeddings.height == 4 and embeddings["image_id"].n_unique() == 4
    assert float(embeddings.select(pl.col("x").abs().max()).item()) <= 1.0  # layout recomputed for all four
    shards = {p.name: pl.read_parquet(p)["blob_name"].sort().to_list() for p in t.files_shards()}
    assert shards == {"files-00000.parquet": ["a.jpg", "c.jpg"], f"files-v{version:04d}-00000.parquet": ["b.jpg", "d.jpg"]}

    orphan = catalog.resolve(built["orphans"][0])
    assert orphan.exists()
    rows = versions.lineage_rows(files, [BlobInfo("b.jpg", 2), BlobInfo("d.jpg", 2)], version, "run", NOW)
    entry = versions.version_entry(versions.Delta(new=[], changed=[]), rows, files, version, "run", NOW)
    versions.commit_version(t, rows, entry, ValidationReport(found=4, accepted=[], rejected={}), built["orphans"])
    assert not orphan.exists() and catalog.resolve(b_thumb).exists()


def test_commit_appends_lineage_and_manifest_and_updates_the_record(tmp_path):
    catalog = Catalog(tmp_path)
    target = catalog.register("drives", storage=LOCAL)
    _write_dataset(catalog, target.id, ["a.jpg", "b.jpg"], seed=1)
    store = catalog.dataset(target.id)
    report = ValidationReport(found=3, accepted=[BlobInfo("a.jpg", 1, "t"), BlobInfo("b.jpg", 1, "t")], rejected={"x": 1})
    for version, blobs in ((1, report.accepted[:1]), (2, report.accepted[1:])):
        files = store.frame(Table.FILES)
        rows = versions.lineage_rows(files, blobs, version, f"run-{version}", NOW)
        entry = versions.version_entry(versions.Delta(new=blobs, changed=[]), rows, files, version, f"run-{version}", NOW)
        record = versions.commit_version(store, rows, entry, report)
    assert versions.current_version(store) == 2 == record.version
    assert versions.read_lineage(store)["flow_run_id"].to_list() == ["run-1", "run-2"]
    assert [v["version"] for v in versions.read_versions(store)] == [1, 2]
    assert (record.counts.found, record.counts.accepted, record.counts.processed, record.counts.rejected) == (3, 2, 2, {"x": 1})


def test_a_curated_dataset_is_adopted_as_version_1(tmp_path):
    catalog = Catalog(tmp_path)
    store = catalog.dataset(catalog.register("drives", storage=LOCAL, flow_run_id="run-0").id)
    _write_dataset(catalog, store.dataset_id, ["a.jpg", "b.jpg"], seed=1)
    assert versions.adopt_curation(store) is None  # no listing registered
    store.write(Table.LISTING, pa.table({"name": ["a.jpg", "b.jpg"], "size": [1, 1], "etag": ["t", "t"]}))
    entry = versions.adopt_curation(store)
    assert entry["adopted"] and entry["flow_run_id"] == "run-0" and entry["added"] == 2
    assert versions.current_version(store) == 1 == store.load_record().version
    assert versions.read_versions(store) == [entry]
    assert versions.adopt_curation(store) is None  # a lineage exists


def test_a_staging_dataset_publishes_no_artifact_or_event(tmp_path, monkeypatch):
    """Downstream triggers on curation.dataset.completed must not fire for a staging dataset erased moments later."""
    import prefect.artifacts
    import prefect.events

    from curation.tasks.dataset_tasks import publish_report

    emitted: list[str] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda event, **_: emitted.append(event))
    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", lambda **_: None)
    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", lambda **_: None)
    catalog = Catalog(tmp_path)
    target = catalog.dataset(catalog.register("drives", storage=LOCAL).id).update_record(status=Status.COMPLETED)
    staging = versions.register_staging(catalog, target, [BlobInfo("a.jpg", 1)], 2)
    publish_report.fn(catalog.dataset(staging.id), None)
    assert emitted == []
    publish_report.fn(catalog.dataset(target.id), None)
    assert emitted == ["curation.dataset.completed"]
