"""One process pool for the CPU-heavy per-image work (decoding, quality signals, thumbnails, model features).

Thumbnail shards and the embedded service's batches run in threads of one process, so in-process numpy and Pillow
work would queue behind the GIL. Here it runs in a pool of worker processes sized to the cores: created on first
use, shared by every caller in the process, shut down at exit. Workers start from a fork server (never a plain
fork: the process has threads), with the imaging modules preloaded so a new worker is ready in milliseconds.

Callers send bytes in and get small results out (rows, feature vectors), one batch per call, so the per-image cost
of the hand-over is a few microseconds. When a worker dies (a crash in a native decoder, the OOM killer), the
batch is retried one image at a time in a fresh pool; an image that still kills its worker gets the caller's
error result with the reason. Nothing is lost and the other images are unaffected.

Work stays in the calling thread when the pool is switched off (`CURATION_WORK_PROCESSES=0`) or when this process
is daemonic (a Dask or multiprocessing worker cannot have children).
"""

from __future__ import annotations

import atexit
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

from curation.settings import Settings, get_settings

T = TypeVar("T")
R = TypeVar("R")

# Imported once by the fork server, so that every worker forked from it starts with them loaded.
PRELOAD = ("numpy", "PIL.Image", "scipy.fft", "curation.inference.imaging", "curation.analysis.quality", "curation.inference.models.cpu_features",
           "onnxruntime", "curation.inference.models.cnn")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
_PR_SET_PDEATHSIG = 1  # Linux prctl option
SOLO_ATTEMPTS = 2  # after a crash, each image of the batch is retried alone this many times

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0


def _die_with_parent() -> None:
    """Have Linux kill this worker when its parent (the fork server) ends. The fork server ends when the process that
    uses the pool dies, even by SIGKILL (it reads EOF on its pipe), so no worker outlives a killed CLI (issue #17)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # pragma: no cover - no prctl
        return
    if os.getppid() != parent:  # the parent died before prctl took effect: no signal will come
        os._exit(1)


def _init_worker() -> None:
    """Per worker: the parent-death signal (`_die_with_parent`), one BLAS thread (the pool already fills every
    core; OpenBLAS threads spinning against each other on a busy machine make a dot product 100x slower), and a heap
    that keeps freed memory: without it, glibc maps and unmaps every array over 128 KiB afresh, which made the
    signals and features 3-4x slower."""
    _die_with_parent()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn
        pass
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_THRESHOLD, 64 << 20)
            libc.mallopt(_M_TRIM_THRESHOLD, 128 << 20)
        except (OSError, AttributeError):  # pragma: no cover - not glibc
            pass


def worker_count(settings: Settings | None = None) -> int:
    """Worker processes to use: 0 means work in the calling thread.

    The `work_processes` setting (default: the number of cores) of settings, else of get_settings(); always 0
    inside a daemonic process.
    """
    if multiprocessing.current_process().daemon:
        return 0
    wanted = (settings or get_settings()).work_processes
    return (os.cpu_count() or 1) if wanted is None else max(0, wanted)


def _get_pool(size: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != size:
            if _pool is not None:
                _pool.shutdown(wait=False, cancel_futures=False)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(list(PRELOAD))
            _pool = ProcessPoolExecutor(max_workers=size, mp_context=context, initializer=_init_worker)
            _pool_size = size
        return _pool


def _discard(pool: ProcessPoolExecutor) -> None:
    """Forget a broken pool (the next call makes a fresh one), unless another thread already replaced it."""
    global _pool
    with _lock:
        if _pool is pool:
            _pool = None
    pool.shutdown(wait=False, cancel_futures=True)


def shutdown() -> None:
    """Stop the worker processes (they are started again on the next use)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


atexit.register(shutdown)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BrokenProcessPool):
        return "the worker process died while processing this image (crash or out of memory)"
    return f"the worker failed: {type(exc).__name__}: {exc}"


def _submit(size: int, fn: Callable[[list[T]], list[R]], batch: list[T]) -> tuple[ProcessPoolExecutor, Future]:
    pool = _get_pool(size)
    try:
        return pool, pool.submit(fn, batch)
    except BrokenProcessPool:  # broken by another caller's crash since we got it: once more, in a fresh pool
        _discard(pool)
        pool = _get_pool(size)
        return pool, pool.submit(fn, batch)


def _solo(size: int, fn: Callable[[list[T]], list[R]], item: T, on_error: Callable[[T, str], R]) -> R:
    """One image alone in the pool, retried in a fresh pool when its worker dies; its error result at the end."""
    reason = ""
    for _ in range(SOLO_ATTEMPTS):
        pool, future = _submit(size, fn, [item])
        try:
            return future.result()[0]
        except BrokenProcessPool as exc:
            _discard(pool)
            reason = _describe(exc)
        except Exception as exc:  # noqa: BLE001 - the function itself raised: retrying would not help
            return on_error(item, _describe(exc))
    return on_error(item, reason)


def _in_thread(fn: Callable[[list[T]], list[R]], item: T, on_error: Callable[[T, str], R]) -> R:
    try:
        return fn([item])[0]
    except Exception as exc:  # noqa: BLE001
        return on_error(item, _describe(exc))


def map_batches(
    fn: Callable[[list[T]], list[R]],
    batches: Iterable[list[T]],
    on_error: Callable[[T, str], R],
    max_pending: int = 2,
    settings: Settings | None = None,
) -> Iterator[list[R]]:
    """fn over each batch, in worker processes; yields each batch's results in order.

    Args:
        fn: a module-level function (it is pickled by name) returning one result per item, in order.
        batches: consumed lazily in the calling thread, so reading the next batch's bytes overlaps the work on
            the previous ones; at most max_pending batches are in the pool at once (bounded memory).
        on_error: the result for an item whose worker died twice, or on which fn raised, given the reason.
        max_pending: batches handed to the pool ahead of the one being waited for.
        settings: whose `work_processes` to follow (default: get_settings()).

    Returns:
        An iterator of result lists, one per batch, in the order of the batches.
    """
    size = worker_count(settings)
    if size == 0:
        for batch in batches:
            try:
                yield fn(batch)
            except Exception:  # noqa: BLE001 - as in a worker: each item alone, an error result for the failing
                yield [_in_thread(fn, item, on_error) for item in batch]
        return
    pending: deque[tuple[list[T], ProcessPoolExecutor, Future]] = deque()
    source = iter(batches)
    while True:
        while len(pending) < max_pending:
            batch = next(source, None)
            if batch is None:
                break
            pending.append((batch, *_submit(size, fn, batch)))
        if not pending:
            return
        batch, pool, future = pending.popleft()
        try:
            yield future.result()
        except BrokenProcessPool:
            _discard(pool)
            yield [_solo(size, fn, item, on_error) for item in batch]
        except Exception:  # noqa: BLE001 - fn raised for the batch: find the item(s) it fails on
            yield [_solo(size, fn, item, on_error) for item in batch]


def run_batch(
    fn: Callable[[list[T]], list[R]],
    batch: list[T],
    on_error: Callable[[T, str], R],
    settings: Settings | None = None,
) -> list[R]:
    """fn over one batch in a worker process (or in this thread when the pool is off); see map_batches."""
    return next(map_batches(fn, [batch], on_error, max_pending=1, settings=settings))
