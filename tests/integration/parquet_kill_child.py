"""Child process for the SIGKILL test: rewrite one Parquet target with curation.dataset.parquet_io.write_table.

Usage: python -m tests.integration.parquet_kill_child TARGET ROWS HOLD_AT
Prints "ready" once imported, then "wrote <generation>" after every complete write. Every generation is a table
of ROWS rows whose `gen` column is the generation and `i` is 0..ROWS-1, so a reader can tell a complete file.
Generation HOLD_AT is written through the real write_table (its temporary file and rename), but pauses half-way:
once half its row groups are in the temporary file it prints "writing <generation>" and waits to be killed. The
parent kills it on that line, so every kill lands mid-write, whatever the machine's load.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curation.dataset import parquet_io
from curation.dataset.parquet_io import write_table


def _half_then_hold(gen: int):
    """pq.write_table that writes the first half of the row groups, says so, and then waits (to be killed)."""

    def write(table: pa.Table, where, row_group_size: int | None = None, **kwargs) -> None:
        with pq.ParquetWriter(where, table.schema, **kwargs) as writer:
            writer.write_table(table.slice(0, table.num_rows // 2), row_group_size=row_group_size)
            print(f"writing {gen}", flush=True)
            threading.Event().wait()

    return write


def main() -> None:
    target, rows, hold_at = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    i = pa.array(np.arange(rows, dtype=np.int64))
    x = pa.array(np.random.default_rng(0).random(rows))  # incompressible
    print("ready", flush=True)
    for gen in range(hold_at + 1):
        if gen == hold_at:
            parquet_io.pq = _PqWithHold(_half_then_hold(gen))  # type: ignore[assignment]
        table = pa.table({"gen": pa.array(np.full(rows, gen, dtype=np.int64)), "i": i, "x": x})
        write_table(target, table, row_group_size=rows // 8)
        print(f"wrote {gen}", flush=True)


class _PqWithHold:
    """pyarrow.parquet as parquet_io sees it, but with write_table replaced."""

    def __init__(self, write) -> None:
        self.write_table = write

    def __getattr__(self, name: str):
        return getattr(pq, name)


if __name__ == "__main__":
    main()
