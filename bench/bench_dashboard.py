"""Benchmark the dashboard's server side on synthetic datasets of 100k and 1M images.

Usage:
    python bench/bench_dashboard.py                          # quick: 20k images
    python bench/bench_dashboard.py --images 100000 1000000  # the full run
Each size runs in a fresh child process (its peak RSS is its own). Times (time.perf_counter, through the DataStore
and the views, no browser): opening the dataset and building the first gallery page (cold: Parquet read and joined),
the first 3D figure, turning it into a Plotly pane model, a filter change, a sampling change, a page turn, the
distribution bars and the quick file view, a lasso over the 2D projection (every image tested, not only the points
drawn) and a hover preview's lookup. Also the points and bytes the 3D view would send to the browser (the store
decimates to MAX_POINTS = 20k, whatever the dataset's size), and the loaded frame's size in memory.

Which engine: the same open and filter change (counts, the four facet counts, the first gallery page) three ways, in
the same child process: the viewer's way (the dataset's tables read and joined once into memory with polars, every
filter a query on that frame), a lazy polars scan of the Parquet files per query (predicate pushdown, nothing held in
memory), and DuckDB over the same Parquet files (when the duckdb package is installed: `pip install -e '.[test]'`).
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


def _lasso(images):
    """A lasso around the lower-left half of the layout: a 64-vertex ellipse, as a hand-drawn path would be."""
    import numpy as np

    from curation.viewer.region import Region

    x, y = images["x"].drop_nulls(), images["y"].drop_nulls()
    cx, cy, rx, ry = float(x.quantile(0.3)), float(y.quantile(0.3)), float(x.std()), float(y.std())
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    return Region("lasso", tuple(cx + rx * np.cos(t)), tuple(cy + ry * np.sin(t)))


FILTER = {"time": ["night", "dawn_dusk", None], "weather": ["rainy", None]}


def compare_engines(dataset) -> dict[str, dict[str, float]]:
    """Open (all images) and a filter change (FILTER), each: the count, the four facet counts and the first page of
    48, by the in-memory polars frame, a lazy polars scan per query, and DuckDB over the Parquet files."""
    import polars as pl

    from curation.dataset.catalog import Table
    from curation.dataset.tags import tag_condition
    from curation.taxonomy import CATEGORIES
    from curation.viewer.data import apply_filters, facet_counts, load_images

    def in_memory(frame, filters):
        matching = apply_filters(frame, filters)
        return matching.height, facet_counts(frame, filters), matching.head(48)

    def memory_open():
        frame = load_images(dataset).select("image_id", "blob_name", "thumbnail", *CATEGORIES)
        return frame, in_memory(frame, {})

    out: dict[str, dict[str, float]] = {}
    open_s, (frame, _) = timed(memory_open)
    out["polars, in memory (the viewer)"] = {"open": open_s, "filter": timed(lambda: in_memory(frame, FILTER))[0]}
    del frame

    def lazy(filters):
        images = dataset.scan(Table.FILES).select("image_id", "blob_name", "thumbnail").join(
            dataset.scan(Table.METADATA).select("image_id", *CATEGORIES), on="image_id", how="left", maintain_order="left")
        queries = [images.filter(tag_condition(filters)).select(pl.len()), images.filter(tag_condition(filters)).head(48)]
        for category in CATEGORIES:
            others = {c: v for c, v in filters.items() if c != category}
            queries.append(images.filter(tag_condition(others)).group_by(category).len())
        return pl.collect_all(queries)

    out["polars, lazy scan per query"] = {"open": timed(lambda: lazy({}))[0], "filter": timed(lambda: lazy(FILTER))[0]}
    try:
        import duckdb
    except ImportError:
        return out

    def where(filters) -> str:
        clauses = []
        for category, values in filters.items():
            named = ", ".join(f"'{v}'" for v in values if v is not None)
            parts = ([f"{category} IN ({named})"] if named else []) + ([f"{category} IS NULL"] if None in values else [])
            clauses.append("(" + " OR ".join(parts) + ")")
        return " AND ".join(clauses) or "TRUE"

    def duck(con, filters):
        rows = [con.sql(f"SELECT count(*) FROM images WHERE {where(filters)}").fetchall(),
                con.sql(f"SELECT image_id, blob_name, thumbnail FROM images WHERE {where(filters)} ORDER BY row LIMIT 48").fetchall()]
        for category in CATEGORIES:
            others = {c: v for c, v in filters.items() if c != category}
            rows.append(con.sql(f"SELECT {category}, count(*) FROM images WHERE {where(others)} GROUP BY 1").fetchall())
        return rows

    def duck_open():
        con = duckdb.connect()
        con.sql(f"""CREATE VIEW images AS SELECT f.file_row_number AS row, f.image_id, f.blob_name, f.thumbnail,
                    {", ".join(f"m.{c}" for c in CATEGORIES)}
                    FROM read_parquet('{dataset.table_path(Table.FILES)}', file_row_number = true) f
                    LEFT JOIN read_parquet('{dataset.table_path(Table.METADATA)}') m USING (image_id)""")
        return con, duck(con, {})

    open_s, (con, _) = timed(duck_open)
    out[f"DuckDB {duckdb.__version__} over Parquet"] = {"open": open_s, "filter": timed(lambda: duck(con, FILTER))[0]}
    return {k: {step: round(v, 4) for step, v in d.items()} for k, d in out.items()}


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
        store.param.update(selections={}, fraction=1.0)
        lasso = _lasso(store.images)

        def region_change():
            store.param.update(region=lasso, page=1)
            return store.counts(), store.facet_counts(), store.page_items(), build_figure(store.points(), "time", None, 0)

        results["lasso over the 2D projection (counts, page, 3D)"], (in_lasso, *_) = timed(region_change)
        hover_ids = store.points()["image_id"].sample(50, seed=1, with_replacement=True).to_list()
        store.hover_preview(hover_ids[0])  # the index over the plotted points: built once per set of points
        hover_s, _ = timed(lambda: [store.hover_preview(i) for i in hover_ids])
        results["hover preview lookup (ms per hover)"] = 1000 * hover_s / len(hover_ids)
        engines = compare_engines(store.dataset)
        return {
            "images": n, "build_dataset_s": round(build_s, 2), "parquet_mb": round(on_disk / 2**20, 1),
            "loaded_frame_mb": round(frame_mb, 1), "viewer_peak_rss_mb": round(_hwm_mb()),
            "gallery_items": len(items), "points_sent": points, "max_points": MAX_POINTS,
            "points_payload_kb": round(payload / 1024), "filtered": counts["filtered"], "kept_at_40": sampled["kept"],
            "in_lasso": in_lasso["filtered"], "engines": engines,
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
    engines = [[f"{name}: {step}", *(f"{r['engines'][name][step]:.3f}" if name in r["engines"] else "-" for r in reports)]
               for name in reports[0]["engines"] for step in ("open", "filter")]
    support.print_table("open and a filter change (count, 4 facets, first page), seconds, by engine",
                        ["engine: step", *(f"{r['images']:,}" for r in reports)], engines)
    support.write_result("dashboard", reports)


if __name__ == "__main__":
    main()
