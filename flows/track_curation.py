"""Flow `track-curation`: follow a dataset's shard jobs to their end with the library's tracker
(curation.tracking), each of its actions run as a Prefect task."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from prefect import flow
from prefect.futures import PrefectFuture
from pydantic import Field

from curation.dataset.catalog import DatasetStore
from curation.dataset.registry import DatasetFailed, DatasetRecord, Status
from curation.dataset.results import WrittenCounts
from curation.inference.shard_jobs import Progress, ShardLost
from curation.ingest.storage import LocalStorageConfig
from curation.run import Run
from curation.tracking import ShardKey, track
from curation.flows.runners import TaskRunnerFromSettings, run_resources
from curation.tasks.blocks import AzureStorageParameter, secrets_from_blocks
from curation.tasks.curation_tasks import (
    complete_dataset,
    mark_failed,
    poll_jobs,
    store_shard,
    submit_shard,
    with_timeout,
    write_results,
)
from curation.tasks.dataset_tasks import analyse_dataset, compute_sampling, publish_report
from curation.tasks.publish_tasks import publish_parquet
from curation.inference.shards import lost_shard, shards_to_store, wait_for_a_shard


@flow(name="track-curation", log_prints=False, task_runner=TaskRunnerFromSettings())
@secrets_from_blocks
def track_curation(
    dataset_id: Annotated[str, Field(description="The dataset id that curate-dataset returned")],
    tracing: Annotated[bool, Field(description="Poll until the end (true) or make one status request (false)")] = True,
    storage: Annotated[
        LocalStorageConfig | AzureStorageParameter | None,
        Field(  # no discriminator: Prefect's form draws a plain union as a choice of forms, a discriminated one as JSON
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
    with run_resources(storage) as run:
        store = run.dataset(dataset_id)
        record = store.load_record()
        if record.status != Status.PROCESSING:
            return record.status.value
        status = track(TaskSteps(run, store), tracing, publish=bool(run.settings.output_url))
        if status is None:
            return Status.PROCESSING.value
        publish_report(store, (datetime.now(UTC) - record.created).total_seconds())
        if status == Status.FAILED.value:  # the flow run fails with the dataset, as Prefect users expect
            raise DatasetFailed(dataset_id, store.load_record().failure_reason)
        return status


class TaskSteps:
    """The tracker's actions as Prefect tasks; shards are stored on the flow's task runner (threads or Dask)."""

    def __init__(self, run: Run, store: DatasetStore) -> None:
        self.run, self.dataset = run, store
        self.storing: dict[ShardKey, PrefectFuture[int]] = {}
        self.poll_jobs = with_timeout(poll_jobs, run.settings)
        self.store_shard = with_timeout(store_shard, run.settings)
        self.submit_shard = with_timeout(submit_shard, run.settings)
        self.write_results = with_timeout(write_results, run.settings)

    def poll(self) -> Progress:
        return self.poll_jobs(self.run, self.dataset)

    def unstored(self) -> list[ShardKey]:
        return shards_to_store(self.dataset)

    def store(self, key: ShardKey) -> None:
        self.storing[key] = self.store_shard.submit(self.run, self.dataset, key[0], key[1])

    def await_stores(self) -> set[ShardKey]:
        """Wait for every store-shard task; those that found their shard lost are returned. Any other failure
        fails the run: its error says why."""
        lost: set[ShardKey] = set()
        for key, future in list(self.storing.items()):
            future.wait()
            if future.state.is_completed():
                continue
            error = future.result(raise_on_failure=False)
            if not isinstance(error, ShardLost):
                raise error if isinstance(error, BaseException) else RuntimeError(f"shard {key[0]}: {future.state.message}")
            lost.add(key)
            del self.storing[key]
        return lost

    def resubmit(self, shards: tuple[int, ...], avoid: tuple[str, ...]) -> None:
        for shard in shards:
            blobs, attempt = lost_shard(self.run.replicas, self.dataset, shard)
            self.submit_shard(self.run, self.dataset, shard, blobs, attempt=attempt, avoid=avoid)

    def wait(self) -> None:
        wait_for_a_shard(self.run.replicas, self.dataset, self.run.settings.poll_interval_s)

    def write(self) -> WrittenCounts:
        return self.write_results(self.dataset)

    def analyse(self) -> None:
        analyse_dataset(self.dataset)

    def sample(self) -> None:
        compute_sampling(self.dataset, seed=0, strategy="stratified")

    def complete(self) -> DatasetRecord:
        return complete_dataset(self.dataset, self.run.settings.max_retryable_share)

    def publish(self) -> None:
        publish_parquet(self.dataset, self.run.settings)

    def fail(self, reason: str) -> DatasetRecord:
        return mark_failed(self.dataset, reason)
