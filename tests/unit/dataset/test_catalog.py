"""The catalog owns the data root's layout: typed reads and writes round-trip, shards list in order, ids are checked."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.dataset.catalog import Catalog, DatasetStore, Document, PathRefused, Table
from curation.dataset.parquet_io import FILES_SCHEMA, rows_to_table
from curation.dataset.registry import DatasetNotFound, DatasetRecord, DatasetType, DemoDatasetProtected, Status

DATASET = "0123456789abcdef01234567"


def _table(n: int = 3, tag: str = "a") -> pa.Table:
    return pa.table({"image_id": [f"{tag}{i}" for i in range(n)], "value": list(range(n))})


@pytest.mark.parametrize("bad", ["../../etc", "0" * 23, "0" * 24 + "/x", "ABCDEF0123456789abcdef01", "", None])
def test_a_malformed_id_is_refused(tmp_path: Path, bad) -> None:
    with pytest.raises(ValueError, match="not a dataset id"):
        DatasetStore(tmp_path, bad)
    with pytest.raises(ValueError):
        Catalog(tmp_path).dataset(bad)


@pytest.mark.parametrize("table", list(Table))
def test_each_table_round_trips(tmp_path: Path, table: Table) -> None:
    store = Catalog(tmp_path).dataset(DATASET)
    assert not store.has(table) and store.mtime(table) == 0.0
    store.write(table, _table())
    assert store.has(table) and store.mtime(table) > 0
    assert store.read(table).equals(_table())
    assert store.read(table, columns=["value"]).column_names == ["value"]
    assert store.frame(table)["image_id"].to_list() == ["a0", "a1", "a2"]
    assert store.scan(table).select("value").collect()["value"].to_list() == [0, 1, 2]
    assert store.schema(table).names == ["image_id", "value"]
    assert store.table_path(table).is_relative_to(tmp_path / "datasets" / DATASET)
    assert [p.name for p in tmp_path.rglob("*.tmp")] == []


def test_the_streaming_writer_replaces_the_table_only_when_complete(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, DATASET)
    with store.writer(Table.FILES, FILES_SCHEMA, row_group_size=2) as out:
        out.write_rows([{"image_id": f"{i}", "blob_name": f"b{i}"} for i in range(5)])
    assert store.frame(Table.FILES).height == 5
    with pytest.raises(RuntimeError), store.writer(Table.FILES, FILES_SCHEMA, row_group_size=2) as out:
        out.write_rows([{"image_id": "x", "blob_name": "y"}])
        raise RuntimeError("crash")
    assert store.frame(Table.FILES).height == 5


def test_documents_round_trip_with_numpy_and_datetimes(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, DATASET)
    for document in Document:
        assert store.read_json(document) is None
    when = datetime(2026, 1, 2, tzinfo=UTC)
    store.write_json(Document.SAMPLING_REPORT, {"share": np.float32(0.5), "n": np.int64(3), "rows": np.arange(2)})
    store.write_json(Document.VERSIONS, [{"version": 1, "created": when}])
    store.write_json(Document.SELECTION, {"image_ids": ["a"]})
    assert store.read_json(Document.SAMPLING_REPORT) == {"share": 0.5, "n": 3, "rows": [0, 1]}
    assert store.read_json(Document.VERSIONS) == [{"version": 1, "created": str(when)}]
    assert store.read_json(Document.SELECTION) == {"image_ids": ["a"]}


def test_records_register_update_list_and_delete(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    assert catalog.records() == [] and catalog.dataset_ids() == []
    first = catalog.register("first", storage={"kind": "local"})
    second = catalog.register("second", type=DatasetType.DEMO)
    staging = catalog.register("staging", parent_id=first.id)
    store = catalog.dataset(first.id)
    assert store.exists() and store.load_record().storage == {"kind": "local"}
    assert store.update_record(status=Status.COMPLETED).status == Status.COMPLETED
    assert store.mark_failed("because").failure_reason == "because"
    assert {r.id for r in catalog.records()} == {first.id, second.id}
    assert {r.id for r in catalog.records(include_staging=True)} == {first.id, second.id, staging.id}
    assert sorted(catalog.dataset_ids()) == sorted([first.id, second.id, staging.id])
    with pytest.raises(ValueError, match="does not belong"):
        store.save_record(DatasetRecord(id=second.id, name="x"))

    catalog.dataset(staging.id).erase()
    store.delete()
    assert not store.exists() and [r.id for r in catalog.records(include_staging=True)] == [second.id]
    with pytest.raises(DatasetNotFound):
        store.load_record()
    with pytest.raises(DemoDatasetProtected):
        catalog.dataset(second.id).delete()


def test_an_unreadable_record_is_skipped_and_stale_ones_are_found(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    good = catalog.register("good")
    broken = catalog.register("broken")
    [record_file] = [p for p in tmp_path.rglob("dataset.json") if p.parent.name == broken.id]
    record_file.write_text("{not json")
    assert [r.id for r in catalog.records()] == [good.id]
    assert catalog.stale(timedelta(hours=1)) == []
    assert [r.id for r in catalog.stale(timedelta(seconds=-1))] == [good.id]


def test_thumbnail_and_results_shards_list_in_order(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, DATASET)
    assert store.files_shards() == [] and store.results_shards() == []
    for shard in (2, 0, 1):
        store.write_files_shard(shard, _table(1, f"s{shard}-"))
        store.write_results_shard(shard, _table(2, f"r{shard}-"))
    store.write_version_shard(3, 0, _table(1, "v3-"))
    assert store.has_files_shard(1) and not store.has_files_shard(5)
    names = [p.name for p in store.files_shards()]
    assert names == ["files-00000.parquet", "files-00001.parquet", "files-00002.parquet",
                     "files-v0003-00000.parquet"]
    assert [store.shard_version(p) for p in store.files_shards()] == [0, 0, 0, 3]
    assert [t["image_id"][0].as_py() for t in store.iter_files_shards()] == ["s0-0", "s1-0", "s2-0", "v3-0"]
    assert [t.column_names for t in store.iter_files_shards(["value"])][0] == ["value"]
    assert [p.name for p in store.results_shards()] == [f"results-0000{i}.parquet" for i in range(3)]
    assert [t.num_rows for t in store.iter_results_shards()] == [2, 2, 2]
    assert store.files_shard_path(2) == store.files_shards()[2]
    assert store.results_shard_path(0) == store.results_shards()[0]


def test_files_shards_of_an_earlier_release_are_still_listed(tmp_path: Path) -> None:
    """Earlier releases named a shard's files table thumbnails-*.parquet: a dataset curated then keeps its shards
    when a new version is built."""
    store = DatasetStore(tmp_path, DATASET)
    store.write_files_shard(1, _table(1, "new-"))
    legacy = store.files_shard_path(0).with_name("thumbnails-00000.parquet")
    pq.write_table(_table(1, "old-"), legacy)
    pq.write_table(_table(1, "old-v2-"), legacy.with_name("thumbnails-v0002-00000.parquet"))
    assert [store.shard_version(p) for p in store.files_shards()] == [0, 0, 2]
    assert sorted(t["image_id"][0].as_py() for t in store.iter_files_shards()) == ["new-0", "old-0", "old-v2-0"]


def test_shards_move_between_datasets_of_a_version(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    target, staging = catalog.dataset(DATASET), catalog.dataset("89abcdef0123456789abcdef")
    target.write_files_shard(0, _table(1, "old"))
    target.write_files_shard(1, _table(1, "gone"))
    staging.write_files_shard(0, _table(1, "delta"))
    staged = staging.files_shards()[0]
    staging.write_version_shard(2, 0, _table(1, "new"))
    staging.remove_shard(staged)
    staging.carry_shard(target.files_shards()[0], _table(1, "kept"))
    with pytest.raises(PathRefused):
        staging.carry_shard(tmp_path / "elsewhere.parquet", _table())
    with pytest.raises(PathRefused):
        staging.remove_shard(target.files_shards()[0])

    target.replace_shards_from(staging)
    assert [p.name for p in target.files_shards()] == ["files-00000.parquet", "files-v0002-00000.parquet"]
    assert [t["image_id"][0].as_py() for t in target.iter_files_shards()] == ["kept0", "new0"]
    assert staging.files_shards() == []

    staging.write(Table.FILES, _table(2, "f"))
    assert target.move_from(staging, Table.FILES) and not staging.has(Table.FILES)
    assert target.frame(Table.FILES).height == 2
    assert not target.move_from(staging, Document.SAMPLING_REPORT)


def test_shard_jobs_are_one_file_per_shard(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, DATASET)
    assert store.read_shard_job(0) is None and store.read_shard_jobs() == []
    for shard in (1, 0):
        store.write_shard_job(shard, f'{{"shard": {shard}}}')
    assert store.read_shard_job(1) == '{"shard": 1}'
    assert store.read_shard_jobs() == ['{"shard": 0}', '{"shard": 1}']
    assert store.shard_job_path(0).exists()


def test_thumbnails_and_relative_paths(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    target, staging = catalog.dataset(DATASET), catalog.dataset("89abcdef0123456789abcdef")
    image_id = "3f2a9c0d1e4b5a67"
    path = staging.thumbnail_path(image_id)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"jpeg")
    relative = staging.relative(path)
    assert catalog.resolve(relative) == path.resolve()
    moved = target.adopt_thumbnail(relative, image_id, 2)
    assert moved == target.relative(target.thumbnail_path(image_id, version=2)) and moved.endswith(".v2.jpg")
    assert (tmp_path / moved).read_bytes() == b"jpeg" and not path.exists()
    with pytest.raises(PathRefused):
        target.remove_thumbnails([staging.relative(staging.thumbnail_path(image_id))])
    target.remove_thumbnails([moved, moved])  # twice: a missing one is fine
    assert not (tmp_path / moved).exists()
    for bad in ("../outside.jpg", "/etc/passwd", "a\\b.jpg", "", None):
        with pytest.raises(PathRefused):
            catalog.resolve(bad)


def test_tag_versions_and_teach_labels(tmp_path: Path) -> None:
    store = DatasetStore(tmp_path, DATASET)
    assert store.keep_metadata_version(0) is None
    store.write(Table.METADATA, _table(2, "m"))
    assert store.keep_metadata_version(0) == "metadata.v0.parquet" and store.has_metadata_version(0)
    store.write(Table.METADATA, _table(3, "n"))
    assert store.keep_metadata_version(0) == "metadata.v0.parquet"  # kept already: not overwritten
    assert store.read_metadata_version(0).num_rows == 2
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    first = store.new_labels_csv(now)
    first.write_text("file\n")
    second = store.new_labels_csv(now)
    assert first.name == "teach-labels-20260102T030405Z.csv" and second.name == "teach-labels-20260102T030405Z-2.csv"


def test_root_level_files_and_a_store_that_pickles(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path)
    assert catalog.usage_file.parent == tmp_path and catalog.demo_images.parent == tmp_path
    store = catalog.dataset(DATASET)
    copy = pickle.loads(pickle.dumps(store))
    assert copy == store and copy == DatasetStore(tmp_path, DATASET)
    rows = [{"image_id": "i", "blob_name": "b"}]
    store.write(Table.FILES, rows_to_table(rows, FILES_SCHEMA))
    assert copy.frame(Table.FILES)["image_id"].to_list() == ["i"]  # a store sent to a worker reads the same files


def test_settings_take_the_catalogs_usage_file_unless_overridden(tmp_path: Path) -> None:
    from curation.settings import Settings

    assert Settings(data_root=tmp_path).usage_file == Catalog(tmp_path).usage_file
    assert Settings(data_root=tmp_path, usage_path=tmp_path / "u.json").usage_file == tmp_path / "u.json"
