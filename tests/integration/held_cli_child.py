"""Child process for the kill-and-resume test: the `curation` command, except that the run stores only the first
HOLD_AFTER shards' results and holds every later shard's store (until the process is killed).

Usage: python -m tests.integration.held_cli_child HOLD_AFTER curate --name ... (the `curation` command's arguments)
It prints "holding" when a store is held. The shards it stored are whole files; the parent kills it once they are
there, so the kill always lands mid-run, whatever the machine's load: the run cannot finish first.
"""

from __future__ import annotations

import sys
import threading

from curation import cli, tracking
from curation.inference import shards


def held_after(passes: int, store):
    lock, said = threading.Lock(), threading.Event()
    left = [passes]

    def store_shard_results(*args, **kwargs):
        with lock:
            left[0] -= 1
            hold = left[0] < 0
        if hold:
            if not said.is_set():
                said.set()
                print("holding", flush=True)
            threading.Event().wait()
        return store(*args, **kwargs)

    return store_shard_results


def main() -> None:
    passes = int(sys.argv[1])
    held = held_after(passes, shards.store_shard_results)
    shards.store_shard_results = held  # the store-shard task's
    tracking.store_shard_results = held  # the tracker's
    sys.argv = ["curation", *sys.argv[2:]]
    cli.main()


if __name__ == "__main__":
    main()
