"""Flow `curate-dataset`: list, validate, register, sign and submit each shard, then track (and store) to the end."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from curation.dataset.registry import DatasetFailed, DatasetRecord, DatasetType
from curation.inference.shards import shards
from curation.ingest.storage import BlobInfo
from curation.run import Run
from curation.flows.runners import run_resources
from curation.flows.track_curation import track_curation
from curation.tasks.blocks import StorageParameter, secrets_from_blocks
from curation.tasks.curation_tasks import (
    check_service,
    list_images,
    mark_failed,
    mark_processing,
    register_dataset,
    reopen_dataset,
    resolve_credentials,
    submit_shard,
    with_timeout,
)
from curation.tasks.dataset_tasks import publish_report
from curation.tasks.incremental_tasks import plan_retry


@flow(name="curate-dataset")
@secrets_from_blocks
def curate_dataset(
    name: Annotated[str, Field(description="Display name of the new dataset")],
    storage: StorageParameter,
    dataset_type: Annotated[DatasetType, Field(description="user, or demo for the undeletable demo dataset")] = DatasetType.USER,
    wait_for_completion: Annotated[bool, Field(description="Track the inference job to its end")] = True,
    resume: Annotated[
        str | None,
        Field(description="Id of a dataset to finish, or whose images that failed for a transient reason to process again"),
    ] = None,
) -> str:
    """Curate the images of a container or folder into a dataset; returns the dataset id.

    Args:
        name: Display name of the new dataset.
        storage: Where the images are: an Azure container (kind azure) or a local folder (kind local). Credentials
            come from the block chosen in credentials_block or the worker's environment, never from here.
        dataset_type: user, or demo for the undeletable demo dataset.
        wait_for_completion: Track the inference jobs to their end (false: return once every shard is submitted).
        resume: Id of a dataset to finish instead of registering a new one: an unfinished dataset is finished; a
            written one (Completed, or Failed for too many transient failures) has its retryable images processed
            again, as its next version.
    """
    storage = resolve_credentials(storage)
    with run_resources(storage) as run:
        if resume:
            retry = plan_retry(run.settings, run.dataset(resume), storage)
            if retry is not None:  # a written dataset: its images that failed for a transient reason, as a version
                from curation.flows.curate_new_blobs import retry_images  # that module builds on this one

                with_timeout(check_service, run.settings)(run)
                retry_images(run, run.dataset(resume).load_record(), retry)
                return resume
            record, accepted = reopen_dataset(run.settings, run.dataset(resume), storage)
            with_timeout(check_service, run.settings)(run)
        else:
            report = with_timeout(list_images, run.settings)(run.settings, storage)
            with_timeout(check_service, run.settings)(run)
            record, accepted = register_dataset(run.settings, name, storage, report, dataset_type), report.accepted
        curate_listed(run, record, accepted, wait_for_completion)
    return record.id


def curate_listed(run: Run, record: DatasetRecord, accepted: list[BlobInfo], wait_for_completion: bool) -> None:
    """Signing, submission and tracking of a registered dataset's listed images, inside a flow run.

    Each shard is its own inference job, round-robin over the replicas; the service decodes each image once and
    returns its thumbnail with its tags. The tracking stores each shard's results as its job completes, on the
    task runner the settings ask for (threads, or Dask). Reused by curate-new-blobs for the images a new version
    adds. Marks the dataset Failed on any error."""
    try:
        store = run.dataset(record.id)
        mark_processing(store)
        submit = with_timeout(submit_shard, run.settings)
        down: tuple[str, ...] = ()
        for i, blobs in enumerate(shards(accepted, run.settings.shard_size)):  # in order: inference starts at once
            submitted = submit(run, store, i, blobs, avoid=down)
            down = tuple(sorted({*down, *submitted.unreachable}))  # later shards skip a replica found down
        if wait_for_completion:
            track_curation(record.id, tracing=True, storage=run.storage_config)
    except DatasetFailed:
        raise  # already marked Failed and reported by the tracking
    except BaseException as exc:
        mark_failed(run.dataset(record.id), f"{type(exc).__name__}: {exc}")
        publish_report(run.dataset(record.id), None)
        raise
