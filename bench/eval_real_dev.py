"""Evaluate the CPU backend on the shared real-photo dev set: zero-shot tags and a 10-shot probe.

Usage: python bench/eval_real_dev.py [DATASET_DIR]   (DATASET_DIR holds images/ and labels.csv)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.inference.models.cpu import CpuModel
from curation.inference.models.evaluate import evaluate_folder, format_report


def main(argv: list[str]) -> None:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[2] / "shared/datasets/real-dev"
    backend = CpuModel()
    t0 = time.perf_counter()
    zero = evaluate_folder(root / "images", root / "labels.csv", backend=backend)
    print("=== zero-shot ===")
    print(format_report(zero))
    print(f"(zero-shot pass incl. decoding: {time.perf_counter() - t0:.1f} s)")
    few = evaluate_folder(root / "images", root / "labels.csv", backend=backend, fewshot=10)
    print("\n=== few-shot k=10 ===")
    print(format_report(few))


if __name__ == "__main__":
    main(sys.argv)
