"""Flow `track-curation`: poll a dataset's inference job until Completed or Failed, then write its results."""

from __future__ import annotations

import time

from prefect import flow

from curation import registry
from curation.client import ServiceError
from curation.registry import Status
from curation.settings import get_settings
from flows.sample_dataset import sample_dataset
from tasks.dataset_tasks import analyse_dataset
from tasks.curation_tasks import complete_dataset, mark_failed, poll_job, write_results


@flow(name="track-curation", log_prints=False)
def track_curation(dataset_id: str, tracing: bool = True) -> str:
    """Poll the dataset's job until it ends, write its results, analytics and sampling order; returns the dataset status."""
    settings = get_settings()
    record = registry.load(settings.data_root, dataset_id)
    if record.status != Status.PROCESSING:
        return record.status.value
    while True:
        try:
            status = poll_job(dataset_id)
        except ServiceError as exc:  # transient failures already retried for the whole budget
            mark_failed(dataset_id, f"inference service unavailable: {exc}")
            return Status.FAILED.value
        if status.status == "Completed":
            written = write_results(dataset_id)
            if written.failed < written.images:
                analyse_dataset(dataset_id)  # duplicates and quality feed the sampling order
                sample_dataset(dataset_id)
            return complete_dataset(dataset_id).status.value
        if status.status == "Failed":
            mark_failed(dataset_id, f"inference job {status.job_id} failed: {status.reason or 'no reason given'}")
            return Status.FAILED.value
        if not tracing:
            return Status.PROCESSING.value
        time.sleep(settings.poll_interval_s)
