"""Tasks that work on a written dataset: analytics, sampling, the run report and the downstream summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from curation.analysis import analyse as dataset_analytics
from curation.dataset.catalog import DatasetStore
from curation.dataset.report import dataset_summary, report_markdown, run_report, summary_markdown
from curation.memory import release_free_memory
from curation.sampling import subsets


@task(name="compute-sampling", persist_result=False)
def compute_sampling(store: DatasetStore, seed: int, strategy: str) -> dict[str, Any]:
    """Compute the nested sampling order and its fidelity report."""
    release_free_memory()  # the previous step's freed pages, so this step's peak does not stack on them
    report = subsets.sample_dataset(store, seed=seed, strategy=strategy)
    get_run_logger().info("sampling order for %d images (%s, seed %d)", report["images"], strategy, seed)
    return report


@task(name="teach-probes", persist_result=False)
def teach_probes(store: DatasetStore, labels_csv: Path) -> dict[str, Any]:
    """Fit a linear probe per labelled category on the stored embeddings and re-tag the dataset."""
    from curation.analysis.teach import teach

    summary = teach(store, Path(labels_csv))
    get_run_logger().info("taught dataset %s: meta-model version %s", store.dataset_id, summary.get("version"))
    return summary


@task(name="analyse-dataset", persist_result=False)
def analyse_dataset(store: DatasetStore) -> dict[str, Any]:
    """Anomalies, similar images, duplicate groups and quality flags for the whole dataset."""
    release_free_memory()
    summary = dataset_analytics.analyse_dataset(store)
    get_run_logger().info(
        "analytics: %d images, %d duplicate groups, flags %s",
        summary["images"], summary["duplicate_groups"], {k: v for k, v in summary["quality_flags"].items() if v},
    )
    return summary


@task(name="publish-report", persist_result=False)
def publish_report(store: DatasetStore, seconds: float | None) -> dict[str, Any]:
    """Publish the run's Markdown and class-count table artifacts and emit curation.dataset.completed (or .failed)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.events import emit_event

    release_free_memory()
    report = run_report(store, seconds)
    dataset_id = store.dataset_id
    if store.load_record().parent_id:
        return report  # a curate-new-blobs staging dataset: its parent publishes once the version is merged
    create_markdown_artifact(
        key=f"curation-{dataset_id}", markdown=report_markdown(report), description=f"Curation of {report['name']}"
    )
    if report["classes"]:
        create_table_artifact(
            key=f"curation-{dataset_id}-classes", table=report["classes"],
            description=f"Images per class: {report['name']}",
        )
    outcome = "completed" if report["status"] == "Completed" else "failed"
    # Downstream deployment triggers match the resource id `curation.dataset.*` and read the payload.
    emit_event(
        event=f"curation.dataset.{outcome}",
        resource={"prefect.resource.id": f"curation.dataset.{dataset_id}", "prefect.resource.name": report["name"]},
        payload={k: report[k] for k in ("dataset_id", "status", "counts", "class_counts", "seconds", "failure_reason")},
    )
    return report


@task(name="summarise-dataset", persist_result=False)
def summarise_dataset(store: DatasetStore) -> dict[str, Any]:
    """Read a Completed dataset's Parquet back, log a short summary and publish it as a Markdown artifact."""
    from prefect.artifacts import create_markdown_artifact

    summary = dataset_summary(store)
    dataset_id = store.dataset_id
    get_run_logger().info(
        "dataset %s: %d images, %d failed; most common %s",
        dataset_id, summary["images"], summary["failed"],
        ", ".join(f"{c} {t['label']}" for c, t in summary["top_labels"].items()),
    )
    create_markdown_artifact(
        key=f"summary-{dataset_id}", markdown=summary_markdown(summary), description=f"Summary of {summary['name']}"
    )
    return summary
