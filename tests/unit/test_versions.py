"""curation.versions: the diff of a listing against the lineage, lineage rules, finding the dataset, the merge."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from curation import registry, versions
from curation.ids import image_id_for
from curation.parquet_io import FILES_SCHEMA, metadata_schema, rows_to_table, write_table
from curation.paths import dataset_paths
from curation.registry import Status
from curation.results import write_embeddings
from curation.storage import BlobInfo
from curation.validation import ValidationReport

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
    assert len(versions.diff_listing(listing, versions.read_lineage(dataset_paths("/nowhere", "0" * 24)))) == 4


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
    other = registry.register(tmp_path, "other", storage={**LOCAL, "prefix": "2024/"})
    registry.update(tmp_path, other.id, status=Status.COMPLETED)
    assert versions.find_target(tmp_path, LOCAL) is None
    target = registry.register(tmp_path, "drives", storage=LOCAL)
    assert versions.find_target(tmp_path, LOCAL) is None  # still Processing
    target = registry.update(tmp_path, target.id, status=Status.COMPLETED)
    staging = versions.register_staging(tmp_path, target, [BlobInfo("a.jpg", 1)], 2)
    assert versions.find_target(tmp_path, LOCAL).id == target.id
    assert staging.id not in {r.id for r in registry.list_records(tmp_path)}
    assert staging.id in {r.id for r in registry.list_records(tmp_path, include_staging=True)}
    versions.register_staging(tmp_path, target, [BlobInfo("a.jpg", 1)], 2)  # a crashed run's staging is erased
    assert len([r for r in registry.list_records(tmp_path, include_staging=True) if r.parent_id]) == 1
    assert len(versions.drop_staging(tmp_path, target.id)) == 1
    assert {r.id for r in registry.list_records(tmp_path, include_staging=True)} == {other.id, target.id}


def _write_dataset(root, dataset_id: str, names: list[str], seed: int, shard_name: str = "thumbnails-00000.parquet") -> None:
    paths = dataset_paths(root, dataset_id)
    rows = []
    for n in names:
        thumb = paths.thumbnail(image_id_for(n))
        thumb.parent.mkdir(parents=True, exist_ok=True)
        thumb.write_bytes(f"{n}-{seed}".encode())
        rows.append({"image_id": image_id_for(n), "blob_name": n, "size": seed, "width": 8, "height": 8, "format": "jpeg",
                     "thumbnail": thumb.relative_to(root).as_posix(), "error": None, "content_hash": f"{n}-{seed}"})
    write_table(paths.files, rows_to_table(rows, FILES_SCHEMA))
    write_table(paths.work / shard_name, rows_to_table(rows, FILES_SCHEMA))
    meta = [{"image_id": image_id_for(n), "time": "day", "time_confidence": 0.9} for n in names]
    write_table(paths.metadata, rows_to_table(meta, metadata_schema()))
    vectors = np.random.default_rng(seed).normal(size=(len(names), 4)).astype(np.float32)
    write_embeddings(paths, [image_id_for(n) for n in names], vectors)


@pytest.mark.parametrize("version", [2, 1])  # 1: a dataset curated by curate-dataset, adopted without lineage
def test_build_and_publish_replace_changed_rows_and_append_new_ones(tmp_path, version):
    target = registry.register(tmp_path, "drives", storage=LOCAL)
    target = registry.update(tmp_path, target.id, status=Status.COMPLETED)
    _write_dataset(tmp_path, target.id, ["a.jpg", "b.jpg", "c.jpg"], seed=1)
    t = dataset_paths(tmp_path, target.id)
    before = pl.read_parquet(t.files)
    staging = versions.register_staging(tmp_path, target, [BlobInfo("b.jpg", 2), BlobInfo("d.jpg", 2)], version)
    _write_dataset(tmp_path, staging.id, ["b.jpg", "d.jpg"], seed=2)

    built = versions.build_version(tmp_path, target.id, staging.id, version)
    assert_frame_equal(pl.read_parquet(t.files), before)  # the target is untouched until published
    assert built["orphans"] == [before.filter(pl.col("blob_name") == "b.jpg")["thumbnail"][0]]

    versions.publish_version(tmp_path, target.id, staging.id)
    files = pl.read_parquet(t.files).sort("blob_name")
    assert files["blob_name"].to_list() == ["a.jpg", "b.jpg", "c.jpg", "d.jpg"]
    assert files["content_hash"].to_list() == ["a.jpg-1", "b.jpg-2", "c.jpg-1", "d.jpg-2"]
    b_thumb = tmp_path / files.filter(pl.col("blob_name") == "b.jpg")["thumbnail"][0]
    assert b_thumb == t.versioned_thumbnail(image_id_for("b.jpg"), version) and b_thumb.read_bytes() == b"b.jpg-2"
    assert pl.read_parquet(t.metadata).height == 4
    embeddings = pl.read_parquet(t.embeddings)
    assert embeddings.height == 4 and embeddings["image_id"].n_unique() == 4
    assert float(embeddings.select(pl.col("x").abs().max()).item()) <= 1.0  # layout recomputed for all four
    shards = {p.name: pl.read_parquet(p)["blob_name"].sort().to_list() for p in t.work.glob("thumbnails-*.parquet")}
    assert shards == {"thumbnails-00000.parquet": ["a.jpg", "c.jpg"], f"thumbnails-v{version:04d}-00000.parquet": ["b.jpg", "d.jpg"]}


def test_commit_appends_lineage_and_manifest_and_updates_the_record(tmp_path):
    target = registry.register(tmp_path, "drives", storage=LOCAL)
    _write_dataset(tmp_path, target.id, ["a.jpg", "b.jpg"], seed=1)
    paths = dataset_paths(tmp_path, target.id)
    report = ValidationReport(found=3, accepted=[BlobInfo("a.jpg", 1, "t"), BlobInfo("b.jpg", 1, "t")], rejected={"x": 1})
    for version, blobs in ((1, report.accepted[:1]), (2, report.accepted[1:])):
        files = pl.read_parquet(paths.files)
        rows = versions.lineage_rows(files, blobs, version, f"run-{version}", NOW)
        entry = versions.version_entry(versions.Delta(new=blobs, changed=[]), rows, files, version, f"run-{version}", NOW)
        record = versions.commit_version(tmp_path, target.id, rows, entry, report)
    assert versions.current_version(paths) == 2 == record.version
    assert versions.read_lineage(paths)["flow_run_id"].to_list() == ["run-1", "run-2"]
    assert [v["version"] for v in versions.read_versions(paths)] == [1, 2]
    assert (record.counts.found, record.counts.accepted, record.counts.processed, record.counts.rejected) == (3, 2, 2, {"x": 1})


def test_a_staging_dataset_publishes_no_artifact_or_event(tmp_path, monkeypatch):
    """Downstream triggers on curation.dataset.completed must not fire for a staging dataset erased moments later."""
    import prefect.artifacts
    import prefect.events

    from curation.settings import Settings, use_settings
    from tasks.dataset_tasks import publish_report

    emitted: list[str] = []
    monkeypatch.setattr(prefect.events, "emit_event", lambda event, **_: emitted.append(event))
    monkeypatch.setattr(prefect.artifacts, "create_markdown_artifact", lambda **_: None)
    monkeypatch.setattr(prefect.artifacts, "create_table_artifact", lambda **_: None)
    target = registry.update(tmp_path, registry.register(tmp_path, "drives", storage=LOCAL).id, status=Status.COMPLETED)
    staging = versions.register_staging(tmp_path, target, [BlobInfo("a.jpg", 1)], 2)
    with use_settings(Settings(data_root=tmp_path)):
        publish_report.fn(staging.id, None)
        assert emitted == []
        publish_report.fn(target.id, None)
    assert emitted == ["curation.dataset.completed"]
