"""Flow `curate-new-blobs`: curate only what was added or changed since the last version, as a new version."""

from __future__ import annotations

import time
from typing import Annotated, Any

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import Field

from curation import registry
from curation.registry import DatasetType, Status
from curation.settings import get_settings
from curation.storage import AzureStorageConfig, LocalStorageConfig
from curation.versions import Delta
from flows.curate_dataset import curate_listed
from tasks.blocks import secrets_from_blocks
from tasks.curation_tasks import StorageConfig, check_service, register_dataset, resolve_credentials
from tasks.dataset_tasks import analyse_dataset, compute_sampling, publish_report
from tasks.incremental_tasks import (
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


@flow(name="curate-new-blobs", task_runner=ThreadPoolTaskRunner(max_workers=get_settings().thumbnail_workers))
@secrets_from_blocks
def curate_new_blobs(
    storage: Annotated[
        LocalStorageConfig | AzureStorageConfig,
        Field(discriminator="kind", description="Where the images are; credentials come from the environment or a block"),
    ],
    name: Annotated[
        str | None, Field(description="Name of the dataset if this run creates it (default: the container or folder)")
    ] = None,
) -> dict[str, Any]:
    """Curate the blobs added or changed since the last successful run as a new version; returns what it added.

    Args:
        storage: The container and prefix (or local folder) to watch. Credentials come from the worker's environment
            or the Prefect block named in credentials_block, never from here.
        name: Name of the dataset if this run creates it (default: the container or folder name).
    """
    started = time.monotonic()
    storage = resolve_credentials(storage)
    run_id = str(flow_run.id or "outside-a-flow-run")
    report, descriptor = list_storage(storage)
    target = find_dataset(descriptor)
    if target is None:
        summary = _first_version(storage, report, descriptor, name, run_id)
    else:
        plan = plan_version(target.id, report)
        if not plan.delta:
            get_run_logger().info("nothing new in %s since version %s", target.id, target.version or 0)
            summary = {"dataset_id": target.id, "version": None, "added": 0, "changed": 0, "failed": 0}
            publish_version_report(target.id, summary)
            return summary
        summary = _next_version(storage, target, plan, report, run_id)
        publish_report(target.id, time.monotonic() - started)  # version 1's was published by its tracking
    publish_version_report(summary["dataset_id"], summary)
    return summary


def _first_version(storage: StorageConfig, report: Any, descriptor: dict[str, Any], name: str | None, run_id: str) -> dict[str, Any]:
    """No dataset yet: curate everything through the normal path as version 1."""
    require_enough_images(report)
    check_service()
    default = f"{descriptor.get('container_name') or descriptor.get('path')}{'/' + descriptor['prefix'] if descriptor.get('prefix') else ''}"
    record = register_dataset(name or default, storage, report, DatasetType.USER)
    curate_listed(storage, record, report.accepted, wait_for_completion=True)
    record = registry.load(get_settings().data_root, record.id)
    if record.status != Status.COMPLETED:
        raise RuntimeError(f"version 1 of {record.id} not added: {record.failure_reason}")
    plan = VersionPlan(1, Delta(new=list(report.accepted), changed=[]))
    return {"dataset_id": record.id, **commit_version(record.id, plan, report, run_id, [])}


def _next_version(storage: StorageConfig, target: Any, plan: VersionPlan, report: Any, run_id: str) -> dict[str, Any]:
    """Curate the delta as a hidden staging dataset, build the whole next version there, publish it and commit it."""
    check_service()
    staging = register_staging(target, plan)
    try:
        curate_listed(storage, staging, plan.delta.blobs, wait_for_completion=True)
        built = build_version(target.id, staging.id, plan.version)
        analyse_dataset(staging.id)  # the whole dataset: analytics and layout are not incremental
        compute_sampling(staging.id, seed=0, strategy="stratified")
        publish_version(target.id, staging.id)
        entry = commit_version(target.id, plan, report, run_id, built["orphans"])
    finally:
        drop_staging(target.id, staging.id)
    return {"dataset_id": target.id, **entry}
