"""Tasks that work on a written dataset: analytics, sampling, the run report and the downstream summary.

Artifacts and events go to the run a user (or an automation) triggered, the top-level flow run, even when a subflow
(track-curation) publishes them: that run's Artifacts tab shows them, and each event names it and its deployment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from prefect import get_run_logger, task

from curation.analysis import analyse as dataset_analytics
from curation.dataset.catalog import DatasetStore
from curation.dataset.report import dataset_summary, report_markdown, run_report, summary_markdown
from curation.memory import release_free_memory
from curation.sampling import subsets


@dataclass(frozen=True)
class TriggeredRun:
    """The top-level flow run of the current run, and its deployment (None for a run started from Python)."""

    flow_run_id: UUID
    name: str
    deployment_id: UUID | None
    deployment_name: str | None

    def related(self) -> list[dict[str, str]]:
        """The event's related resources: this run and its deployment, with Prefect's roles."""
        related = [
            {"prefect.resource.id": f"prefect.flow-run.{self.flow_run_id}", "prefect.resource.role": "flow-run",
             "prefect.resource.name": self.name},
        ]
        if self.deployment_id:
            deployment = f"prefect.deployment.{self.deployment_id}"
            related.append(
                {"prefect.resource.id": deployment, "prefect.resource.role": "deployment",
                 "prefect.resource.name": self.deployment_name or ""}
            )
        return related


def triggered_run() -> TriggeredRun | None:
    """The top-level flow run of the current flow or task run (None outside a flow run)."""
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    if not flow_run.id:
        return None
    root = UUID(str(flow_run.root_flow_run_id or flow_run.id))
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(root)
        deployment = client.read_deployment(run.deployment_id) if run.deployment_id else None
    return TriggeredRun(root, run.name, run.deployment_id, deployment.name if deployment else None)


def publish_artifact(
    run: TriggeredRun | None, kind: Literal["markdown", "table"], key: str, data: Any, description: str
) -> None:
    """Create an artifact on the triggered run (not on the subflow or task that publishes it)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import ArtifactCreate

    if run is None:  # outside a flow run: Prefect's own helpers attach it to whatever context there is
        from prefect.artifacts import create_markdown_artifact, create_table_artifact

        if kind == "markdown":
            create_markdown_artifact(markdown=data, key=key, description=description)
        else:
            create_table_artifact(table=data, key=key, description=description)
        return
    body = data if kind == "markdown" else json.dumps(data)
    with get_client(sync_client=True) as client:
        client.create_artifact(
            ArtifactCreate(key=key, type=kind, data=body, description=description, flow_run_id=run.flow_run_id)
        )


def emit_dataset_event(run: TriggeredRun | None, outcome: str, dataset_id: str, name: str, payload: dict) -> None:
    """Emit curation.dataset.<outcome> on the resource curation.dataset.<id>, related to the triggered run and its
    deployment (Prefect adds the current run, flow and task)."""
    from prefect.events import emit_event

    # Downstream deployment triggers match the resource id `curation.dataset.*` and read the payload.
    emit_event(
        event=f"curation.dataset.{outcome}",
        resource={"prefect.resource.id": f"curation.dataset.{dataset_id}", "prefect.resource.name": name},
        related=run.related() if run else None,
        payload=payload,
    )


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
    """Publish the run's Markdown and class-count table artifacts and emit curation.dataset.completed (or .failed),
    on the triggered run."""
    release_free_memory()
    report = run_report(store, seconds)
    dataset_id = store.dataset_id
    if store.load_record().parent_id:
        return report  # a curate-new-blobs staging dataset: its parent publishes once the version is merged
    run = triggered_run()
    publish_artifact(
        run, "markdown", f"curation-{dataset_id}", report_markdown(report), f"Curation of {report['name']}"
    )
    if report["classes"]:
        publish_artifact(
            run, "table", f"curation-{dataset_id}-classes", report["classes"], f"Images per class: {report['name']}"
        )
    outcome = "completed" if report["status"] == "Completed" else "failed"
    payload = {k: report[k] for k in ("dataset_id", "status", "counts", "class_counts", "seconds", "failure_reason")}
    emit_dataset_event(run, outcome, dataset_id, report["name"], payload)
    return report


@task(name="publish-step-report", persist_result=False)
def publish_step_report(store: DatasetStore, step: Literal["sampled", "taught"], summary: dict[str, Any]) -> None:
    """After sample-dataset or teach-dataset: a Markdown artifact `<step>-<dataset id>` and the event
    curation.dataset.<step>, on the triggered run."""
    record, dataset_id = store.load_record(), store.dataset_id
    rows = "\n".join(f"| {k} | {v} |" for k, v in summary.items() if not isinstance(v, (dict, list)))
    text = f"## {record.name} (`{dataset_id}`): {step}\n\n| | |\n|---|---|\n{rows}\n"
    run = triggered_run()
    what = "Sampling order" if step == "sampled" else "Taught tags"
    publish_artifact(run, "markdown", f"{step}-{dataset_id}", text, f"{what}: {record.name}")
    scalars = {k: v for k, v in summary.items() if isinstance(v, (int, float, str))}
    emit_dataset_event(run, step, dataset_id, record.name, {"dataset_id": dataset_id, **scalars})


@task(name="summarise-dataset", persist_result=False)
def summarise_dataset(store: DatasetStore) -> dict[str, Any]:
    """Read a Completed dataset's Parquet back, log a short summary and publish it as a Markdown artifact."""
    summary = dataset_summary(store)
    dataset_id = store.dataset_id
    get_run_logger().info(
        "dataset %s: %d images, %d failed; most common %s",
        dataset_id, summary["images"], summary["failed"],
        ", ".join(f"{c} {t['label']}" for c, t in summary["top_labels"].items()),
    )
    publish_artifact(
        triggered_run(), "markdown", f"summary-{dataset_id}", summary_markdown(summary), f"Summary of {summary['name']}"
    )
    return summary
