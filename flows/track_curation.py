"""Flow `track-curation`: poll a dataset's shard jobs until they end, storing each shard's results as its job completes
(re-submitting lost shards), then write the dataset's results."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from prefect import flow
from prefect.futures import PrefectFuture
from pydantic import Field

from curation import registry
from curation.client import NoReplicaAvailable, ServiceError
from curation.pipeline import lost_shard, settings_for_workers, shards_to_store, storage_of, wait_for_a_shard
from curation.publish import PublishError
from curation.registry import DatasetFailed, Status
from curation.settings import Settings, get_settings
from curation.shard_jobs import ShardLost
from curation.storage import AzureStorageConfig, LocalStorageConfig
from flows.runners import task_runner_for
from tasks.blocks import secrets_from_blocks
from tasks.dataset_tasks import analyse_dataset, compute_sampling, publish_report
from tasks.curation_tasks import (
    StorageConfig,
    complete_dataset,
    mark_failed,
    poll_jobs,
    resolve_credentials,
    store_shard,
    submit_shard,
    write_results,
)
from tasks.publish_tasks import publish_parquet


@flow(name="track-curation", log_prints=False, task_runner=task_runner_for(get_settings()))
@secrets_from_blocks
def track_curation(
    dataset_id: Annotated[str, Field(description="The dataset id that curate-dataset returned")],
    tracing: Annotated[bool, Field(description="Poll until the end (true) or make one status request (false)")] = True,
    storage: Annotated[
        LocalStorageConfig | AzureStorageConfig | None,
        Field(
            discriminator="kind",
            description="Where the images are, to re-sign a shard lost with its replica (default: the dataset's own"
            " storage, with credentials from the environment)",
        ),
    ] = None,
) -> str:
    """Poll the dataset's shard jobs until they end, write results, analytics and sampling order; returns the status.

    A run that ends the dataset Failed raises DatasetFailed after publishing its report, so the flow run is Failed.

    Args:
        dataset_id: The dataset id that curate-dataset returned.
        tracing: Poll until the end (true) or make one status request (false).
        storage: Where the images are, to re-sign a shard lost with its replica (default: the dataset's own storage,
            with credentials from the environment).
    """
    settings = get_settings()
    record = registry.load(settings.data_root, dataset_id)
    if record.status != Status.PROCESSING:
        return record.status.value
    status = _follow_jobs(dataset_id, tracing, settings, storage)
    if status is None:
        return Status.PROCESSING.value
    seconds = (datetime.now(UTC) - record.created).total_seconds()
    publish_report(dataset_id, seconds)
    if status == Status.FAILED.value:  # the flow run fails with the dataset, as Prefect users expect
        raise DatasetFailed(dataset_id, registry.load(settings.data_root, dataset_id).failure_reason)
    return status


def _follow_jobs(dataset_id: str, tracing: bool, settings: Settings, storage: StorageConfig | None) -> str | None:
    """Poll until every shard job ends and finish the dataset; None when not tracing and jobs are still running.

    Each shard's results are stored (store-shard, on the flow's task runner) as soon as its job completes, while
    the service works on the others. A shard lost with its replica (down past the transient budget, restarted
    without a journal, or its results unreadable) is re-submitted to another live replica; the dataset fails only
    when no replica can take it."""
    storing: dict[tuple[int, str], PrefectFuture[int]] = {}
    workers = settings_for_workers(settings)  # store-shard may run in another process (Dask)
    while True:
        try:
            status = poll_jobs(dataset_id)
        except ServiceError as exc:  # e.g. the API key was refused; transient failures mark shards lost instead
            return mark_failed(dataset_id, f"inference service unavailable: {exc}").status.value
        for shard, job_id in shards_to_store(dataset_id, settings):
            if (shard, job_id) not in storing:
                storing[shard, job_id] = store_shard.submit(storage, workers, dataset_id, shard, job_id)
        if status.lost:
            try:
                storage = storage or resolve_credentials(storage_of(registry.load(settings.data_root, dataset_id)))
                for shard in status.lost:
                    blobs, attempt = lost_shard(dataset_id, shard, settings)
                    submit_shard(storage, settings, dataset_id, shard, blobs, attempt=attempt, avoid=status.down)
            except NoReplicaAvailable as exc:
                reason = f"inference service unavailable: {exc} (lost {status.reasons[0]})"
                return mark_failed(dataset_id, reason).status.value
            continue
        if status.status == "Completed" or not tracing:
            if _wait_for_stores(storing):
                continue  # a shard's results were unreadable: it is marked lost, the next poll re-submits it
        if status.status == "Completed":
            try:
                written = write_results(dataset_id, storage)
            except ShardLost:  # a replica went away before its results were read: the shard is re-submitted
                continue
            except ServiceError as exc:  # the service failed otherwise while its results were read
                return mark_failed(dataset_id, f"inference service failed while its results were read: {exc}").status.value
            if written.failed < written.images:
                analyse_dataset(dataset_id)  # duplicates and quality feed the sampling order
                compute_sampling(dataset_id, seed=0, strategy="stratified")
            record = complete_dataset(dataset_id)
            # A hidden staging dataset (curate-new-blobs) is not a dataset of its own: never published.
            if record.status == Status.COMPLETED and get_settings().output_url and record.parent_id is None:
                try:
                    publish_parquet(dataset_id)
                except PublishError as exc:  # whole locally, but not delivered where it was asked for
                    return mark_failed(dataset_id, str(exc)).status.value
            return record.status.value
        if not tracing:
            return None
        wait_for_a_shard(dataset_id, settings, settings.poll_interval_s)  # returns early when a shard job ends


def _wait_for_stores(storing: dict[tuple[int, str], PrefectFuture[int]]) -> bool:
    """Wait for every store-shard task; True when one found its shard lost (the tracker re-submits it).

    Any other failure fails the run: its error says why."""
    lost = False
    for key, future in list(storing.items()):
        future.wait()
        if future.state.is_completed():
            continue
        error = future.result(raise_on_failure=False)
        if not isinstance(error, ShardLost):
            raise error if isinstance(error, BaseException) else RuntimeError(f"shard {key[0]}: {future.state.message}")
        lost = True
        del storing[key]
    return lost
