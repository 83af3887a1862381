"""Flow `sample-dataset`: precompute the keep-rank that shrinks a dataset in 20% steps, keeping its distribution."""

from __future__ import annotations

from typing import Any, Literal

from prefect import flow

from tasks.dataset_tasks import compute_sampling


@flow(name="sample-dataset")
def sample_dataset(dataset_id: str, seed: int = 0, strategy: Literal["stratified", "random"] = "stratified") -> dict[str, Any]:
    """Write the dataset's sampling order (joint strata, diverse inside) and its fidelity report; returns the report."""
    return compute_sampling(dataset_id, seed, strategy)
