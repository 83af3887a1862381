"""Tasks of the curate-new-blobs flow: list, diff against the lineage, stage, merge, publish and commit a version."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from prefect import get_run_logger, task

from curation.dataset import versions
from curation.dataset.catalog import Catalog, DatasetStore, Table
from curation.dataset.registry import DatasetRecord
from curation.ingest import steps
from curation.ingest.storage import open_storage
from curation.ingest.validation import ValidationReport, require_enough, validate_listing
from curation.settings import Settings
from curation.tasks.curation_tasks import PRIVATE, StorageConfig


@dataclass(frozen=True)
class VersionPlan:
    """What the next version of a dataset would add."""

    version: int
    delta: versions.Delta


@task(name="list-storage", **PRIVATE)
def list_storage(settings: Settings, config: StorageConfig) -> tuple[ValidationReport, dict[str, Any]]:
    """List and validate the storage (no minimum: a delta may be small); returns the report and the descriptor."""
    storage = open_storage(config, settings)
    report = validate_listing(storage.list_blobs())
    get_run_logger().info("listing: %s", report.summary())
    return report, storage.descriptor()


@task(name="find-dataset", **PRIVATE)
def find_dataset(catalog: Catalog, descriptor: dict[str, Any]) -> DatasetRecord | None:
    """The Completed dataset already curated from this storage and prefix, if any."""
    record = versions.find_target(catalog, descriptor)
    if record is None:
        get_run_logger().info("no Completed dataset for this storage yet: the run creates version 1")
    else:
        get_run_logger().info("dataset %s (%r) is at version %s", record.id, record.name, record.version or 0)
    return record


@task(name="require-enough", **PRIVATE)
def require_enough_images(report: ValidationReport, min_images: int) -> None:
    """A new dataset needs the minimum number of acceptable images (a later version does not)."""
    require_enough(report, min_images)


@task(name="plan-version", **PRIVATE)
def plan_version(store: DatasetStore, report: ValidationReport) -> VersionPlan:
    """Diff the listing against the dataset's lineage: the blobs added or changed since the last committed version."""
    adopted = versions.adopt_curation(store)
    if adopted:
        get_run_logger().info(
            "dataset %s: its curate-dataset run %s adopted as version 1", store.dataset_id, adopted["flow_run_id"]
        )
    plan = VersionPlan(versions.current_version(store) + 1, versions.diff_listing(report.accepted, versions.read_lineage(store)))
    get_run_logger().info("version %d would add %d new and %d changed blobs", plan.version, len(plan.delta.new), len(plan.delta.changed))
    return plan


@task(name="plan-retry", **PRIVATE)
def plan_retry(settings: Settings, store: DatasetStore, config: StorageConfig) -> VersionPlan | None:
    """A written dataset's images that failed for a transient reason, as the next version's delta; None when it has
    none (an unfinished dataset is then resumed shard by shard)."""
    blobs = versions.retryable_blobs(store)
    if not blobs:
        return None
    steps.require_same_storage(store.load_record(), open_storage(config, settings))
    adopted = versions.adopt_curation(store)  # so the retried images join the lineage as the next version
    plan = VersionPlan(versions.current_version(store) + 1, versions.Delta(new=blobs, changed=[]))
    get_run_logger().info(
        "dataset %s: %d images failed for a transient reason; processing them again as version %d%s",
        store.dataset_id, len(blobs), plan.version, " (its curation adopted as version 1)" if adopted else "",
    )
    return plan


@task(name="register-staging", **PRIVATE)
def register_staging(catalog: Catalog, target: DatasetRecord, plan: VersionPlan) -> DatasetRecord:
    """Register the hidden staging dataset that curates the delta (erasing leftovers of crashed runs)."""
    record = versions.register_staging(catalog, target, plan.delta.blobs, plan.version)
    get_run_logger().info("staging dataset %s for version %d of %s", record.id, plan.version, target.id)
    return record


@task(name="build-version", **PRIVATE)
def build_version(target: DatasetStore, staging: DatasetStore, version: int) -> dict[str, Any]:
    """Build the whole next version in the staging folder: tables, layout, shards and thumbnails merged."""
    built = versions.build_version(target, staging, version)
    get_run_logger().info("version %d built: %d images", version, built["images"])
    return built


@task(name="publish-version", **PRIVATE)
def publish_version(target: DatasetStore, staging: DatasetStore) -> None:
    """Rename the built version's files over the dataset's."""
    versions.publish_version(target, staging)


@task(name="commit-version", **PRIVATE)
def commit_version(
    store: DatasetStore, plan: VersionPlan, report: ValidationReport, flow_run_id: str, orphans: list[str]
) -> dict[str, Any]:
    """Append the version's lineage rows and manifest entry (the commit point); returns the manifest entry."""
    files = store.frame(Table.FILES)
    now = versions.now_utc()
    rows = versions.lineage_rows(files, plan.delta.blobs, plan.version, flow_run_id, now)
    entry = versions.version_entry(plan.delta, rows, files, plan.version, flow_run_id, now)
    versions.commit_version(store, rows, entry, report, orphans)
    get_run_logger().info("dataset %s version %d: %s", store.dataset_id, plan.version, entry)
    return entry


@task(name="drop-staging", **PRIVATE)
def drop_staging(catalog: Catalog, target_id: str, staging_id: str) -> None:
    """Erase the staging dataset."""
    versions.drop_staging(catalog, target_id, staging_id)


def version_line(name: str, dataset_id: str, summary: dict[str, Any]) -> str:
    """What a version added, in words that match what happened (failures only when there were any)."""
    failed, retryable = summary.get("failed", 0), summary.get("retryable", 0)
    failures = ""
    if failed:
        failures = f", {failed} failed" + (f" ({retryable} for a transient reason: the next run retries them)" if retryable else "")
    return (
        f"**{name}** (`{dataset_id}`) version {summary['version']}: {summary['added']} added, "
        f"{summary['changed']} changed{failures}; {summary['images']} images in the dataset."
    )


@task(name="publish-version-report", persist_result=False)
def publish_version_report(store: DatasetStore, summary: dict[str, Any]) -> None:
    """Publish a short Markdown artifact: the version added, or that nothing was new."""
    from prefect.artifacts import create_markdown_artifact

    record, dataset_id = store.load_record(), store.dataset_id
    if summary.get("version") is None:
        text = f"**{record.name}** (`{dataset_id}`): nothing new since version {record.version or 0}."
    else:
        text = version_line(record.name, dataset_id, summary)
    create_markdown_artifact(key=f"curation-versions-{dataset_id}", markdown=text, description="curate-new-blobs")
