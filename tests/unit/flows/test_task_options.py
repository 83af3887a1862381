"""Every task that touches the network declares retries and a retry delay, and gets its timeout from the run's
settings; shard tasks have cache keys and persisted results, and the tasks that see credentials or signed URLs
neither cache nor persist."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from curation.tasks import curation_tasks as t

NETWORK_TASKS = [t.list_images, t.check_service, t.submit_shard, t.store_shard, t.poll_jobs, t.write_results]


def test_network_tasks_declare_retries_and_delays_and_take_timeouts_from_the_runs_settings():
    from curation.settings import Settings

    missing = [task.name for task in NETWORK_TASKS if not (task.retries and task.retries >= 1 and task.retry_delay_seconds)]
    assert not missing, f"network tasks without retries or retry_delay_seconds: {missing}"
    assert sorted(task.name for task in NETWORK_TASKS) == sorted(t.NETWORK)
    quick, slow = Settings(transient_budget_s=10, request_timeout_s=5), Settings(transient_budget_s=100, request_timeout_s=50)
    for task in NETWORK_TASKS:
        assert t.with_timeout(task, quick).timeout_seconds == t.network_timeouts(quick)[task.name] > 0
        if task.name not in ("list-images", "write-results"):  # the others wait out the client's budget
            assert t.with_timeout(task, slow).timeout_seconds > t.with_timeout(task, quick).timeout_seconds


def test_service_tasks_do_not_retry_service_errors():
    """The client already retried transient failures for its whole budget: a task retry would multiply it."""
    for task in (t.check_service, t.submit_shard, t.store_shard, t.poll_jobs):
        assert task.retry_condition_fn is t._not_a_service_error, task.name


def test_shard_tasks_are_cached_and_persisted_others_are_not():
    for task in (t.submit_shard, t.store_shard):
        assert task.cache_key_fn is t._shard_cache_key and task.persist_result is True, task.name
    for task in (t.list_images, t.check_service, t.poll_jobs, t.write_results, t.reopen_dataset, t.mark_failed):
        assert task.cache_policy is NO_CACHE and task.persist_result is False, task.name


def test_shard_tasks_take_the_run_as_a_parameter():
    import inspect

    for task in (t.submit_shard, t.store_shard, t.poll_jobs, t.check_service):
        assert "run" in inspect.signature(task.fn).parameters, task.name


class _Store:
    def __init__(self, keys: set[str]) -> None:
        self.keys = keys

    def exists(self, key: str) -> bool:
        return key in self.keys


def _run(root, api_key: str, config):
    from pydantic import SecretStr

    from curation.inference.replicas import Replicas
    from curation.run import Run
    from curation.settings import Settings

    settings = Settings(data_root=root, service_url="http://a", api_key=SecretStr(api_key))
    return Run(settings, Replicas(settings), config)


def _context(name: str, stored: set[str]):
    from types import SimpleNamespace

    return SimpleNamespace(task=SimpleNamespace(name=name), task_run=SimpleNamespace(id="run-2"), result_store=_Store(stored))


def test_shard_cache_key_holds_ids_only_and_is_dropped_when_the_output_is_gone(tmp_path):
    from pydantic import SecretStr

    from curation.dataset.catalog import DatasetStore
    from curation.ingest.storage import AzureStorageConfig, BlobInfo

    dataset = "6b07853ea0d81f32342580f4"
    blobs = [BlobInfo("a.jpg", 1)]
    secret = "account-key-that-must-not-be-in-a-key"
    config = AzureStorageConfig(container_name="c", account_name="a", account_key=SecretStr(secret))
    store = DatasetStore(tmp_path, dataset)
    params = {"run": _run(tmp_path, "api-key-secret", config), "store": store, "shard": 3, "blobs": blobs, "attempt": 1}
    key = t._shard_cache_key(_context("submit-shard", set()), params)
    assert key.startswith(f"submit-shard-{dataset}-00003-") and key.endswith("-a1")
    assert secret not in key and "api-key-secret" not in key
    other = {**params, "run": _run(tmp_path, "another", None)}
    assert t._shard_cache_key(_context("submit-shard", set()), other) == key  # settings and storage are not in it
    # A stored result whose job file is gone: a fresh key, so the shard is submitted again.
    assert t._shard_cache_key(_context("submit-shard", {key}), params) == f"{key}-redo-run-2"
    store.write_shard_job(3, "{}")
    assert t._shard_cache_key(_context("submit-shard", {key}), params) == key


def test_store_shard_cache_key_is_the_shards_job_and_is_dropped_when_the_stored_shard_is_gone(tmp_path):
    from curation.dataset.catalog import DatasetStore

    dataset = "6b07853ea0d81f32342580f4"
    store = DatasetStore(tmp_path, dataset)
    params = {"run": _run(tmp_path, "k", None), "store": store, "shard": 2, "job_id": "j1"}
    key = t._shard_cache_key(_context("store-shard", set()), params)
    assert key == f"store-shard-{dataset}-00002-j1"
    assert t._shard_cache_key(_context("store-shard", set()), {**params, "job_id": "j2"}) != key  # a re-submission
    assert t._shard_cache_key(_context("store-shard", {key}), params) == f"{key}-redo-run-2"  # nothing stored
    stored = store.files_shard_path(2)
    stored.parent.mkdir(parents=True)
    stored.write_bytes(b"")
    assert t._shard_cache_key(_context("store-shard", {key}), params) == key


def test_prefects_per_shard_thread_timeout_warning_is_filtered_and_nothing_else():
    import logging

    import curation.tasks.curation_tasks  # noqa: F401 - installs the filter

    logger = logging.getLogger("prefect.task_runs")

    def kept(message: str) -> bool:
        record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, message, (), None)
        return all(f.filter(record) for f in logger.filters)

    assert not kept("Timeout of 600 seconds configured for this task, but the task is running in a worker thread. "
                    "Timeouts in worker threads cannot interrupt blocking operations")
    assert kept("Task run failed with exception: TimeoutError")


def test_listing_is_retried_only_when_it_may_heal():
    """Issue #17: too few images, a missing container or a refused credential were listed three times."""
    from types import SimpleNamespace

    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ResourceNotFoundError,
        ServiceRequestError,
    )

    from curation.ingest.storage import StorageError, is_transient
    from curation.ingest.validation import DatasetTooSmall

    assert t.list_images.retry_condition_fn is t._worth_listing_again

    def retried(error: BaseException) -> bool:
        return t._worth_listing_again(t.list_images, None, SimpleNamespace(data=error))

    def throttled(status: int) -> HttpResponseError:
        error = HttpResponseError(message=f"status {status}")
        error.status_code = status
        return error

    assert is_transient(ServiceRequestError("connection refused")) and is_transient(throttled(503))
    assert is_transient(throttled(429)) and not is_transient(throttled(403))
    assert not is_transient(ResourceNotFoundError("ContainerNotFound"))
    assert not is_transient(ClientAuthenticationError("AuthenticationFailed"))
    assert not retried(DatasetTooSmall("need at least 31"))
    assert not retried(StorageError("cannot list container 'x': ContainerNotFound"))
    assert not retried(StorageError("local storage folder does not exist: /nope"))
    assert retried(StorageError("cannot list container 'x': ServiceRequestError", transient=True))
    assert retried(OSError("a read was cut short"))
