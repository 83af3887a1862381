"""Two curations of the same folder at once, on the embedded service: each completes on its own, neither touches the
other's files."""

from __future__ import annotations

import threading
from pathlib import Path

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import Catalog, Table
from curation.inference.shard_jobs import read_jobs
from curation.ingest.ids import image_id_for
from tests.images import write_images

COUNT = 40


def test_two_curations_of_one_folder_at_once(tmp_path, settings, monkeypatch):
    names = write_images(tmp_path / "images", COUNT)
    config = LocalStorageConfig(path=tmp_path / "images")
    embedded = settings.model_copy(update={"service_url": None, "api_key": None})
    # A relative default data root (./data) would land here if a run fell back to the environment's settings.
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)

    start = threading.Barrier(2)
    ids: dict[int, str] = {}
    errors: dict[int, BaseException] = {}

    def run(n: int) -> None:
        try:
            cr = Curation(settings=embedded)
            start.wait(timeout=180)  # a deadline only
            ids[n] = cr.curate_dataset(f"concurrent {n}", config, wait=True)
        except BaseException as exc:  # reported below
            errors[n] = exc

    threads = [threading.Thread(target=run, args=(n,), name=f"curation-{n}") for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a curation did not finish"
    assert not errors, errors
    assert ids[1] != ids[2]
    assert not any(cwd.iterdir()), f"a run wrote outside its data root: {list(cwd.rglob('*'))}"

    root = Path(embedded.data_root)
    catalog = Catalog(root)
    assert sorted(catalog.dataset_ids()) == sorted(ids.values())
    assert sorted(r.id for r in catalog.records(include_staging=True)) == sorted(ids.values())
    cr = Curation(settings=embedded)
    expected_ids = {image_id_for(n) for n in names}
    thumbnails: set[Path] = set()
    for dataset_id in ids.values():
        record = cr.get_dataset(dataset_id)
        assert record.status.value == "Completed", record.failure_reason
        assert (record.counts.accepted, record.counts.processed, record.counts.failed) == (COUNT, COUNT, 0)
        store = catalog.dataset(dataset_id)
        files = store.frame(Table.FILES)
        assert sorted(files["blob_name"]) == sorted(names) and files["error"].null_count() == COUNT
        assert set(store.frame(Table.METADATA)["image_id"]) == expected_ids
        assert set(store.frame(Table.EMBEDDINGS)["image_id"]) == expected_ids
        assert store.frame(Table.ANALYTICS).height == COUNT
        assert store.frame(Table.SAMPLING).height == COUNT
        # Thumbnails: each dataset's own, where its store puts them, exactly one per image.
        for image_id, thumbnail in files.select("image_id", "thumbnail").iter_rows():
            assert thumbnail == store.relative(store.thumbnail_path(image_id)), (dataset_id, thumbnail)
        own = {catalog.resolve(t) for t in files["thumbnail"]}
        assert len(own) == COUNT and all(p.is_file() for p in own)
        thumbnails |= own
        assert len(store.files_shards()) == 3  # 40 images in shards of 16
        export = cr.export_dataset(dataset_id)
        assert export["dataset"]["id"] == dataset_id and len(export["images"]) == COUNT
    # No other thumbnail under the data root: the two datasets' own, 2 x COUNT files.
    assert {p.resolve() for p in root.rglob("*.jpg")} == thumbnails and len(thumbnails) == 2 * COUNT
    # Distinct jobs on the service, none shared by idempotency: 3 shard jobs per dataset.
    jobs = [{j.job_id for j in read_jobs(catalog.dataset(ids[n]))} for n in (1, 2)]
    assert len(jobs[0]) == len(jobs[1]) == 3 and not jobs[0] & jobs[1]
