"""Tasks that work on a written dataset: analytics and sampling."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task

from curation import dataset_analytics, subsets
from curation.settings import get_settings


@task(name="compute-sampling", persist_result=False)
def compute_sampling(dataset_id: str, seed: int, strategy: str) -> dict[str, Any]:
    """Compute the nested sampling order and its fidelity report."""
    report = subsets.sample_dataset(get_settings().data_root, dataset_id, seed=seed, strategy=strategy)
    get_run_logger().info("sampling order for %d images (%s, seed %d)", report["images"], strategy, seed)
    return report


@task(name="analyse-dataset", persist_result=False)
def analyse_dataset(dataset_id: str) -> dict[str, Any]:
    """Anomalies, similar images, duplicate groups and quality flags for the whole dataset."""
    summary = dataset_analytics.analyse_dataset(get_settings().data_root, dataset_id)
    get_run_logger().info(
        "analytics: %d images, %d duplicate groups, flags %s",
        summary["images"], summary["duplicate_groups"], {k: v for k, v in summary["quality_flags"].items() if v},
    )
    return summary
