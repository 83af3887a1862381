"""Where the shard tasks of curate-dataset run: threads in the flow process, or a Dask cluster."""

from __future__ import annotations

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


def settings_for_workers(settings: Settings) -> Settings:
    """Settings to hand to tasks that may run in another process, so they reach this run's inference service.

    With the embedded service (no `service_url`), a worker process would otherwise start an embedded service of its
    own that knows none of this run's jobs; instead it gets the URL and key of the one in this process (a loopback
    port: workers on this machine reach it). Threads share the process, so their settings are returned unchanged.
    """
    if settings.task_runner == "threads" or settings.service_url:
        return settings
    from curation.service.server import embedded_service

    service = embedded_service(settings)
    return settings.model_copy(update={"service_url": service.url, "api_key": service.api_key})
