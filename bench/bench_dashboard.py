"""Benchmark the dashboard's server side on a 100k-image synthetic dataset.

Usage: python bench/bench_dashboard.py [--images N]
Times (time.perf_counter, through the DataStore and the views, no browser): opening the dataset and building the
first gallery page, the first 3D figure, a filter change, a sampling change, and a page turn. Prints a table and
writes bench/results/dashboard-<N>.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import polars as pl  # noqa: E402

from dashboards.embedding_view import build_figure  # noqa: E402
from dashboards.filters_view import summary_html  # noqa: E402
from dashboards.store import DataStore  # noqa: E402
from tests.browser.dataset_builder import build_dataset  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def run(n: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_s, dataset_id = timed(lambda: build_dataset(root, n, "bench", shared_thumbnails=8))
        store = DataStore(root)

        def first_page():
            store.open(dataset_id)
            summary_html(store)
            store.facet_counts()
            return store.page_items()

        results: dict[str, float] = {}
        results["open + first gallery page"], items = timed(first_page)
        results["first 3D figure (decimated)"], fig = timed(
            lambda: build_figure(store.points(), "time", None, store.filtered.height))
        points = sum(len(t["x"]) for t in fig["data"])
        import panel as pn

        results["3D figure -> Plotly pane model"], _ = timed(lambda: pn.pane.Plotly(fig).get_root())

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
            "images": n, "build_dataset_s": round(build_s, 2), "gallery_items": len(items), "points_sent": points,
            "filtered": counts["filtered"], "kept_at_40": sampled["kept"],
            "timings_s": {k: round(v, 4) for k, v in results.items()},
            "python": platform.python_version(), "polars": pl.__version__, "machine": platform.machine(),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    args = parser.parse_args()
    report = run(args.images)
    print(f"dashboard bench: {report['images']:,} images (dataset built in {report['build_dataset_s']} s), "
          f"{report['points_sent']:,} 3D points sent, {report['gallery_items']} thumbnails per page")
    print(f"{'step':<48} {'seconds':>8}")
    for step, seconds in report["timings_s"].items():
        print(f"{step:<48} {seconds:>8.3f}")
    out = ROOT / "bench" / "results" / f"dashboard-{report['images']}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
