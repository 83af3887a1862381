"""The tracker's decisions, without Prefect or a service: `decide` on single rounds, `track` on scripted runs."""

from __future__ import annotations

import dataclasses

import pytest

from curation.dataset.publish import PublishError
from curation.dataset.registry import DatasetRecord, Status
from curation.dataset.results import WrittenCounts
from curation.inference.client import NoReplicaAvailable, ServiceError
from curation.inference.shard_jobs import Progress
from curation.tracking import (
    Analyse,
    AwaitStores,
    Complete,
    Fail,
    NextRound,
    Poll,
    Publish,
    Resubmit,
    Round,
    Sample,
    Stop,
    Store,
    Wait,
    Write,
    decide,
    track,
)

RUNNING = Progress(total=30, done=10, failed=0, shards=3, completed=1)
DONE = Progress(total=30, done=30, failed=1, shards=3, completed=3)
LOST = Progress(total=30, done=10, failed=0, shards=3, completed=1, lost=(2,), down=("http://b",),
                reasons=("shard 2: replica http://b did not answer",))
WRITTEN = WrittenCounts(images=30, failed=1)


def polled(progress: Progress, tracing: bool = True, **seen: object) -> Round:
    return dataclasses.replace(Round(tracing=tracing, publish=False), progress=progress, **seen)


def test_a_round_starts_with_a_poll_and_a_refused_poll_fails_the_dataset():
    assert decide(Round(tracing=True, publish=False)) == Poll()
    failed = dataclasses.replace(Round(tracing=True, publish=False), poll_error="401: bad key")
    assert decide(failed) == Fail("inference service unavailable: 401: bad key")


def test_completed_shards_are_stored_once_while_the_others_run():
    r = polled(RUNNING, unstored=((0, "j0"),))
    assert decide(r) == Store(((0, "j0"),))
    assert decide(dataclasses.replace(r, storing=frozenset({(0, "j0")}))) == Wait()


def test_a_lost_shard_is_resubmitted_at_once_avoiding_replicas_found_down():
    r = polled(LOST)
    assert decide(r) == Resubmit((2,), ("http://b",))
    assert decide(dataclasses.replace(r, resubmitted=True)) == NextRound()  # poll again without waiting
    refused = dataclasses.replace(r, resubmit_error="no inference replica can take shard 2")
    assert decide(refused) == Fail(
        "inference service unavailable: no inference replica can take shard 2 (lost shard 2: replica http://b did not answer)"
    )


def test_a_finished_dataset_waits_for_its_stores_then_writes_analyses_samples_completes():
    r = polled(DONE)
    assert decide(r) == AwaitStores()
    r = dataclasses.replace(r, stores_awaited=True)
    assert decide(r) == Write()
    r = dataclasses.replace(r, written=WRITTEN)
    assert decide(r) == Analyse()
    assert decide(dataclasses.replace(r, analysed=True)) == Sample()
    r = dataclasses.replace(r, analysed=True, sampled=True)
    assert decide(r) == Complete()
    assert decide(dataclasses.replace(r, status="Completed")) == Stop("Completed")


def test_a_store_that_finds_its_shard_lost_starts_a_new_round():
    assert decide(polled(DONE, stores_awaited=True, store_lost=True)) == NextRound()


def test_a_dataset_whose_images_all_failed_is_not_analysed_or_sampled():
    r = polled(DONE, stores_awaited=True, written=WrittenCounts(images=30, failed=30))
    assert decide(r) == Complete()


def test_publishing_only_a_completed_dataset_and_a_failed_publish_fails_it():
    r = dataclasses.replace(
        polled(DONE, stores_awaited=True, written=WRITTEN, analysed=True, sampled=True, status="Completed"), publish=True
    )
    assert decide(r) == Publish()
    assert decide(dataclasses.replace(r, published=True)) == Stop("Completed")
    assert decide(dataclasses.replace(r, publish_error="upload refused")) == Fail("upload refused")
    assert decide(dataclasses.replace(r, status="Failed")) == Stop("Failed")


def test_without_tracing_one_round_stores_what_is_done_and_stops_processing():
    r = polled(RUNNING, tracing=False)
    assert decide(r) == AwaitStores()
    assert decide(dataclasses.replace(r, stores_awaited=True)) == Stop(None)


class Scripted:
    """The tracker's steps over a scripted service: each poll returns the next progress."""

    def __init__(self, polls: list[Progress | Exception], lose_store_once: bool = False, publish_error: str | None = None):
        self.polls, self.calls, self.lose_store_once, self.publish_error = list(polls), [], lose_store_once, publish_error
        self.stored: set[int] = set()

    def poll(self) -> Progress:
        self.calls.append("poll")
        answer = self.polls.pop(0)
        if isinstance(answer, Exception):
            raise answer
        self.progress = answer
        return answer

    def unstored(self):
        return [(s, f"j{s}") for s in range(self.progress.completed) if s not in self.stored]

    def store(self, key):
        self.calls.append(f"store {key[0]}")
        self.stored.add(key[0])

    def await_stores(self):
        self.calls.append("await")
        if self.lose_store_once:
            self.lose_store_once = False
            self.stored.discard(0)
            return {(0, "j0")}
        return set()

    def resubmit(self, shards, avoid):
        self.calls.append(f"resubmit {shards} avoiding {avoid}")
        if not self.polls:
            raise NoReplicaAvailable("no replica left")

    def wait(self):
        self.calls.append("wait")

    def write(self):
        self.calls.append("write")
        return WRITTEN

    def analyse(self):
        self.calls.append("analyse")

    def sample(self):
        self.calls.append("sample")

    def complete(self):
        self.calls.append("complete")
        return DatasetRecord(id="6b07853ea0d81f32342580f4", name="x", status=Status.COMPLETED)

    def publish(self):
        self.calls.append("publish")
        if self.publish_error:
            raise PublishError(self.publish_error)

    def fail(self, reason):
        self.calls.append(f"fail: {reason}")
        return DatasetRecord(id="6b07853ea0d81f32342580f4", name="x", status=Status.FAILED, failure_reason=reason)


def test_a_run_with_a_lost_shard_resubmits_it_and_finishes():
    steps = Scripted([RUNNING, LOST, DONE])
    assert track(steps, tracing=True, publish=True) == "Completed"
    assert steps.calls == [
        "poll", "store 0", "wait",
        "poll", "resubmit (2,) avoiding ('http://b',)",
        "poll", "store 1", "store 2", "await", "write", "analyse", "sample", "complete", "publish",
    ]


def test_a_store_lost_at_the_end_is_stored_again_after_the_next_poll():
    steps = Scripted([DONE, DONE], lose_store_once=True)
    assert track(steps) == "Completed"
    assert steps.calls[:6] == ["poll", "store 0", "store 1", "store 2", "await", "poll"]
    assert steps.calls[6:8] == ["store 0", "await"]


@pytest.mark.parametrize(
    ("polls", "publish_error", "reason"),
    [
        ([ServiceError("401: the API key was refused")], None, "inference service unavailable: 401: the API key was refused"),
        ([LOST], None, "inference service unavailable: no replica left (lost shard 2: replica http://b did not answer)"),
        ([DONE], "cannot write abfs://out", "cannot write abfs://out"),
    ],
)
def test_a_run_that_cannot_go_on_fails_the_dataset_with_the_reason(polls, publish_error, reason):
    steps = Scripted(polls, publish_error=publish_error)
    assert track(steps, publish=True) == "Failed"
    assert steps.calls[-1] == f"fail: {reason}"


def test_a_run_that_does_not_trace_stops_after_one_round():
    steps = Scripted([RUNNING])
    assert track(steps, tracing=False) is None
    assert steps.calls == ["poll", "store 0", "await"]
