"""curate-dataset on Dask: the real flow with a 2-process LocalCluster; its shard tasks run on both workers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from curation import Curation, LocalStorageConfig
from curation.dataset.catalog import Catalog, Table
from curation.ingest.ids import image_id_for
from curation.settings import Settings
from curation.flows.runners import task_runner_for
from tests.images import write_images

distributed = pytest.importorskip("distributed")  # the dask extra; `make test` installs it


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes, as a user's existing scheduler would offer."""
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as c:
        yield c


def test_curate_dataset_shards_run_on_both_dask_workers(tmp_path: Path, cluster):
    names = write_images(tmp_path / "images", 35)
    settings = Settings(
        data_root=tmp_path / "data", poll_interval_s=0.2, shard_size=8, dask_address=cluster.scheduler_address
    )
    cr = Curation(settings=settings, task_runner="dask")  # the embedded service: a loopback port in this process
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        pids = client.run(os.getpid)  # worker address -> process id
        with distributed.get_task_stream(client) as stream:
            dataset_id = cr.curate_dataset("on dask", LocalStorageConfig(path=tmp_path / "images"), wait=True)

    record = cr.get_dataset(dataset_id)
    assert record.status.value == "Completed", record.failure_reason
    assert (record.counts.accepted, record.counts.processed, record.counts.failed) == (35, 35, 0)
    catalog = Catalog(settings.data_root)
    store = catalog.dataset(dataset_id)
    files = store.frame(Table.FILES)
    assert sorted(files["image_id"]) == sorted(image_id_for(n) for n in names)  # every image accounted for
    assert files["error"].null_count() == 35 and files["width"].null_count() == 0
    assert all(catalog.resolve(t).exists() for t in files["thumbnail"])
    assert len(store.files_shards()) == 5  # 35 images in shards of 8
    assert store.frame(Table.METADATA).height == 35 and store.frame(Table.EMBEDDINGS).height == 35

    # Evidence from the scheduler itself: which worker ran each shard task, in processes other than this one.
    shard_runs = [t for t in stream.data if "store_shard" in str(t["key"])]
    assert len(shard_runs) == 5, [t["key"] for t in stream.data]
    workers = {t["worker"] for t in shard_runs}
    assert workers == set(pids), workers
    assert os.getpid() not in {pids[w] for w in workers} and len({pids[w] for w in workers}) == 2


def test_task_runner_for_the_settings():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    threads = task_runner_for(Settings(task_workers=3))
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    remote = task_runner_for(Settings(task_runner="dask", dask_address="tcp://127.0.0.1:8786"))
    assert isinstance(remote, DaskTaskRunner) and remote.address == "tcp://127.0.0.1:8786"
    local = task_runner_for(Settings(task_runner="dask", dask_workers=3))
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs["n_workers"] == 3 and local.cluster_kwargs["processes"] is True
    with pytest.raises(ValueError, match="threads' or 'dask"):
        Curation(settings=Settings(), task_runner="ray")


def test_dask_runs_without_a_configured_prefect_api_hand_theirs_to_the_workers():
    import httpx
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from curation.flows.runners import prefect_api_for

    with temporary_settings(restore_defaults={PREFECT_API_URL}):  # as `curation curate --dask` with no server
        with prefect_api_for(Settings(task_runner="threads")):
            assert PREFECT_API_URL.value() is None  # threads share the process's temporary server as usual
        with prefect_api_for(Settings(task_runner="dask")):
            url = PREFECT_API_URL.value()  # what Prefect serialises into each task's context for the workers
            # The process's own temporary server (under this harness, the harness's; it is not stopped here).
            assert url == SubprocessASGIServer().api_url and url.startswith("http://127.0.0.1:")
            assert httpx.get(f"{url}/health", timeout=30).status_code == 200
        assert PREFECT_API_URL.value() is None
