from __future__ import annotations

import numpy as np

from curation.dataset.catalog import Catalog, Table
from curation.dataset.parquet_io import FILES_SCHEMA, metadata_schema, rows_to_table
from curation.dataset.registry import Counts, Status
from curation.dataset.report import report_markdown, run_report
from curation.dataset.results import write_embeddings


def test_report_counts_classes_and_groups_failures(tmp_path):
    catalog = Catalog(tmp_path)
    record = catalog.register("r", counts=Counts(found=5, accepted=4, processed=2, failed=2))
    store = catalog.dataset(record.id)
    errors = [None, None, "cannot decode image: broken data stream when reading image file 12", "cannot decode image: broken data stream when reading image file 7"]
    files = [{"image_id": f"i{k}", "blob_name": f"{k}.jpg", "size": 1, "error": e} for k, e in enumerate(errors)]
    store.write(Table.FILES, rows_to_table(files, FILES_SCHEMA))
    meta = [{"image_id": f"i{k}", "time": "day" if k < 2 else None} for k in range(4)]
    store.write(Table.METADATA, rows_to_table(meta, metadata_schema()))
    write_embeddings(store, ["i0", "i1"], np.eye(2, 4, dtype=np.float32))
    store.update_record(status=Status.COMPLETED)

    report = run_report(store, seconds=2.0)
    assert report["images_per_second"] == 2.0
    assert report["failures"] == {"cannot decode image: broken data stream when reading image file …": 2}
    day = [r for r in report["classes"] if r["category"] == "time" and r["class"] == "day"]
    assert day == [{"category": "time", "class": "day", "images": 2}]
    assert report["class_counts"]["time"] == {"day": 2, "night": 0, "dawn_dusk": 0, "None": 2}
    assert report["open"] == f"CURATION_DATA_ROOT={tmp_path.resolve()} curation viewer"
    text = report_markdown(report)
    assert "| time | day 2 · night 0 · dawn_dusk 0 · None 2 |" in text
    assert "2 failed" in text and "Took 2.0 s (2.0 images/s)" in text
    assert f"`CURATION_DATA_ROOT={tmp_path.resolve()} curation viewer`" in text and f"dataset `{record.id}`" in text


def test_report_of_a_failed_run_has_its_reason_and_no_classes(tmp_path):
    catalog = Catalog(tmp_path)
    store = catalog.dataset(catalog.register("f", counts=Counts(found=40, accepted=40)).id)
    store.mark_failed("inference service unavailable: 503")
    report = run_report(store)
    assert report["status"] == "Failed" and report["class_counts"] == {} and report["seconds"] is None
    text = report_markdown(report)
    assert "Reason: inference service unavailable: 503" in text and "images/s" not in text


def test_summary_reads_the_completed_dataset_back(tmp_path):
    import polars as pl
    import pytest

    from curation.dataset.report import dataset_summary, summary_markdown

    catalog = Catalog(tmp_path)
    store = catalog.dataset(catalog.register("s", counts=Counts(found=4, accepted=4, processed=3, failed=1)).id)
    errors = [None, None, None, "bad"]
    files = [{"image_id": f"i{k}", "blob_name": f"{k}.jpg", "size": 1, "error": e} for k, e in enumerate(errors)]
    store.write(Table.FILES, rows_to_table(files, FILES_SCHEMA))
    meta = [{"image_id": f"i{k}", "time": ["night", "night", "day", None][k], "road": "city"} for k in range(4)]
    store.write(Table.METADATA, rows_to_table(meta, metadata_schema()))
    analytics = pl.DataFrame(
        {"image_id": [f"i{k}" for k in range(4)], "duplicate_group": [0, 0, None, None],
         "quality_flags": [["dark"], ["dark", "blurry"], [], []]}
    )
    store.write(Table.ANALYTICS, analytics.to_arrow())
    with pytest.raises(ValueError, match="only Completed datasets can be summarised"):
        dataset_summary(store)
    store.update_record(status=Status.COMPLETED)

    summary = dataset_summary(store)
    assert (summary["images"], summary["failed"], summary["duplicates"]) == (4, 1, 2)
    assert summary["top_labels"]["time"] == {"label": "night", "images": 2, "share": 0.5}
    assert summary["top_labels"]["road"] == {"label": "city", "images": 4, "share": 1.0}
    assert summary["quality_flags"] == {"dark": 2, "blurry": 1}
    text = summary_markdown(summary)
    assert "4 images, 1 failed, 2 in duplicate groups." in text and "| time | night | 2 | 50% |" in text
