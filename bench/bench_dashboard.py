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
import tempfile
import time
from pathlib import Path

import support


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _hwm_mb() -> float:
    return support.status_kb("self", "VmHWM") / 1024


def run(n: int) -> dict[str, object]:
    import panel as pn
    import polars as pl

    from curation.dashboards.embedding_view import build_figure
    from curation.dashboards.filters_view import summary_html
    from curation.dashboards.store import MAX_POINTS, DataStore, _load
    from tests.browser.dataset_builder import build_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_s, dataset_id = timed(lambda: build_dataset(root, n, "bench", shared_thumbnails=8))
        on_disk = sum(p.stat().st_size for p in root.rglob("*.parquet"))
        support.reset_peak()  # peak from here on: the viewer, not the builder
        store = DataStore(root)

        def first_page():
            store.open(dataset_id)
            summary_html(store)
            store.facet_counts()
            return store.page_items()

        results: dict[str, float] = {}
        results["open + first gallery page"], items = timed(first_page)
        frame_mb = _load(store.dataset)[0].estimated_size() / 2**20
        results["first 3D figure (decimated)"], fig = timed(
            lambda: build_figure(store.points(), "time", None, store.filtered.height))
        points = sum(len(t["x"]) for t in fig["data"])
        pn.pane.Plotly({"data": [], "layout": {}}).get_root()  # plotly's import, once, untimed
        model_s, pane = timed(lambda: pn.pane.Plotly(fig))
        results["3D figure -> Plotly pane model"], model = timed(pane.get_root)
        results["3D figure -> Plotly pane model"] += model_s
        payload = sum(len(json.dumps({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in t.items()}))
                      for t in fig["data"])

        def filter_change():
            store.selections = {**store.selections, "time": ["night", "dawn_dusk", "None"], "weather": ["rainy", "None"]}
            return store.counts(), store.facet_counts(), store.page_items(), build_figure(store.points(), "time", None, 0)

        results["filter change (counts, page, 3D)"], (counts, *_) = timed(filter_change)

        def sampling_change():
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
        support.emit(run(args.images[0]))
        return
    reports = []
    for n in args.images:
        print(f"dashboard on {n:,} images in a fresh process (building the dataset first) ...", flush=True)
        reports.append(support.run_child([__file__, "--one", "--images", str(n)], f"dashboard bench at {n} images"))
    rows = [[step, *(f"{r['timings_s'][step]:.3f}" for r in reports)] for step in reports[0]["timings_s"]]
    for key, label in (("points_sent", "3D points sent to the browser"), ("points_payload_kb", "3D traces as JSON (KiB)"),
                       ("gallery_items", "thumbnails per page"), ("loaded_frame_mb", "loaded frame (MiB)"),
                       ("parquet_mb", "Parquet on disk (MiB)"), ("viewer_peak_rss_mb", "viewer peak RSS (MiB)"),
                       ("build_dataset_s", "building the dataset (s, not timed above)")):
        rows.append([label, *(f"{r[key]:,}" for r in reports)])
    support.print_table("dashboard bench (server side, seconds)", ["step", *(f"{r['images']:,}" for r in reports)], rows)
    support.write_result("dashboard", reports)


if __name__ == "__main__":
    main()
