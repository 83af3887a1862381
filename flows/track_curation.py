"""Flow `track-curation`: poll a dataset's inference job until Completed or Failed, then write its results."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Annotated

from prefect import flow
from pydantic import Field

from curation import registry
from curation.client import ServiceError
from curation.publish import PublishError
from curation.registry import Status
from curation.settings import get_settings
from tasks.blocks import secrets_from_blocks
from tasks.dataset_tasks import analyse_dataset, compute_sampling, publish_report
from tasks.curation_tasks import complete_dataset, mark_failed, poll_job, write_results
from tasks.publish_tasks import publish_parquet


@flow(name="track-curation", log_prints=False)
@secrets_from_blocks
def track_curation(
    dataset_id: Annotated[str, Field(description="The dataset id that curate-dataset returned")],
    tracing: Annotated[bool, Field(description="Poll until the end (true) or make one status request (false)")] = True,
) -> str:
    """Poll the dataset's job until it ends, write its results, analytics and sampling order; returns the dataset status."""
    settings = get_settings()
    record = registry.load(settings.data_root, dataset_id)
    if record.status != Status.PROCESSING:
        return record.status.value
    status = _follow_job(dataset_id, tracing, settings.poll_interval_s)
    if status is None:
        return Status.PROCESSING.value
    seconds = (datetime.now(UTC) - record.created).total_seconds()
    publish_report(dataset_id, seconds)
    return status


def _follow_job(dataset_id: str, tracing: bool, interval: float) -> str | None:
    """Poll until the job ends and finish the dataset; None when not tracing and the job is still running."""
    while True:
        try:
            status = poll_job(dataset_id)
        except ServiceError as exc:  # transient failures already retried for the whole budget
            return mark_failed(dataset_id, f"inference service unavailable: {exc}").status.value
        if status.status == "Completed":
            try:
                written = write_results(dataset_id)
            except ServiceError as exc:  # the service went away while its results were read
                return mark_failed(dataset_id, f"inference service failed while its results were read: {exc}").status.value
            if written.failed < written.images:
                analyse_dataset(dataset_id)  # duplicates and quality feed the sampling order
                compute_sampling(dataset_id, seed=0, strategy="stratified")
            record = complete_dataset(dataset_id)
            if record.status == Status.COMPLETED and get_settings().output_url:
                try:
                    publish_parquet(dataset_id)
                except PublishError as exc:  # whole locally, but not delivered where it was asked for
                    return mark_failed(dataset_id, str(exc)).status.value
            return record.status.value
        if status.status == "Failed":
            reason = f"inference job {status.job_id} failed: {status.reason or 'no reason given'}"
            return mark_failed(dataset_id, reason).status.value
        if not tracing:
            return None
        time.sleep(interval)
