"""The Python SDK: `Curation` runs the Prefect flows in-process and reads the data root."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from curation.processes import start_watchdog
from curation.sampling import subsets
from curation.dataset.atomic import write_text_atomic
from curation.dataset.catalog import Catalog
from curation.dataset.export import results_json
from curation.dataset.publish import Published
from curation.dataset.registry import DatasetFailed, DatasetRecord, DatasetType, Status
from curation.inference.replicas import Replicas
from curation.inference.shards import check_job
from curation.settings import Settings, get_settings, use_settings
from curation.inference.shard_jobs import Progress
from curation.ingest.storage import AzureStorageConfig, LocalStorageConfig

if TYPE_CHECKING:
    from curation.inference.service.server import RunningService


class Curation:
    """Entry point of the SDK.

    Args:
        api_key: key for the inference service (default: CURATION_API_KEY).
        service_url: the remote service; None starts an embedded service in this process when a run first needs
            it, kept until `close()` (or the end of a `with` block) so a dataset submitted now can be tracked later.
        data_root: where datasets live (default: CURATION_DATA_ROOT, else ./data).
        settings: a full settings object, for everything else.
        task_runner: where curate-dataset's shard tasks run: "threads" or "dask" (default: CURATION_TASK_RUNNER).
        dask_address: the Dask scheduler for "dask"; None starts a LocalCluster per run (CURATION_DASK_ADDRESS).
    """

    def __init__(
        self,
        api_key: str | None = None,
        service_url: str | None = None,
        data_root: str | Path | None = None,
        settings: Settings | None = None,
        task_runner: str | None = None,
        dask_address: str | None = None,
    ) -> None:
        base = settings or get_settings()
        changes: dict[str, Any] = {}
        if api_key is not None:
            changes["api_key"] = SecretStr(api_key)
        if service_url is not None:
            changes["service_url"] = service_url
        if data_root is not None:
            changes["data_root"] = Path(data_root).expanduser().absolute()
        if task_runner is not None:
            if task_runner not in ("threads", "dask"):
                raise ValueError(f"task_runner must be 'threads' or 'dask', not {task_runner!r}")
            changes["task_runner"] = task_runner
        if dask_address is not None:
            changes["dask_address"] = dask_address
        self.settings = base.model_copy(update=changes)
        self._service: RunningService | None = None
        start_watchdog()  # what this process starts (service workers, Prefect's server) ends when it does

    @property
    def catalog(self) -> Catalog:
        """The data root's datasets."""
        return Catalog(self.settings.data_root)

    def service_settings(self) -> Settings:
        """The settings a run uses: with the embedded service's URL and key when no service is configured."""
        from curation.inference.service.server import reach_embedded, start_embedded

        if self.settings.service_urls:
            return self.settings
        if self._service is None or not self._service.thread.is_alive():
            self._service = start_embedded(self.settings)
        return reach_embedded(self.settings, self._service)

    def close(self) -> None:
        """Stop the embedded service, if this object started one."""
        if self._service is not None:
            self._service.stop()
            self._service = None

    def __enter__(self) -> Curation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def curate_dataset(
        self,
        name: str,
        storage_config: LocalStorageConfig | AzureStorageConfig,
        wait: bool = False,
        dataset_type: DatasetType = DatasetType.USER,
        resume: str | None = None,
    ) -> str:
        """Start curating a container or folder.

        Args:
            name: the dataset's display name.
            storage_config: where the images are.
            wait: also track the job to its end (otherwise call `tracing_curation_task`).
            dataset_type: user, or demo for the undeletable demo dataset.
            resume: the id of an unfinished dataset to finish (finished thumbnail shards are not redone).
        Returns:
            The new dataset id (24 hex characters).
        Raises:
            DatasetTooSmall: too few acceptable images; no dataset is created.
        """
        from curation.flows.curate_dataset import curate_dataset
        from curation.flows.runners import prefect_api_for

        with use_settings(self.service_settings()), prefect_api_for(self.settings):  # the settings choose the task runner
            try:
                return curate_dataset(name, storage_config, dataset_type, wait_for_completion=wait, resume=resume)
            except DatasetFailed as failed:  # the flow run is Failed; the dataset's record says why
                return failed.dataset_id

    def tracing_curation_task(self, dataset_id: str, tracing: bool = True) -> str:
        """Track a dataset's job; with tracing, poll every `poll_interval_s` until Completed or Failed.

        Args:
            dataset_id: the id `curate_dataset` returned.
            tracing: poll until the end (True) or make one request (False).
        Returns:
            The dataset status: Processing, Completed or Failed.
        """
        from curation.flows.runners import prefect_api_for
        from curation.flows.track_curation import track_curation

        with use_settings(self.service_settings()), prefect_api_for(self.settings):
            try:
                return track_curation(dataset_id, tracing=tracing)
            except DatasetFailed:
                return Status.FAILED.value

    def curate_new_blobs(
        self, storage_config: LocalStorageConfig | AzureStorageConfig, name: str | None = None
    ) -> dict[str, Any]:
        """Curate only the blobs added or changed since the last successful run, as a new version of the dataset.

        Args:
            storage_config: the container or folder (and prefix) whose dataset to extend.
            name: the dataset's name if this run creates it (version 1); default: the container or folder.
        Returns:
            {dataset_id, version, flow_run_id, created, added, changed, failed, images}; version None (and nothing
            written) when nothing was new.
        Raises:
            DatasetTooSmall: no dataset yet and too few acceptable images to create one.
        """
        from curation.flows.curate_new_blobs import curate_new_blobs
        from curation.flows.runners import prefect_api_for

        with use_settings(self.service_settings()), prefect_api_for(self.settings):
            return curate_new_blobs(storage_config, name)

    def job_status(self, dataset_id: str) -> Progress:
        """The shard jobs' progress, one request per unfinished job, without running a flow (for progress bars)."""
        with Replicas(self.service_settings()) as replicas:
            return check_job(replicas, self.catalog.dataset(dataset_id))

    def get_dataset(self, dataset_id: str) -> DatasetRecord:
        """One dataset's record."""
        return self.catalog.dataset(dataset_id).load_record()

    def list_datasets(self, dataset_type: DatasetType | None = None) -> list[DatasetRecord]:
        """All datasets, newest first, optionally of one type."""
        records = self.catalog.records()
        return [r for r in records if dataset_type is None or r.type == dataset_type]

    def stale_datasets(self, older_than_hours: float = 6.0, mark_failed: bool = False) -> list[DatasetRecord]:
        """Datasets left Processing with no progress for `older_than_hours` (a killed run, a lost job).

        Args:
            older_than_hours: how long without a record update counts as stale.
            mark_failed: also mark them Failed, with the reason, so they can be resumed or deleted.
        """
        found = self.catalog.stale(timedelta(hours=older_than_hours))
        if mark_failed:
            reason = f"stale: no progress for more than {older_than_hours:g} h (resume it with resume=<id>)"
            found = [self.catalog.dataset(r.id).mark_failed(reason) for r in found]
        return found

    def delete_dataset(self, dataset_id: str) -> None:
        """Erase a dataset and its results. Raises DemoDatasetProtected for the demo dataset and DatasetProcessing (a
        ValueError) while it is Processing: mark a stuck one Failed first (`stale_datasets(mark_failed=True)`)."""
        self.catalog.dataset(dataset_id).delete()

    def export_dataset(self, dataset_id: str, path: str | Path | None = None) -> dict[str, Any]:
        """The inference results as JSON; also written to `path` when given.

        Returns:
            {"dataset": record, "images": [{image_id, blob_name, ..., error, tags}]}.
        """
        data = results_json(self.catalog.dataset(dataset_id))
        if path is not None:
            write_text_atomic(Path(path), json.dumps(data, indent=2, default=str))
        return data

    def publish_dataset(self, dataset_id: str, url: str | None = None) -> Published:
        """Publish a Completed dataset's Parquet and record (no secrets) to `<url>/<dataset_id>/`, `_SUCCESS` last.

        Args:
            dataset_id: a Completed dataset.
            url: any fsspec URL or path (abfs://container/prefix with the Azure credential settings, file:///dir);
                default CURATION_OUTPUT_URL.
        Returns:
            The dataset folder's URL (credentials removed) and the files written.
        """
        from curation.dataset.publish import publish_dataset

        return publish_dataset(self.catalog.dataset(dataset_id), self.settings, url)

    def sample_dataset(self, dataset_id: str, seed: int = 0, strategy: str = "stratified") -> dict[str, Any]:
        """(Re)compute the dataset's sampling order with the `sample-dataset` flow.

        Args:
            dataset_id: a Completed dataset.
            seed: the order's seed; the same inputs and seed give the same order.
            strategy: "stratified" (joint strata, diverse inside) or "random".
        Returns:
            The fidelity report per 20% step, side by side with uniform random sampling.
        """
        from curation.flows.runners import prefect_api_for
        from curation.flows.sample_dataset import sample_dataset

        self.catalog.dataset(dataset_id).require_completed("sampled")
        with use_settings(self.settings), prefect_api_for(self.settings):
            return sample_dataset(dataset_id, seed=seed, strategy=strategy)

    def sample_ids(
        self,
        dataset_id: str,
        fraction: float,
        filters: dict[str, list[str | None]] | None = None,
        images: Sequence[str] | None = None,
    ) -> list[str]:
        """Image ids in the sample at `fraction` (0.2, 0.4, ...), restricted by tag filters.

        Args:
            fraction: share of the dataset to keep; every fraction is a prefix of the stored order.
            filters: category -> accepted values (None selects the None tag); OR within, AND across.
            images: only these images (image ids or blob names); one that is neither raises ValueError.
        """
        store = self.catalog.dataset(dataset_id)
        store.require_completed("sampled")
        ids = subsets.selected_ids(store, fraction, filters)
        if images is None:
            return ids
        listed = set(subsets.image_ids_for(store, images))
        return [i for i in ids if i in listed]

    def save_subset(
        self,
        dataset_id: str,
        name: str,
        fraction: float = 1.0,
        filters: dict[str, list[str | None]] | None = None,
        images: Sequence[str] | None = None,
    ) -> str:
        """Save a selection as a new dataset whose original is `dataset_id`; returns its id.

        Args:
            fraction: keep the sample at this share (a prefix of the stored sampling order).
            filters: category -> accepted values, as in `sample_ids`.
            images: keep only these images (image ids or blob names, e.g. picked in another tool); one that is
                neither raises ValueError.
        """
        store = self.catalog.dataset(dataset_id)
        ids = None if images is None else subsets.image_ids_for(store, images)
        return subsets.save_subset(store, name, fraction, filters, image_ids=ids).id

    def teach(self, dataset_id: str, labels_csv: str | Path) -> dict[str, Any]:
        """Teach by example: fit a linear probe per category on labelled images, re-tag the whole dataset.

        Args:
            dataset_id: a Completed dataset (any backend: the probe uses its stored embeddings).
            labels_csv: `file` (blob name or image id) plus any of time, weather, road, location.
        Returns:
            A summary per category (classes, labelled counts, training accuracy) and the new meta-model version.
        """
        from curation.flows.runners import prefect_api_for
        from curation.flows.teach_dataset import teach_dataset

        self.catalog.dataset(dataset_id).require_completed("taught")
        with use_settings(self.settings), prefect_api_for(self.settings):
            return teach_dataset(dataset_id, Path(labels_csv))

    def generate_demo_images(self, count: int = 72) -> Path:
        """Write the deterministic synthetic demo images (and labels.csv) under the data root.

        Returns:
            The folder holding the images.
        """
        from curation.demo import generate_demo_images

        folder = self.catalog.demo_images
        generate_demo_images(folder, count=count)
        return folder

    def demo(self, fresh: bool = False, count: int = 72) -> str:
        """Curate the synthetic demo images as the demo dataset (type demo: it cannot be deleted).

        Args:
            fresh: curate again even when a Completed demo dataset exists.
            count: number of demo images.
        Returns:
            The demo dataset's id.
        """
        existing = [r for r in self.list_datasets(DatasetType.DEMO) if r.status == Status.COMPLETED]
        if existing and not fresh:
            return existing[0].id
        folder = self.catalog.demo_images
        if not (folder / "labels.csv").exists():
            folder = self.generate_demo_images(count)
        return self.curate_dataset(
            "Demo: synthetic road scenes", LocalStorageConfig(path=folder), wait=True, dataset_type=DatasetType.DEMO
        )
