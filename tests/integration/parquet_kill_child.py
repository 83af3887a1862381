"""Child process for the SIGKILL test: rewrite one Parquet target forever with curation.dataset.parquet_io.write_table.

Usage: python -m tests.integration.parquet_kill_child TARGET ROWS
Prints "ready" once imported, then "wrote <generation>" after every complete write. Every generation is a table
of ROWS rows whose `gen` column is the generation and `i` is 0..ROWS-1, so a reader can tell a complete file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa

from curation.dataset.parquet_io import write_table


def main() -> None:
    target, rows = Path(sys.argv[1]), int(sys.argv[2])
    i = pa.array(np.arange(rows, dtype=np.int64))
    x = pa.array(np.random.default_rng(0).random(rows))  # incompressible: the write takes a while
    print("ready", flush=True)
    gen = 0
    while True:
        table = pa.table({"gen": pa.array(np.full(rows, gen, dtype=np.int64)), "i": i, "x": x})
        write_table(target, table, row_group_size=rows // 8)
        print(f"wrote {gen}", flush=True)
        gen += 1


if __name__ == "__main__":
    main()
