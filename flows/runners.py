"""What a flow run resolves when it starts: its settings, its resources (`run_resources`) and where its shard
tasks run (threads in the flow process, or a Dask cluster). Nothing here reads settings at import."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from curation.dataset.catalog import Catalog, DatasetStore
from curation.ingest.steps import StorageConfig
from curation.run import Run, open_run
from curation.settings import Settings, get_settings, use_settings
from curation.tasks.blocks import load_storage_credentials


def task_runner_for(settings: Settings) -> TaskRunner[Any]:
    """The task runner the settings ask for (`CURATION_TASK_RUNNER`).

    Args:
        settings: `task_runner` is "threads" (a pool of `task_workers` threads in the flow process) or "dask":
            the scheduler at `dask_address`, else a LocalCluster of `dask_workers` single-threaded worker processes
            that lives as long as the flow run.
    Returns:
        A Prefect task runner, for `@flow(task_runner=...)` or `flow.with_options(task_runner=...)`.
    Raises:
        RuntimeError: "dask" without the dask extra installed.
    """
    if settings.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.task_workers)
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as exc:  # an optional extra: say how to get it rather than a bare ImportError
        raise RuntimeError("CURATION_TASK_RUNNER=dask needs the dask extra: pip install 'curation[dask]'") from exc
    if settings.dask_address:
        return DaskTaskRunner(address=settings.dask_address)
    # Shard work decodes images: one thread per process, so the GIL never serialises two shards. No dashboard, so
    # two flow runs on one machine never fight over its port.
    cluster = {"n_workers": settings.dask_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=cluster)



# Prefect waits 20 s by default for its temporary server to answer; on a loaded machine that failed runs (issue #17).
EPHEMERAL_STARTUP_TIMEOUT_S = 120


def ephemeral_startup_updates() -> dict[Any, Any]:
    """Prefect settings updates raising its temporary server's start-up limit to EPHEMERAL_STARTUP_TIMEOUT_S, or {}
    when the user set the limit (PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS in the environment, or a profile
    value other than Prefect's default): a user's value always wins."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as limit
    from prefect.settings.models.server.ephemeral import ServerEphemeralSettings

    prefect_default = ServerEphemeralSettings.model_fields["startup_timeout_seconds"].default
    if limit.name in os.environ or limit.value() != prefect_default:
        return {}
    return {limit: EPHEMERAL_STARTUP_TIMEOUT_S}


@contextmanager
def prefect_api_for(settings: Settings) -> Iterator[None]:
    """The Prefect side of a flow run started in this process: Prefect's temporary server (when no PREFECT_API_URL
    is set) gets EPHEMERAL_STARTUP_TIMEOUT_S to start unless the user set a limit, and Dask workers get the API of
    this process.

    Without PREFECT_API_URL, Prefect starts a temporary server for this process only, and every worker process would
    start one of its own (and time out under load). For Dask, start it here and point the run at its URL, which
    Prefect then sends to the workers with each task's context. Threads, or a configured API, need nothing more."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates=ephemeral_startup_updates()):
        if settings.task_runner != "dask" or PREFECT_API_URL.value():
            yield
            return
        from prefect.server.api.server import SubprocessASGIServer

        server = SubprocessASGIServer()  # the one Prefect itself would start for this process (a singleton)
        server.start()
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            yield


class TaskRunnerFromSettings(TaskRunner[Any]):
    """The task runner the run's settings ask for (`task_runner_for`), chosen when the flow run starts.

    Flows are decorated at import, before any run's settings exist: this defers the choice to the run.
    `threads_only` keeps a flow on threads whatever the settings say."""

    def __init__(self, threads_only: bool = False) -> None:
        super().__init__()
        self.threads_only = threads_only
        self._inner: TaskRunner[Any] | None = None

    def duplicate(self) -> TaskRunnerFromSettings:
        return type(self)(self.threads_only)

    def __enter__(self) -> TaskRunnerFromSettings:
        settings = get_settings()
        if self.threads_only:
            settings = settings.model_copy(update={"task_runner": "threads"})
        self._inner = task_runner_for(settings)
        self._inner.__enter__()
        self._started = True
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._inner is not None:
                self._inner.__exit__(*exc)
        finally:
            self._inner, self._started = None, False

    def submit(self, task: Any, parameters: dict[str, Any], wait_for: Any = None, dependencies: Any = None) -> Any:
        assert self._inner is not None, "the task runner must be started before submitting work"
        return self._inner.submit(task, parameters, wait_for, dependencies)

    def map(self, task: Any, parameters: dict[str, Any], wait_for: Any = None) -> Any:
        assert self._inner is not None, "the task runner must be started before submitting work"
        return self._inner.map(task, parameters, wait_for)


@contextmanager
def run_resources(storage: StorageConfig | None = None) -> Iterator[Run]:
    """A flow run's resources: its settings resolved now, its replicas opened once (an embedded service started
    for the run when none is configured), made the settings of everything the run calls."""
    with open_run(get_settings(), storage, load_storage_credentials) as run, use_settings(run.settings):
        yield run


def dataset_store(dataset_id: str) -> DatasetStore:
    """The catalog store of a dataset, under the data root of the run's settings."""
    return Catalog(get_settings().data_root).dataset(dataset_id)
