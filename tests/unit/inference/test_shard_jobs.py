"""The shard -> job map: keys, round-robin with failover order, aggregation and atomic per-shard files."""

from __future__ import annotations

from pydantic import SecretStr

from curation.dataset.catalog import Catalog, DatasetStore
from curation.inference.replicas import Replica
from curation.inference.shard_jobs import (
    COMPLETED,
    LOST,
    ShardJob,
    aggregate,
    candidates,
    content_hash,
    idempotency_key,
    load_job,
    lose,
    read_jobs,
    save_job,
)
from curation.ingest.storage import BlobInfo

DATASET = "6b07853ea0d81f32342580f4"


def replica(name: str) -> Replica:
    return Replica(name, name, SecretStr("k"))


def test_content_hash_and_keys_follow_the_shard_content_and_attempt():
    blobs = [BlobInfo("a.jpg", 1), BlobInfo("b.jpg", 2)]
    assert content_hash(blobs) == content_hash(list(blobs))
    assert content_hash(blobs) != content_hash([BlobInfo("a.jpg", 1), BlobInfo("b.jpg", 3)])
    assert content_hash(blobs) != content_hash(blobs[::-1])
    key = idempotency_key(DATASET, 3, content_hash(blobs), 0)
    assert key.startswith(f"{DATASET}-00003-") and key != idempotency_key(DATASET, 3, content_hash(blobs), 1)


def test_candidates_go_round_robin_and_skip_replicas_to_avoid():
    r = [replica("a"), replica("b"), replica("c")]
    assert [[c.name for c in candidates(r, shard, 0, set())][0] for shard in range(6)] == list("abcabc")
    assert [c.name for c in candidates(r, 1, 0, set())] == ["b", "c", "a"]
    assert [c.name for c in candidates(r, 1, 1, set())] == ["c", "a", "b"]  # a re-submission starts elsewhere
    assert [c.name for c in candidates(r, 1, 0, {"b"})] == ["c", "a"]
    assert candidates(r, 0, 0, {"a", "b", "c"}) == []


def test_jobs_are_saved_per_shard_and_aggregated(tmp_path):
    store = DatasetStore(tmp_path, DATASET)
    for shard, (status, done) in enumerate([(COMPLETED, 8), ("Processing", 3), ("Processing", 0)]):
        save_job(store, ShardJob(shard=shard, replica="http://a", job_id=f"j{shard}", count=8, content="c", status=status, done=done))
    lost = lose(store, load_job(store, 2), "replica http://a did not answer")
    assert load_job(store, 2) == lost and lost.status == LOST
    assert [j.shard for j in read_jobs(store)] == [0, 1, 2]
    assert not [p for p in store.shard_job_path(0).parent.iterdir() if p.name.endswith(".tmp")]
    progress = aggregate(read_jobs(store), {"http://a"})
    assert (progress.total, progress.done, progress.shards, progress.completed) == (24, 11, 3, 1)
    assert progress.lost == (2,) and progress.status == LOST and progress.finished
    assert progress.reasons == ("shard 2: replica http://a did not answer",)
    done = aggregate([j.model_copy(update={"status": COMPLETED}) for j in read_jobs(store)], set())
    assert done.status == COMPLETED and done.finished
    running = aggregate([j.model_copy(update={"status": "Processing"}) for j in read_jobs(store)], set())
    assert running.status == "Processing" and not running.finished


def test_a_lost_shard_is_retried_a_bounded_number_of_times(tmp_path):
    import pytest

    from curation.inference.client import NoReplicaAvailable
    from curation.inference.replicas import Replicas
    from curation.inference.shards import lost_shard
    from curation.settings import Settings

    settings = Settings(data_root=tmp_path, service_url="http://a,http://b", api_key=SecretStr("k"))
    replicas = Replicas(settings)
    store = DatasetStore(tmp_path, DATASET)
    job = ShardJob(shard=1, replica="http://b", job_id="j", count=1, content="c", names=["x.jpg"], sizes=[5])
    save_job(store, job)
    with pytest.raises(ValueError, match="not lost"):
        lost_shard(replicas, store, 1)
    lose(store, job, "gone")
    assert lost_shard(replicas, store, 1) == ([BlobInfo("x.jpg", 5)], 1)
    lose(store, job.model_copy(update={"attempt": 4}), "gone again")  # 2 replicas: attempts 0-4
    with pytest.raises(NoReplicaAvailable, match="shard 1 was lost 5 times; last: gone again"):
        lost_shard(replicas, store, 1)


def test_storage_of_rebuilds_the_config_without_secrets():
    from curation.dataset.registry import DatasetRecord
    from curation.ingest.steps import storage_of
    from curation.ingest.storage import AzureStorageConfig, LocalStorageConfig

    local = DatasetRecord(id=DATASET, name="x", storage={"kind": "local", "path": "/data/images", "prefix": None})
    assert storage_of(local) == LocalStorageConfig(path="/data/images")
    azure = {"kind": "azure", "account_name": "acc", "container_name": "c", "account_url": None, "prefix": "2024/"}
    config = storage_of(DatasetRecord(id=DATASET, name="x", storage=azure))
    assert isinstance(config, AzureStorageConfig) and config.container_name == "c" and config.prefix == "2024/"
    assert config.secrets() == []


def test_a_poll_round_asks_each_replica_until_its_earliest_unfinished_job_still_runs(tmp_path):
    """Replicas work through their jobs in order: a round stops asking a replica once a job there still runs
    (re-submissions count as later), asks every job of a replica whose jobs end, and marks forgotten ones lost."""
    from curation.inference.client import JobNotFound, JobStatus
    from curation.inference.replicas import Replicas
    from curation.inference.shards import check_job
    from curation.settings import Settings

    settings = Settings(data_root=tmp_path, service_url="http://a,http://b", api_key="k")
    record = Catalog(tmp_path).register("poll")
    store = DatasetStore(tmp_path, record.id)
    # a: shards 0 (done), 2 (running), 4 (queued), 1 re-submitted (attempt 1); b: 3 (done), 5 (forgotten)
    for shard, url, attempt in [(0, "http://a", 0), (2, "http://a", 0), (4, "http://a", 0), (1, "http://a", 1),
                                (3, "http://b", 0), (5, "http://b", 0)]:
        save_job(store, ShardJob(shard=shard, replica=url, job_id=f"j{shard}", count=8, content="c", attempt=attempt))
    answers = {"j0": "Completed", "j2": "Processing", "j4": "Processing", "j1": "Processing", "j3": "Completed"}
    asked: list[str] = []

    class Client:
        def job_status(self, job_id: str) -> JobStatus:
            asked.append(job_id)
            if job_id not in answers:
                raise JobNotFound(job_id)
            status = answers[job_id]
            return JobStatus(job_id, status, 8, 8 if status == "Completed" else 3, 0)

        def close(self) -> None:
            pass

    class Answering(Replicas):  # the run's replicas, with a test client for each
        def client(self, replica=None):
            return Client()

    replicas = Answering(settings)
    progress = check_job(replicas, store)
    assert asked == ["j0", "j2", "j3", "j5"]  # a: 0 done, 2 runs (4 and the re-submitted 1 wait); b: every job
    jobs = {j.shard: j for j in read_jobs(store)}
    assert [jobs[s].status for s in range(6)] == [COMPLETED, "Processing", "Processing", COMPLETED, "Processing", LOST]
    assert (progress.completed, progress.done, progress.lost) == (2, 8 + 3 + 8, (5,))
    answers["j2"] = "Completed"
    asked.clear()
    check_job(replicas, store)
    assert asked == ["j2", "j4"]  # the next round goes on from where the replica is
