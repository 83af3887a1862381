"""Flow `curate-new-blobs`: curate only what was added or changed since the last version, as a new version."""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from pydantic import Field

from curation.dataset.finish import require_few_retryable
from curation.dataset.registry import DatasetFailed, DatasetRecord, DatasetType, Status, TransientFailures
from curation.ingest.validation import ValidationReport
from curation.run import Run
from curation.dataset.versions import Delta
from curation.flows.curate_dataset import curate_listed
from curation.flows.runners import TaskRunnerFromSettings, run_resources
from curation.tasks.blocks import StorageParameter, secrets_from_blocks
from curation.tasks.curation_tasks import (
    check_service, complete_dataset, register_dataset, resolve_credentials, with_timeout,
)
from curation.tasks.dataset_tasks import analyse_dataset, compute_sampling, publish_report
from curation.tasks.incremental_tasks import (
    VersionPlan,
    build_version,
    commit_version,
    drop_staging,
    find_dataset,
    list_storage,
    plan_version,
    publish_version,
    publish_version_report,
    register_staging,
    require_enough_images,
)


@flow(name="curate-new-blobs", task_runner=TaskRunnerFromSettings(threads_only=True))
@secrets_from_blocks
def curate_new_blobs(
    storage: StorageParameter,
    name: Annotated[
        str | None, Field(description="Name of the dataset if this run creates it (default: the container or folder)")
    ] = None,
) -> dict[str, Any]:
    """Curate the blobs added or changed since the last successful run as a new version; returns what it added.

    Args:
        storage: The container and prefix (or local folder) to watch. Credentials come from the block chosen in
            credentials_block or the worker's environment, never from here.
        name: Name of the dataset if this run creates it (default: the container or folder name).
    """
    started = time.monotonic()
    storage = resolve_credentials(storage)
    with run_resources(storage) as run:
        run_id = str(flow_run.id or "outside-a-flow-run")
        report, descriptor = list_storage(run.settings, storage)
        target = find_dataset(run.catalog, descriptor)
        if target is None:
            summary = _first_version(run, report, descriptor, name, run_id)
        else:
            plan = plan_version(run.dataset(target.id), report)
            if not plan.delta:
                get_run_logger().info("nothing new in %s since version %s", target.id, target.version or 0)
                summary = {"dataset_id": target.id, "version": None, "added": 0, "changed": 0, "failed": 0}
                publish_version_report(run.dataset(target.id), summary)
                return summary
            summary = _next_version(run, target, plan, report, run_id)
            publish_report(run.dataset(target.id), time.monotonic() - started)  # version 1's was published by its tracking
        publish_version_report(run.dataset(summary["dataset_id"]), summary)
        if target is not None:  # a version's images that failed for a transient reason wait for the next run
            require_few_retryable(target.id, summary["retryable"], len(plan.delta), run.settings.max_retryable_share)
        return summary


def _first_version(run: Run, report: Any, descriptor: dict[str, Any], name: str | None, run_id: str) -> dict[str, Any]:
    """No dataset yet: curate everything through the normal path as version 1."""
    require_enough_images(report, run.settings.min_images)
    with_timeout(check_service, run.settings)(run)
    default = f"{descriptor.get('container_name') or descriptor.get('path')}{'/' + descriptor['prefix'] if descriptor.get('prefix') else ''}"
    record = register_dataset(run.settings, name or default, run.storage_config, report, DatasetType.USER)
    curate_listed(run, record, report.accepted, wait_for_completion=True)
    record = run.dataset(record.id).load_record()
    if record.status != Status.COMPLETED:
        raise RuntimeError(f"version 1 of {record.id} not added: {record.failure_reason}")
    plan = VersionPlan(1, Delta(new=list(report.accepted), changed=[]))
    return {"dataset_id": record.id, **commit_version(run.dataset(record.id), plan, report, run_id, [])}


def retry_images(run: Run, target: DatasetRecord, plan: VersionPlan) -> dict[str, Any]:
    """Curate a written dataset's retryable images again as its next version (`curation curate --resume ID`), then
    judge the whole dataset: Completed, or Failed (DatasetFailed) while too many still fail for a transient reason.
    Raises TransientFailures when none of them could be processed (the dataset is left as it was)."""
    started = time.monotonic()
    counts = target.counts
    report = ValidationReport(found=counts.found, accepted=plan.delta.blobs, rejected=counts.rejected)
    run_id = str(flow_run.id or "outside-a-flow-run")
    try:
        summary = _next_version(run, target, plan, report, run_id)
    except DatasetFailed as exc:  # every retried image failed again: the staging dataset failed
        raise TransientFailures(
            f"dataset {target.id}: none of its {len(plan.delta)} retryable images could be processed this time: "
            f"{exc.reason}"
        ) from None
    store = run.dataset(target.id)
    record = complete_dataset(store, run.settings.max_retryable_share)
    publish_report(store, time.monotonic() - started)
    publish_version_report(store, summary)
    if record.status == Status.FAILED:
        raise DatasetFailed(target.id, record.failure_reason)
    return summary


def _next_version(run: Run, target: Any, plan: VersionPlan, report: Any, run_id: str) -> dict[str, Any]:
    """Curate the delta as a hidden staging dataset, build the whole next version there, publish it and commit it."""
    with_timeout(check_service, run.settings)(run)
    staging = register_staging(run.catalog, target, plan)
    into, staged = run.dataset(target.id), run.dataset(staging.id)
    try:
        curate_listed(run, staging, plan.delta.blobs, wait_for_completion=True)
        built = build_version(into, staged, plan.version)
        analyse_dataset(staged)  # the whole dataset: analytics and layout are not incremental
        compute_sampling(staged, seed=0, strategy="stratified")
        publish_version(into, staged)
        entry = commit_version(into, plan, report, run_id, built["orphans"])
    finally:
        drop_staging(run.catalog, target.id, staging.id)
    return {"dataset_id": target.id, **entry}
