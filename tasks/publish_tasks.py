"""Task that publishes a finished dataset's Parquet to an fsspec URL (CURATION_OUTPUT_URL)."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from curation.dataset.catalog import DatasetStore
from curation.dataset.publish import Published, publish_dataset
from curation.settings import Settings


@task(name="publish-parquet", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, persist_result=False)
def publish_parquet(store: DatasetStore, settings: Settings, url: str | None = None) -> Published:
    """Publish the dataset's Parquet and record to the output URL, `_SUCCESS` last."""
    published = publish_dataset(store, settings, url)
    get_run_logger().info(
        "dataset %s published to %s: %s", store.dataset_id, published.url, ", ".join(published.files)
    )
    return published
