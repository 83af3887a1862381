"""Where the shard tasks of curate-dataset run: threads in the flow process, or a Dask cluster."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from curation.settings import Settings


def task_runner_for(settings: Settings) -> TaskRunner[Any]:
    """The task runner the settings ask for (`CURATION_TASK_RUNNER`).

    Args:
        settings: `task_runner` is "threads" (a pool of `thumbnail_workers` threads in the flow process) or "dask":
            the scheduler at `dask_address`, else a LocalCluster of `dask_workers` single-threaded worker processes
            that lives as long as the flow run.
    Returns:
        A Prefect task runner, for `@flow(task_runner=...)` or `flow.with_options(task_runner=...)`.
    Raises:
        RuntimeError: "dask" without the dask extra installed.
    """
    if settings.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=settings.thumbnail_workers)
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



@contextmanager
def prefect_api_for(settings: Settings) -> Iterator[None]:
    """Give Dask workers the Prefect API of this process, for a run that has no configured one.

    Without PREFECT_API_URL, Prefect starts a temporary server for this process only, and every worker process would
    start one of its own (and time out under load). Start it here and point the run at its URL, which Prefect then
    sends to the workers with each task's context. Threads, or a configured API, need nothing."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if settings.task_runner != "dask" or PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one Prefect itself would start for this process (a singleton)
    server.start()
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        yield
