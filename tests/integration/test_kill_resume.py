"""The curating process is killed (SIGKILL) mid-run; `curation curate --resume ID` finishes the dataset without redoing
the thumbnail shards that were finished, and no half-written file is ever read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from curation.dataset.catalog import Catalog, Table
from tests.waiting import DEADLINE_S, wait_for

CURATION = Path(sys.executable).parent / "curation"
REPO = Path(__file__).resolve().parents[2]
COUNT = 96


def test_sigkill_then_resume(tmp_path):
    from prefect.settings import PREFECT_API_URL

    rng = np.random.default_rng(1)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(COUNT):
        Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).save(images / f"img_{i:03d}.png")
    data_root = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CURATION_")}
    env.update(
        CURATION_DATA_ROOT=str(data_root), CURATION_SHARD_SIZE="8", CURATION_TASK_WORKERS="1",
        CURATION_POLL_INTERVAL_S="0.2", PREFECT_API_URL=str(PREFECT_API_URL.value()),
    )
    args = ["curate", "--name", "killed", "--local", str(images)]
    # The first run stores two shards and holds the third's store (tests.integration.held_cli_child): killed once
    # the two are there, it is always killed mid-run, however fast or slow the machine.
    log = tmp_path / "first.log"
    first = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.held_cli_child", "2", *args],
        cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, stdout=log.open("w"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    catalog = Catalog(data_root)

    def two_shards_stored() -> bool:
        assert first.poll() is None, f"the first run ended: {log.read_text()[-2000:]}"
        records = catalog.records()
        return bool(records) and len(catalog.dataset(records[0].id).files_shards()) >= 2

    try:
        wait_for(two_shards_stored, "two shards stored by the first run", detail=lambda: log.read_text()[-2000:])
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    [record] = catalog.records()
    assert record.status.value == "Processing"
    store = catalog.dataset(record.id)
    finished = store.files_shards()
    assert len(finished) == 2, finished  # the rest were held: the kill came mid-run
    for shard in finished:  # every file a reader can find is whole
        assert pq.read_table(shard).num_rows == 8
    mtimes = {p.name: p.stat().st_mtime_ns for p in finished}

    resumed = subprocess.run(
        [str(CURATION), *args, "--resume", record.id], env=env, capture_output=True, text=True, timeout=DEADLINE_S * 3
    )
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    record = store.load_record()
    assert record.status.value == "Completed" and record.counts.processed == COUNT
    assert {p.name: p.stat().st_mtime_ns for p in finished} == mtimes  # finished shards were not redone
    files = store.frame(Table.FILES)
    assert files.height == COUNT and files["image_id"].n_unique() == COUNT and files["error"].null_count() == COUNT
