"""Images that failed for a transient reason (issue #17): counted, judged against the allowed share, kept out of the
lineage so a later run processes them, and found again for a resume."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
import pyarrow as pa
import pytest

from curation.dataset import versions
from curation.dataset.catalog import Catalog, Table
from curation.dataset.finish import complete_dataset, require_few_retryable
from curation.dataset.parquet_io import FILES_SCHEMA
from curation.dataset.registry import Counts, TransientFailures
from curation.dataset.report import report_markdown
from curation.ingest.ids import image_id_for
from curation.ingest.storage import BlobInfo
from curation.inference.result_pages import RETRYABLE, is_retryable

NOW = datetime(2026, 1, 2, tzinfo=UTC)
SLOW = f"{RETRYABLE}HTTP 503 fetching https://acct.blob.core.windows.net/c/x.jpg (tried 6 times)"


def _dataset(tmp_path, errors: list[str | None], parent_id: str | None = None):
    """A written dataset whose images have these errors; its counts as the write step records them."""
    names = [f"img_{i:03d}.jpg" for i in range(len(errors))]
    catalog = Catalog(tmp_path)
    failed = sum(e is not None for e in errors)
    counts = Counts(found=len(errors), accepted=len(errors), processed=len(errors) - failed, failed=failed,
                    retryable=sum(map(is_retryable, errors)))
    record = catalog.register("d", storage={"kind": "local", "path": "/x"}, counts=counts, parent_id=parent_id)
    store = catalog.dataset(record.id)
    rows = [{"image_id": image_id_for(n), "blob_name": n, "size": 10, "error": e} for n, e in zip(names, errors)]
    store.write(Table.FILES, pa.Table.from_pylist(rows, schema=FILES_SCHEMA))
    store.write(Table.LISTING, pa.table({"name": names, "size": [10] * len(names), "etag": [f"t{i}" for i in range(len(names))]}))
    return store, names


def test_more_retryable_images_than_the_share_fail_the_dataset_with_a_resume_hint(tmp_path):
    store, _ = _dataset(tmp_path, [SLOW] * 3 + [None] * 37)  # 7.5%
    record = complete_dataset(store, max_retryable_share=0.05)
    assert record.status.value == "Failed"
    assert record.failure_reason.startswith("3 of 40 images (8%) failed for a transient reason, more than "
                                            "CURATION_MAX_RETRYABLE_SHARE (5%); first: retryable: HTTP 503")
    assert f"`curation curate --resume {store.dataset_id}`" in record.failure_reason


def test_within_the_share_the_dataset_completes(tmp_path):
    store, _ = _dataset(tmp_path, [SLOW] * 2 + ["HTTP 404 fetching x"] * 5 + [None] * 33)
    assert complete_dataset(store, max_retryable_share=0.05).status.value == "Completed"  # 2 of 40: 5%, not more


def test_a_staging_dataset_is_judged_with_its_version_not_alone(tmp_path):
    store, _ = _dataset(tmp_path, [SLOW, None, None], parent_id="f" * 24)
    assert complete_dataset(store, max_retryable_share=0.05).status.value == "Completed"


def test_all_failed_for_a_transient_reason_says_how_to_process_them_again(tmp_path):
    store, _ = _dataset(tmp_path, [SLOW] * 4)
    record = complete_dataset(store, max_retryable_share=0.05)
    assert record.failure_reason.startswith("all 4 images failed; first error: retryable: HTTP 503")
    assert f"--resume {store.dataset_id}" in record.failure_reason


def test_retryable_images_stay_out_of_the_lineage_and_are_found_for_a_resume(tmp_path):
    store, names = _dataset(tmp_path, [SLOW, "cannot decode image: truncated", None, SLOW])
    assert versions.is_retried(SLOW, None) and not versions.is_retried("cannot decode image: truncated", None)
    files = store.frame(Table.FILES).with_columns(pl.lit(None, pl.Int32).alias("width"))
    rows = versions.lineage_rows(files, [BlobInfo(n, 10, "t") for n in names], 1, "run", NOW)
    assert rows["blob_name"].to_list() == names[1:3]  # the undecodable bytes and the success
    found = versions.retryable_blobs(store)
    assert found == [BlobInfo(names[0], 10, "t0"), BlobInfo(names[3], 10, "t3")]  # with their change tokens


def test_a_version_run_with_too_many_transient_failures_is_refused(tmp_path):
    require_few_retryable("d", retryable=1, images=20, max_share=0.05)  # 5%: fine
    with pytest.raises(TransientFailures, match="2 of the 20 images this run curated .10%. failed for a transient"):
        require_few_retryable("d", retryable=2, images=20, max_share=0.05)


def test_the_run_report_counts_retryable_images_and_names_the_resume():
    report = {"name": "n", "dataset_id": "abc", "status": "Completed", "seconds": None, "failure_reason": None,
              "class_counts": {}, "failures": {}, "open": "curation viewer",
              "counts": Counts(found=10, accepted=10, processed=8, failed=2, retryable=2).model_dump()}
    text = report_markdown(report)
    assert "2 of the failed images failed for a transient reason" in text and "curation curate --resume abc" in text
    report["counts"]["retryable"] = 0
    assert "transient" not in report_markdown(report)


def test_an_image_without_a_result_is_retryable():
    from curation.dataset.results import NO_RESULT

    assert is_retryable(NO_RESULT) and not is_retryable(None) and not is_retryable("HTTP 404 fetching x")


def test_the_version_artifact_mentions_failures_only_when_there_were_some():
    from curation.tasks.incremental_tasks import version_line

    summary = {"version": 2, "added": 5, "changed": 0, "failed": 0, "retryable": 0, "images": 45}
    assert version_line("d", "abc", summary) == "**d** (`abc`) version 2: 5 added, 0 changed; 45 images in the dataset."
    line = version_line("d", "abc", summary | {"failed": 2, "retryable": 1})
    assert "2 failed (1 for a transient reason: the next run retries them)" in line
