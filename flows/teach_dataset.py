"""Flow `teach-dataset`: fit a linear probe per category on labelled images, re-tag the dataset, re-sample it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from prefect import flow
from pydantic import Field

from curation.flows.runners import dataset_store
from curation.tasks.dataset_tasks import compute_sampling, publish_step_report, teach_probes


@flow(name="teach-dataset")
def teach_dataset(
    dataset_id: Annotated[str, Field(description="A Completed dataset")],
    labels_csv: Annotated[
        Path, Field(description="CSV with `file` (blob name or image id) and any of time, weather, road, location")
    ],
) -> dict[str, Any]:
    """Teach by example: a probe per labelled category on the stored embeddings re-tags the whole dataset as a new
    meta-model version; the sampling order then follows the new tags. Returns the summary per category.

    Args:
        dataset_id: A Completed dataset.
        labels_csv: CSV with `file` (blob name or image id) and any of time, weather, road, location.
    """
    store = dataset_store(dataset_id)
    summary = teach_probes(store, labels_csv)
    compute_sampling(store, seed=0, strategy="stratified")  # strata follow the new tags
    publish_step_report(store, "taught", summary)
    return summary
