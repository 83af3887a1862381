"""Flow `sample-dataset`: precompute the keep-rank that shrinks a dataset in 20% steps, keeping its distribution."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from prefect import flow
from pydantic import Field

from curation.flows.runners import dataset_store
from curation.tasks.dataset_tasks import compute_sampling, publish_step_report


@flow(name="sample-dataset")
def sample_dataset(
    dataset_id: Annotated[str, Field(description="A Completed dataset")],
    seed: Annotated[int, Field(description="Seed of the order; the same inputs and seed give the same order")] = 0,
    strategy: Annotated[
        Literal["stratified", "random"], Field(description="stratified keeps the distribution; random for comparison")
    ] = "stratified",
) -> dict[str, Any]:
    """Write the dataset's sampling order (joint strata, diverse inside) and its fidelity report; returns the report.

    Args:
        dataset_id: A Completed dataset.
        seed: Seed of the order; the same inputs and seed give the same order.
        strategy: stratified keeps the distribution; random for comparison.
    """
    store = dataset_store(dataset_id)
    report = compute_sampling(store, seed, strategy)
    publish_step_report(store, "sampled", {"strategy": strategy, "seed": seed, **report})
    return report
