"""Give memory back between the pipeline's whole-dataset steps.

glibc keeps the pages a step freed (large numpy temporaries, Parquet buffers) for reuse, so without this the next
step's peak stacks on the previous step's garbage and the process's peak grows with every step. Called between
steps, never inside a hot loop."""

from __future__ import annotations

import ctypes
import gc
import sys


def release_free_memory() -> None:
    """Collect young garbage and return the heap's free pages to the operating system (Linux/glibc; elsewhere a
    no-op). Only the young generations: a full collection walks every object of a flow process (Prefect, numba and
    scikit-learn loaded), and a step's large buffers are freed by reference counting anyway."""
    gc.collect(1)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
