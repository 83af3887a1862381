"""One run's resources, resolved when the run starts: its settings, its replicas (and their clients), its storage.

`open_run` is the one place a run reaches an inference service: the configured replicas, or an embedded service
started for the run and stopped at its end (curation.inference.service.server.service_for)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from curation.dataset.catalog import Catalog, DatasetStore
from curation.inference.replicas import Replicas
from curation.inference.service.server import service_for
from curation.ingest.steps import StorageConfig, storage_of
from curation.ingest.storage import Storage, open_storage
from curation.settings import Settings


class Run:
    """What the steps of one run share. `storage_config` is where the images are (None: each dataset's own
    storage, rebuilt from its record, with credentials from the settings).

    A plain object, so Prefect passes it to tasks as it is; it pickles without its open clients (a Dask worker
    reopens them)."""

    def __init__(
        self,
        settings: Settings,
        replicas: Replicas,
        storage_config: StorageConfig | None = None,
        credentials: Callable[[StorageConfig], StorageConfig] | None = None,
    ) -> None:
        self.settings, self.replicas, self.storage_config = settings, replicas, storage_config
        self.credentials = credentials  # fills a dataset's own storage config with credentials (Prefect blocks)
        self.catalog = Catalog(settings.data_root)
        self._opened: dict[str, Storage] = {}

    def __getstate__(self) -> dict[str, object]:
        return {**self.__dict__, "_opened": {}}

    def __repr__(self) -> str:
        return f"Run(data_root={self.settings.data_root}, replicas={[r.name for r in self.replicas]})"

    def dataset(self, dataset_id: str) -> DatasetStore:
        """The catalog store of one of the run's datasets."""
        return self.catalog.dataset(dataset_id)

    def storage(self, dataset_id: str) -> Storage:
        """The storage of a dataset's images, opened once per run."""
        if dataset_id not in self._opened:
            config = self.storage_config
            if config is None:
                config = storage_of(self.dataset(dataset_id).load_record())
                config = self.credentials(config) if self.credentials else config
            self._opened[dataset_id] = open_storage(config, self.settings)
        return self._opened[dataset_id]

    def close(self) -> None:
        self.replicas.close()


@contextmanager
def open_run(
    settings: Settings,
    storage_config: StorageConfig | None = None,
    credentials: Callable[[StorageConfig], StorageConfig] | None = None,
) -> Iterator[Run]:
    """A run on these settings: replicas opened once, an embedded service when none is configured."""
    with service_for(settings) as reachable:
        run = Run(reachable, Replicas(reachable), storage_config, credentials)
        try:
            yield run
        finally:
            run.close()
