"""Benchmark the dashboard's server side on synthetic datasets of 100k and 1M images.

Usage:
    python bench/bench_dashboard.py                          # quick: 20k images
    python bench/bench_dashboard.py --images 100000 1000000  # the full run
Each size runs in a fresh child process (its peak RSS is its own). Times (time.perf_counter, through the DataStore
and the views, no browser): opening the dataset and building the first gallery page (cold: Parquet read and joined),
the first 3D figure, turning it into a Plotly pane model, a filter change, a sampling change, a page turn, the
distribution bars and the quick file view. Also the points and bytes the 3D view would send to the browser (the
store decimates to MAX_POINTS = 20k, whatever the dataset's size), and the loaded frame's size in memory.
Datasets come from tests/browser/dataset_builder.py (large sets: synthetic layout, analytics and a shuffle sampling
order, 8 shared thumbnails). Prints a table and writes bench/results/dashboard-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(fn):  # noqa: ANN001, ANN201
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(n: int) -> dict[str, object]:
    import panel as pn
    import polars as pl

    from dashboards.embedding_view import build_figure
    from dashboards.filters_view import summary_html
    from dashboards.store import MAX_POINTS, DataStore, _load
    from tests.browser.dataset_builder import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_s, dataset_id = timed(lambda: build_dataset(root, n, "bench", shared_thumbnails=8))
        on_disk = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        Path("/proc/self/clear_refs").write_text("5")  # peak from here on: the viewer, not the builder
        store = DataStore(root)

        def first_page():  # noqa: ANN202
            store.open(dataset_id)
            summary_html(store)
            store.facet_counts()
            return store.page_items()

        results: dict[str, float] = {}
        results["open + first gallery page"], items = timed(first_page)
        frame_mb = _load(root, dataset_id)[0].estimated_size() / 2**20
        results["first 3D figure (decimated)"], fig = timed(
            lambda: build_figure(store.points(), "time", None, store.filtered.height))
        points = sum(len(t["x"]) for t in fig["data"])
        pn.pane.Plotly({"data": [], "layout": {}}).get_root()  # plotly's import, once, untimed
        model_s, pane = timed(lambda: pn.pane.Plotly(fig))
        results["3D figure -> Plotly pane model"], model = timed(pane.get_root)
        results["3D figure -> Plotly pane model"] += model_s
        payload = sum(len(json.dumps({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in t.items()}))
                      for t in fig["data"])

        def filter_change():  # noqa: ANN202
            store.selections = {**store.selections, "time": ["night", "dawn_dusk", "None"], "weather": ["rainy", "None"]}
            return store.counts(), store.facet_counts(), store.page_items(), build_figure(store.points(), "time", None, 0)

        results["filter change (counts, page, 3D)"], (counts, *_) = timed(filter_change)

        def sampling_change():  # noqa: ANN202
            store.fraction = 0.4
            return store.counts(), store.facet_counts(), store.page_items(), build_figure(store.points(), "time", None, 0)

        results["sampling change 100%->40% (counts, page, 3D)"], (sampled, *_) = timed(sampling_change)
        results["next gallery page"], _ = timed(lambda: (setattr(store, "page", 2), store.page_items()))
        results["distribution (full vs sample)"], _ = timed(store.distribution)
        qfv_id = store.filtered["image_id"][0]
        results["quick file view details"], _ = timed(lambda: store.details(qfv_id))
        return {
            "images": n, "build_dataset_s": round(build_s, 2), "parquet_mb": round(on_disk / 2**20, 1),
            "loaded_frame_mb": round(frame_mb, 1), "viewer_peak_rss_mb": round(_hwm_mb()),
            "gallery_items": len(items), "points_sent": points, "max_points": MAX_POINTS,
            "points_payload_kb": round(payload / 1024), "filtered": counts["filtered"], "kept_at_40": sampled["kept"],
            "timings_s": {k: round(v, 4) for k, v in results.items()},
            "python": platform.python_version(), "polars": pl.__version__, "machine": platform.machine(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[20_000], help="sizes (full run: 100000 1000000)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("JSON:" + json.dumps(run(args.images[0])), flush=True)
        return
    reports = []
    for n in args.images:
        print(f"dashboard on {n:,} images in a fresh process (building the dataset first) ...", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--one", "--images", str(n)], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("JSON:")), None)
        if proc.returncode or line is None:
            print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"dashboard bench at {n} images failed (exit {proc.returncode})")
        reports.append(json.loads(line[5:]))
    steps = list(reports[0]["timings_s"])
    print("\n== dashboard bench (server side, seconds)")
    print(f"{'step':<48}" + "".join(f"{r['images']:>12,}" for r in reports))
    for step in steps:
        print(f"{step:<48}" + "".join(f"{r['timings_s'][step]:>12.3f}" for r in reports))
    for key, label in (("points_sent", "3D points sent to the browser"), ("points_payload_kb", "3D traces as JSON (KiB)"),
                       ("gallery_items", "thumbnails per page"), ("loaded_frame_mb", "loaded frame (MiB)"),
                       ("parquet_mb", "Parquet on disk (MiB)"), ("viewer_peak_rss_mb", "viewer peak RSS (MiB)"),
                       ("build_dataset_s", "building the dataset (s, not timed above)")):
        print(f"{label:<48}" + "".join(f"{r[key]:>12,}" for r in reports))
    out = ROOT / "bench" / "results" / f"dashboard-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(reports, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
