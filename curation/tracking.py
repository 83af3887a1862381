"""The tracker: what a curation run does next, from what it has seen so far.

`decide` is pure: given one round's observations (the shard jobs' progress, what is stored or being stored, what
the finishing steps returned) it names the next action. `track` carries the actions out through a `Steps`
implementation: Prefect tasks in flows/track_curation.py, plain calls in `PlainSteps` (the CLI's tests and
bench/). A round starts with a poll; lost shards are re-submitted at once, completed shards are stored while the
others run, and once every job has Completed the dataset is written, analysed, sampled, completed and published.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from curation.analysis.analyse import analyse_dataset
from curation.dataset.finish import complete_dataset, write_dataset_results
from curation.dataset.publish import PublishError, publish_dataset
from curation.dataset.registry import DatasetRecord
from curation.dataset.results import WrittenCounts
from curation.inference.client import NoReplicaAvailable, ServiceError
from curation.inference.shard_jobs import COMPLETED, Progress, ShardLost
from curation.inference.shards import check_job, resubmit_lost, shards_to_store, store_shard_results, wait_for_a_shard
from curation.run import Run
from curation.sampling.subsets import sample_dataset

ShardKey = tuple[int, str]  # (shard, job id): a re-submitted shard is a new key


@dataclass(frozen=True)
class Poll:
    """Ask the replicas about the unfinished shard jobs."""


@dataclass(frozen=True)
class Store:
    """Start storing these completed shards' results (they run while the tracker goes on)."""

    shards: tuple[ShardKey, ...]


@dataclass(frozen=True)
class AwaitStores:
    """Wait for every store started so far."""


@dataclass(frozen=True)
class Resubmit:
    """Re-submit lost shards, avoiding the replicas found down this round."""

    shards: tuple[int, ...]
    avoid: tuple[str, ...]


@dataclass(frozen=True)
class NextRound:
    """Poll again now."""


@dataclass(frozen=True)
class Wait:
    """Wait for a shard job to end (or the poll interval), then poll again."""


@dataclass(frozen=True)
class Write:
    """Write the dataset's results Parquet from the stored shards."""


@dataclass(frozen=True)
class Analyse:
    """Anomalies, similar images, duplicates and quality flags (they feed the sampling order)."""


@dataclass(frozen=True)
class Sample:
    """Compute the sampling order."""


@dataclass(frozen=True)
class Complete:
    """Mark the dataset Completed (or Failed when every image failed)."""


@dataclass(frozen=True)
class Publish:
    """Copy the dataset's Parquet to the configured output URL."""


@dataclass(frozen=True)
class Fail:
    """Mark the dataset Failed with the reason, and stop."""

    reason: str


@dataclass(frozen=True)
class Stop:
    """Stop with the dataset's status (None: still Processing, for a run that does not trace to the end)."""

    status: str | None


Action = Poll | Store | AwaitStores | Resubmit | NextRound | Wait | Write | Analyse | Sample | Complete | Publish | Fail | Stop


@dataclass(frozen=True)
class Round:
    """What the tracker has seen in the current round (a poll and the steps that followed it)."""

    tracing: bool  # poll until the end (else one round, then stop with None while jobs run)
    publish: bool  # an output URL is configured (a staging dataset never publishes)
    storing: frozenset[ShardKey] = frozenset()  # stores started, carried from round to round
    progress: Progress | None = None
    poll_error: str | None = None
    unstored: tuple[ShardKey, ...] = ()  # completed shards whose results are not stored
    resubmitted: bool = False
    resubmit_error: str | None = None
    stores_awaited: bool = False
    store_lost: bool = False
    written: WrittenCounts | None = None
    analysed: bool = False
    sampled: bool = False
    status: str | None = None  # after Complete
    published: bool = False
    publish_error: str | None = None

    def next(self) -> Round:
        """A fresh round that keeps the stores under way."""
        return Round(self.tracing, self.publish, self.storing)


def decide(r: Round) -> Action:
    """The next action of a round, from its observations alone."""
    if r.progress is None and r.poll_error is None:
        return Poll()
    if r.poll_error is not None:  # e.g. the API key was refused; transient failures mark shards lost instead
        return Fail(f"inference service unavailable: {r.poll_error}")
    assert r.progress is not None
    if r.store_lost:  # a stored shard's job was lost after all: the next poll sees it lost and re-submits it
        return NextRound()
    new = tuple(key for key in r.unstored if key not in r.storing)
    if new:
        return Store(new)
    if r.resubmit_error is not None:
        return Fail(f"inference service unavailable: {r.resubmit_error} (lost {r.progress.reasons[0]})")
    if r.progress.lost:
        return NextRound() if r.resubmitted else Resubmit(r.progress.lost, r.progress.down)
    completed = r.progress.status == COMPLETED
    if (completed or not r.tracing) and not r.stores_awaited:
        return AwaitStores()
    if not completed:
        return Wait() if r.tracing else Stop(None)
    if r.written is None:
        return Write()
    if r.written.failed < r.written.images:
        if not r.analysed:
            return Analyse()
        if not r.sampled:
            return Sample()
    if r.status is None:
        return Complete()
    if r.publish_error is not None:  # whole locally, but not delivered where it was asked for
        return Fail(r.publish_error)
    if r.status == COMPLETED and r.publish and not r.published:
        return Publish()
    return Stop(r.status)


class Steps(Protocol):
    """What the tracker's actions do: Prefect tasks in a flow, or plain calls."""

    def poll(self) -> Progress: ...  # raises ServiceError when the service refuses outright
    def unstored(self) -> list[ShardKey]: ...
    def store(self, key: ShardKey) -> None: ...  # starts storing; may return before it ends
    def await_stores(self) -> set[ShardKey]: ...  # waits for every store; returns those that found their shard lost
    def resubmit(self, shards: tuple[int, ...], avoid: tuple[str, ...]) -> None: ...  # raises NoReplicaAvailable
    def wait(self) -> None: ...
    def write(self) -> WrittenCounts: ...
    def analyse(self) -> None: ...
    def sample(self) -> None: ...
    def complete(self) -> DatasetRecord: ...
    def publish(self) -> None: ...  # raises PublishError
    def fail(self, reason: str) -> DatasetRecord: ...


def track(steps: Steps, tracing: bool = True, publish: bool = False) -> str | None:
    """Carry out `decide`'s actions until it stops; returns the dataset's status (None: still Processing)."""
    r = Round(tracing, publish)
    while True:
        action = decide(r)
        match action:
            case Poll():
                try:
                    r = dataclasses.replace(r, progress=steps.poll(), unstored=tuple(steps.unstored()))
                except ServiceError as exc:
                    r = dataclasses.replace(r, poll_error=str(exc))
            case Store(shards):
                for key in shards:
                    steps.store(key)
                r = dataclasses.replace(r, storing=r.storing | set(shards))
            case AwaitStores():
                lost = steps.await_stores()
                r = dataclasses.replace(r, stores_awaited=True, store_lost=bool(lost), storing=r.storing - lost)
            case Resubmit(shards, avoid):
                try:
                    steps.resubmit(shards, avoid)
                    r = dataclasses.replace(r, resubmitted=True)
                except NoReplicaAvailable as exc:
                    r = dataclasses.replace(r, resubmit_error=str(exc))
            case NextRound():
                r = r.next()
            case Wait():
                steps.wait()
                r = r.next()
            case Write():
                r = dataclasses.replace(r, written=steps.write())
            case Analyse():
                steps.analyse()
                r = dataclasses.replace(r, analysed=True)
            case Sample():
                steps.sample()
                r = dataclasses.replace(r, sampled=True)
            case Complete():
                record = steps.complete()
                r = dataclasses.replace(r, status=record.status.value, publish=r.publish and record.parent_id is None)
            case Publish():
                try:
                    steps.publish()
                    r = dataclasses.replace(r, published=True)
                except PublishError as exc:
                    r = dataclasses.replace(r, publish_error=str(exc))
            case Fail(reason):
                return steps.fail(reason).status.value
            case Stop(status):
                return status


class PlainSteps:
    """The tracker's steps as plain calls, storing shards on a thread pool: no Prefect (bench/, tests)."""

    def __init__(self, run: Run, dataset_id: str, on_progress: Callable[[Progress], None] | None = None) -> None:
        self.run, self.dataset, self.on_progress = run, run.dataset(dataset_id), on_progress
        self.pool = ThreadPoolExecutor(max_workers=run.settings.task_workers, thread_name_prefix="store")
        self.futures: dict[ShardKey, Future[int]] = {}

    def poll(self) -> Progress:

        progress = check_job(self.run.replicas, self.dataset)
        if self.on_progress:
            self.on_progress(progress)
        return progress

    def unstored(self) -> list[ShardKey]:

        return shards_to_store(self.dataset)

    def store(self, key: ShardKey) -> None:

        self.futures[key] = self.pool.submit(store_shard_results, self.run.replicas, self.run.settings, self.dataset, key[0])

    def await_stores(self) -> set[ShardKey]:
        lost = set()
        for key, future in list(self.futures.items()):
            try:
                future.result()
            except ShardLost:
                lost.add(key)
                del self.futures[key]
        return lost

    def resubmit(self, shards: tuple[int, ...], avoid: tuple[str, ...]) -> None:

        for shard in shards:
            storage = self.run.storage(self.dataset.dataset_id)
            resubmit_lost(storage, self.run.replicas, self.run.settings, self.dataset, shard, avoid)

    def wait(self) -> None:

        wait_for_a_shard(self.run.replicas, self.dataset, self.run.settings.poll_interval_s)

    def write(self) -> WrittenCounts:

        return write_dataset_results(self.dataset)

    def analyse(self) -> None:

        analyse_dataset(self.dataset)

    def sample(self) -> None:

        sample_dataset(self.dataset, seed=0, strategy="stratified")

    def complete(self) -> DatasetRecord:

        return complete_dataset(self.dataset, self.run.settings.max_retryable_share)

    def publish(self) -> None:

        publish_dataset(self.dataset, self.run.settings, None)

    def fail(self, reason: str) -> DatasetRecord:

        return self.dataset.mark_failed(reason)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def track_plain(
    run: Run, dataset_id: str, tracing: bool = True, on_progress: Callable[[Progress], None] | None = None
) -> str | None:
    """Track a dataset to its end with plain calls (no Prefect); returns its status (None: still Processing)."""
    steps = PlainSteps(run, dataset_id, on_progress)
    try:
        return track(steps, tracing, publish=bool(run.settings.output_url))
    finally:
        steps.close()
