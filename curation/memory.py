"""Give memory back between the pipeline's whole-dataset steps.

glibc keeps the pages a step freed (large numpy temporaries, Parquet buffers) for reuse, so without this the next
step's peak stacks on the previous step's garbage and the process's peak grows with every step. Called between
steps, never inside a hot loop."""

from __future__ import annotations

import ctypes
import gc
import sys


def release_free_memory() -> None:
    """Collect garbage and return the heap's free pages to the operating system (Linux/glibc; elsewhere a no-op)."""
    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc
            pass
