"""The curating process is killed (SIGKILL) mid-run; `curation curate --resume ID` finishes the dataset without redoing
the thumbnail shards that were finished, and no half-written file is ever read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from curation.dataset.catalog import Catalog, Table

CURATION = Path(sys.executable).parent / "curation"
COUNT = 96


def test_sigkill_then_resume(tmp_path):
    from prefect.settings import PREFECT_API_URL

    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(COUNT):  # large PNGs: thumbnails take long enough to kill the run half-way
        Image.fromarray(rng.integers(0, 255, (900, 1200, 3), dtype=np.uint8)).save(images / f"img_{i:03d}.png")
    data_root = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_")}
    env.update(
        CURATION_DATA_ROOT=str(data_root), CURATION_SHARD_SIZE="8", CURATION_TASK_WORKERS="1",
        CURATION_POLL_INTERVAL_S="0.2", PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )
    args = [str(CURATION), "curate", "--name", "killed", "--local", str(images)]
    first = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    catalog = Catalog(data_root)
    shards: list[Path] = []
    for _ in range(1200):
        records = catalog.records()
        if records:
            shards = catalog.dataset(records[0].id).files_shards()
            if len(shards) >= 2:
                break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    [record] = catalog.records()
    assert record.status.value == "Processing"
    store = catalog.dataset(record.id)
    finished = store.files_shards()
    assert 2 <= len(finished) < COUNT // 8, "the kill came too late to test resuming"
    for shard in finished:  # every file a reader can find is whole
        assert pq.read_table(shard).num_rows == 8
    mtimes = {p.name: p.stat().st_mtime_ns for p in finished}

    resumed = subprocess.run([*args, "--resume", record.id], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    record = store.load_record()
    assert record.status.value == "Completed" and record.counts.processed == COUNT
    assert {p.name: p.stat().st_mtime_ns for p in finished} == mtimes  # finished shards were not redone
    files = store.frame(Table.FILES)
    assert files.height == COUNT and files["image_id"].n_unique() == COUNT and files["error"].null_count() == COUNT
