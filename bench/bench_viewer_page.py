"""Benchmark the dashboard in a real browser (Debian's chromium, driven by Playwright's sync API): the first page's
weight and time to usable, and the 3D embedding tab's hover-to-preview latency.

Usage:
    python bench/bench_viewer_page.py                                         # quick: one dataset of 2,000 images
    python bench/bench_viewer_page.py --images 100000 --repeat 3 --hovers 20  # larger sets (one server per size)
Each size gets its own temporary data root holding one dataset from tests/browser/dataset_builder.py (over 5,000
images: 8 shared thumbnails) and its own `panel serve dashboards/`, started as tests/browser/test_dashboard.py does.

First page (the datasets list), --repeat times, each in a fresh browser context (empty cache). Bytes transferred: the
sum of CDP Network.loadingFinished encodedDataLength (bytes on the wire: headers + body as sent) of the HTTP requests
finished when the page is usable, and apart from it the WebSocket frames received (Bokeh sends the document through
it; payload length, base64 decoded for binary frames). Requests: CDP Network.requestWillBeSent events for http(s)
URLs. Time to usable: from page.goto's start to the first `.dataset-card` visible, by time.perf_counter (Python side,
with Playwright's round trips) and by the page's performance.now() (from the navigation's start, polled every frame).

Hover: open the dataset, its "3D embedding" tab, then --hovers points of the 2D projection (random among the plotted
ones, at their layout x, y from embeddings.parquet). For each: move the mouse 60 px above the plot area (off every
point: a hover from nothing), wait for the card to hide and 300 ms more (a hover sent while the server still takes the unhover is ~40 ms slower), t0 =
performance.now() in the page, page.mouse.move onto the point, wait for `.cur-hover-card` drawn after t0.
Latency = its data-shown-at - t0; server round trip = data-shown-at - Plotly's plotly_hover event. Then the same
points again, each straight from the last (one mouse move, never off a point): latency the same way, and whether the
card named the point moved onto.
Prints a table and writes bench/results/viewer-page-<timestamp>.json. Without chromium or playwright it says so and
exits 0. Wall-clock measurements only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import math
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import support

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",  # as the browser tests
        "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1500, "height": 1000}
PROJECTION = ".embedding-projection .js-plotly-plot"
TO_PAGE = """(gd, pts) => { const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
  return pts.map(([x, y]) => [r.left + xa._offset + xa.l2p(x), r.top + ya._offset + ya.l2p(y)]); }"""
# performance.now() once the first .dataset-card (inside Bokeh's shadow roots) has a box, else null
FIRST_CARD = """() => { const find = (root) => root.querySelector('.dataset-card') || [...root.querySelectorAll('*')]
    .filter((el) => el.shadowRoot).map((el) => find(el.shadowRoot)).find(Boolean) || null;
  const c = find(document), b = c && c.getBoundingClientRect();
  return b && b.width && b.height && getComputedStyle(c).visibility !== 'hidden' ? performance.now() : null; }"""
HIDDEN = "() => { const c = document.querySelector('.cur-hover-card'); return !c || c.style.display === 'none'; }"
DRAWN = """t0 => { const c = document.querySelector('.cur-hover-card');
  return c && c.style.display !== 'none' && c.dataset.imageId && +c.dataset.shownAt > t0
    ? [c.dataset.imageId, +c.dataset.shownAt, window.__hoverAt] : null; }"""
MEASURES = {"performance_now_ms": "first page usable, performance.now (ms)",
            "perf_counter_ms": "first page usable, perf_counter (ms)", "http_kb": "first page HTTP transferred (KiB)",
            "ws_kb": "first page WebSocket frames in (KiB)", "requests": "first page HTTP requests",
            "latency_ms": "hover: mouse move -> card (ms)", "round_trip_ms": "hover: plotly_hover -> card (ms)",
            "direct_ms": "hover straight from the last point: move -> card (ms)"}


@contextmanager
def serve(root: Path) -> Iterator[str]:
    """`panel serve dashboards/` on the data root, as the browser tests' `server` fixture; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CURATION_DATA_ROOT": str(root), "BOKEH_ALLOW_WS_ORIGIN": f"127.0.0.1:{port}"}
    log = root / "panel-serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "panel", "serve", str(support.REPO / "dashboards"), "--port",
                                 str(port), "--address", "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{port}"],
                                cwd=support.REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/dashboards"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url, timeout=5)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"panel serve did not start:\n{log.read_text()[-3000:]}") from None
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def first_page(browser, url: str) -> dict[str, float]:
    """One load of the datasets list in a fresh context: bytes, requests, time to the first visible card."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    got = {"http_bytes": 0, "requests": 0, "ws_bytes": 0}
    cdp.on("Network.requestWillBeSent", lambda e: got.update(  # http(s) only: not the ES modules' blob: URLs
        requests=got["requests"] + e["request"]["url"].startswith("http")))
    cdp.on("Network.loadingFinished", lambda e: got.update(http_bytes=got["http_bytes"] + e["encodedDataLength"]))
    cdp.on("Network.webSocketFrameReceived", lambda e: got.update(ws_bytes=got["ws_bytes"] + len(
        e["response"]["payloadData"]) * (3 / 4 if e["response"].get("opcode") == 2 else 1)))  # binary: base64
    cdp.send("Network.enable")
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit")
    in_page = page.wait_for_function(FIRST_CARD, polling="raf", timeout=60_000).json_value()
    wall, seen = time.perf_counter() - t0, dict(got)  # what had arrived when the page became usable
    context.close()
    return {"perf_counter_ms": wall * 1000, "performance_now_ms": in_page, "http_kb": seen["http_bytes"] / 1024,
            "ws_kb": seen["ws_bytes"] / 1024, "requests": seen["requests"]}


def hovers(browser, url: str, root: Path, dataset_id: str, name: str, m: int) -> list[dict[str, object]]:
    """m hovers over the 2D projection: mouse move -> card drawn, and plotly_hover -> card drawn (ms)."""
    import polars as pl

    from curation.dataset.catalog import Catalog, Table

    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(120_000)
    page.goto(url)
    card = page.locator(".dataset-card").filter(has=page.locator(".cur-name", has_text=name))
    card.get_by_role("button", name="Open for curation").click()
    page.locator(".dataset-title", has_text=name).wait_for()
    page.locator(".bk-tab", has_text="3D embedding").click()
    plot = page.locator(PROJECTION)
    gd = plot.element_handle()  # waits for it
    page.wait_for_function("gd => gd._fullLayout && gd._fullLayout.xaxis && gd.data.length > 0", arg=gd)
    page.wait_for_timeout(1000)  # let the layout settle before taking pixel positions
    page.evaluate("gd => gd.on('plotly_hover', () => { window.__hoverAt = performance.now(); })", gd)
    plotted = page.evaluate("gd => gd.data.flatMap(t => t.customdata || [])", gd)
    points = (Catalog(root).dataset(dataset_id).frame(Table.EMBEDDINGS, columns=["image_id", "x", "y"])
              .filter(pl.col("image_id").is_in(plotted)).sample(min(m, len(plotted)), seed=0))
    out = []
    for i, row in enumerate(points.iter_rows(named=True)):
        (px, py), = plot.evaluate(TO_PAGE, [[row["x"], row["y"]]])
        top = plot.evaluate("gd => gd.getBoundingClientRect().top + gd._fullLayout.yaxis._offset")
        page.mouse.move(px, max(1, top - 60))  # off the plot, > 40 px from the last card's point: the card hides
        page.wait_for_function(HIDDEN, polling="raf")
        page.wait_for_timeout(300)  # the unhover reaches the server
        t0 = page.evaluate("() => { window.__hoverAt = null; return performance.now(); }")
        page.mouse.move(px, py)
        try:
            drawn = page.wait_for_function(DRAWN, arg=t0, polling="raf", timeout=15_000)
        except Exception as exc:  # noqa: BLE001 -- a missed hover is a result, with a screenshot to look at
            page.screenshot(path=str(shot := support.RESULTS / f"viewer-page-hover-miss-{i}.png"))
            print(f"  hover {i} at ({px:.0f}, {py:.0f}): no card ({type(exc).__name__}); see {shot}", flush=True)
            continue
        shown_id, shown_at, hover_at = drawn.json_value()
        out.append({"target": row["image_id"], "shown": shown_id, "latency_ms": shown_at - t0, "direct_ms": None,
                    "round_trip_ms": None if hover_at is None else shown_at - hover_at})
    # Then straight from point to point, the mouse never off a point between them: Plotly sends unhover(old) and
    # hover(new) together, the case Panel's unhover handler used to get wrong (the card named the old point)
    for i, row in enumerate(points.iter_rows(named=True)):
        (px, py), = plot.evaluate(TO_PAGE, [[row["x"], row["y"]]])
        t0 = page.evaluate("() => { window.__hoverAt = null; return performance.now(); }")
        page.mouse.move(px, py)
        try:
            drawn = page.wait_for_function(DRAWN, arg=t0, polling="raf", timeout=15_000)
        except Exception as exc:  # noqa: BLE001 -- a missed hover is a result
            print(f"  direct hover {i} at ({px:.0f}, {py:.0f}): no card ({type(exc).__name__})", flush=True)
            continue
        shown_id, shown_at, hover_at = drawn.json_value()
        out.append({"target": row["image_id"], "shown": shown_id, "latency_ms": None, "direct_ms": shown_at - t0,
                    "round_trip_ms": None, "direct": True})
    context.close()
    return out


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)]


def run(browser, n: int, repeat: int, m: int) -> dict[str, object]:
    from tests.browser.dataset_builder import build_dataset

    with tempfile.TemporaryDirectory(prefix="viewer-page-") as tmp:
        root, name = Path(tmp), f"Bench {n:,} images"
        print(f"building a dataset of {n:,} images ...", flush=True)
        dataset_id = build_dataset(root, n, name, shared_thumbnails=8 if n > 5000 else 0)
        with serve(root) as url:
            loads = [first_page(browser, url) for _ in range(repeat)]
            print(f"  first page x{repeat} done; {m} hovers ...", flush=True)
            hovered = hovers(browser, url, root, dataset_id, name, m)
    direct = [h for h in hovered if h.get("direct")]
    cold = [h for h in hovered if not h.get("direct")]
    return {"images": n, "first_page": loads, "hovers": hovered, "missed_hovers": m - len(cold),
            "named_target": sum(h["target"] == h["shown"] for h in cold), "missed_direct": m - len(direct),
            "named_target_direct": sum(h["target"] == h["shown"] for h in direct)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[2000], help="dataset sizes, one server each")
    parser.add_argument("--repeat", type=int, default=3, help="first-page loads per size (fresh context each)")
    parser.add_argument("--hovers", type=int, default=20, help="points hovered per size")
    args = parser.parse_args()
    if not Path(CHROMIUM).exists():
        print(f"{CHROMIUM} is missing (apt-get install chromium): the viewer page bench is skipped")
        return
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("the playwright Python package is not installed: the viewer page bench is skipped")
        return
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        reports = [run(browser, n, args.repeat, args.hovers) for n in args.images]
        version = browser.version
    rows = []
    for r, (key, what) in ((r, item) for r in reports for item in MEASURES.items()):
        hover = key in ("latency_ms", "round_trip_ms", "direct_ms")
        v = [x[key] for x in r["hovers" if hover else "first_page"] if x[key] is not None]
        med, p90, most = (statistics.median(v), pct(v, 0.9), max(v)) if v else (math.nan,) * 3
        rows.append([f"{r['images']:,} images: {what}", f"{med:,.1f}", f"{p90:,.1f}" if hover else "", f"{most:,.1f}",
                     str(len(v))])
    support.print_table(f"viewer page bench (chromium {version}, Playwright)", ["measure", "median", "p90", "max", "n"],
                        rows)
    for r in reports:
        direct = sum(1 for h in r["hovers"] if h.get("direct"))
        print(f"{r['images']:,} images, from off the plot: {r['missed_hovers']} hover(s) without a card; the card named "
              f"the hovered point {r['named_target']} of {len(r['hovers']) - direct} times (a neighbouring point where "
              "points overlap; fine for latency)")
        print(f"{r['images']:,} images, straight from point to point: {r['missed_direct']} hover(s) without a card; the "
              f"card named the hovered point {r['named_target_direct']} of {direct} times")
    support.write_result("viewer-page", {"chromium": version, "machine": support.machine(), "runs": reports})


if __name__ == "__main__":
    main()
