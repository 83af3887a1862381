from __future__ import annotations

import numpy as np

from curation import registry
from curation.parquet_io import FILES_SCHEMA, metadata_schema, rows_to_table, write_table
from curation.paths import dataset_paths
from curation.registry import Counts, Status
from curation.results import write_embeddings
from curation.run_report import report_markdown, run_report


def test_report_counts_classes_and_groups_failures(tmp_path):
    record = registry.register(tmp_path, "r", counts=Counts(found=5, accepted=4, processed=2, failed=2))
    paths = dataset_paths(tmp_path, record.id)
    errors = [None, None, "cannot decode image: broken data stream when reading image file 12", "cannot decode image: broken data stream when reading image file 7"]
    files = [{"image_id": f"i{k}", "blob_name": f"{k}.jpg", "size": 1, "error": e} for k, e in enumerate(errors)]
    write_table(paths.files, rows_to_table(files, FILES_SCHEMA))
    meta = [{"image_id": f"i{k}", "time": "day" if k < 2 else None} for k in range(4)]
    write_table(paths.metadata, rows_to_table(meta, metadata_schema()))
    write_embeddings(paths, ["i0", "i1"], np.eye(2, 4, dtype=np.float32))
    registry.update(tmp_path, record.id, status=Status.COMPLETED)

    report = run_report(tmp_path, record.id, seconds=2.0)
    assert report["images_per_second"] == 2.0
    assert report["failures"] == {"cannot decode image: broken data stream when reading image file …": 2}
    day = [r for r in report["classes"] if r["category"] == "time" and r["class"] == "day"]
    assert day == [{"category": "time", "class": "day", "images": 2}]
    text = report_markdown(report)
    assert "| time | day | 2 |" in text and "2 failed" in text and "2.0 images/s" in text
