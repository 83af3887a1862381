"""release_free_memory returns freed heap pages to the OS between whole-dataset steps."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from curation.memory import release_free_memory


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_small_blocks_go_back_to_the_os():
    blocks = [np.ones(4096 // 8) for _ in range(60_000)]  # ~240 MiB in blocks below the mmap threshold
    before = _rss_mib()
    pinned = blocks[-1]  # the heap's top stays in use: free() alone cannot give the pages below it back
    del blocks
    release_free_memory()
    assert _rss_mib() < before - 100
    assert pinned.sum() == 512
