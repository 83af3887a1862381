"""Flow `summarise-dataset`: an example downstream flow, run by a deployment trigger on `curation.dataset.completed`.

prefect.yaml links it to the event: every completed curation starts one run with the dataset id from the event's
payload. Copy it as the start of your own downstream flow (export, training, notification).
"""

from __future__ import annotations

from typing import Annotated, Any

from prefect import flow
from pydantic import Field

from curation.flows.runners import dataset_store
from curation.tasks.dataset_tasks import summarise_dataset as summarise


@flow(name="summarise-dataset")
def summarise_dataset(
    dataset_id: Annotated[str, Field(description="The Completed dataset, from the curation.dataset.completed event")],
) -> dict[str, Any]:
    """Summarise a completed dataset from its Parquet (images, failures, most common labels, duplicates, flags).

    Args:
        dataset_id: The Completed dataset, from the curation.dataset.completed event.
    """
    return summarise(dataset_store(dataset_id))
