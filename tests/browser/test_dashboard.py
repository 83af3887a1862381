"""The dashboard in Debian's chromium: `panel serve dashboards/` on a tmp data root, driven by Playwright."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from curation.dataset.catalog import Catalog, Table
from curation.dataset.registry import DatasetType, Status
from curation.sampling.subsets import selected_ids
from tests.browser.dataset_builder import build_dataset

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
XSS_NAME = "<img src=x onerror=alert(1)>"

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); browser tests need Debian's chromium",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright Python package is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("data")
    catalog = Catalog(root)
    ids = {
        "demo": build_dataset(root, 60, "Demo drives", kind=DatasetType.DEMO),
        "xss": build_dataset(root, 40, XSS_NAME, seed=1, analytics=False),
        "teach": build_dataset(root, 30, "Teach drives", seed=2, analytics=False),
        "processing": catalog.register("still running").id,
        "failed": catalog.dataset(catalog.register("broken run").id).mark_failed("the inference service was unreachable").id,
    }
    return {"root": root, "catalog": catalog, "ids": ids}


@pytest.fixture(scope="module")
def server(data_root: dict[str, object]) -> Iterator[str]:
    port = _free_port()
    env = {**os.environ, "CURATION_DATA_ROOT": str(data_root["root"]), "BOKEH_ALLOW_WS_ORIGIN": f"127.0.0.1:{port}"}
    ledger = data_root["catalog"].usage_file
    ledger.write_text(json.dumps([
        {"key_id": "key-0123456789ab", "day": f"2024-05-0{d}", "model": m, "processed": 40 * d, "failed": d}
        for d in (1, 2, 3) for m in ("cpu", "clip")
    ]))
    env["CURATION_USAGE_PATH"] = str(ledger)
    log = (ARTIFACTS / "panel-serve.log")
    ARTIFACTS.mkdir(exist_ok=True)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "panel", "serve", str(REPO / "dashboards"), "--port", str(port),
             "--address", "127.0.0.1", f"--allow-websocket-origin=127.0.0.1:{port}"],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}/dashboards"
        try:
            deadline = time.monotonic() + 45
            while True:
                try:
                    urllib.request.urlopen(url, timeout=5)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"panel serve did not start; see {log}")
                    time.sleep(0.3)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server: str) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    pg.set_default_timeout(20_000)
    pg.dialogs = []  # every alert/confirm the page fires; XSS would land here
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.goto(server)
    pg.wait_for_selector(".dataset-card")
    yield pg
    context.close()


def _shot(page, name: str, full_page: bool = False) -> None:
    """A screenshot scrolled to the top (clicks scroll the page; the template's header would hide the tabs)."""
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(ARTIFACTS / name), full_page=full_page)


def _card(page, name: str):
    return page.locator(".dataset-card").filter(has=page.locator(".cur-name", has_text=name))


def test_datasets_page(page, data_root) -> None:
    catalog, ids = data_root["catalog"], data_root["ids"]
    demo = _card(page, "Demo drives")
    sync_api.expect(demo).to_contain_text("Completed")
    sync_api.expect(demo).to_contain_text("demo")
    sync_api.expect(demo).to_contain_text("60")
    sync_api.expect(_card(page, "broken run")).to_contain_text("the inference service was unreachable")
    # the XSS name is text, not markup, and fires nothing
    sync_api.expect(page.locator(".cur-name", has_text=XSS_NAME)).to_be_visible()
    assert page.locator('img[src="x"]').count() == 0
    # a Processing dataset cannot open, and refreshes on its own when it completes
    running = _card(page, "still running")
    sync_api.expect(running.get_by_role("button", name="Processing\u2026")).to_be_disabled()
    catalog.dataset(ids["processing"]).update_record(status=Status.COMPLETED)
    sync_api.expect(_card(page, "still running").get_by_role("button", name="Open for curation")).to_be_enabled(timeout=10_000)
    _shot(page, "01-datasets.png", full_page=True)
    # demo refused with a visible message
    demo.get_by_role("button", name="Delete").click()
    sync_api.expect(page.get_by_text("is the demo dataset and cannot be deleted")).to_be_visible()
    assert catalog.dataset(ids["demo"]).exists()
    # a user dataset is erased after confirmation
    failed = _card(page, "broken run")
    failed.get_by_role("button", name="Delete").click()
    failed.get_by_role("button", name="Yes, delete").click()
    sync_api.expect(page.get_by_text("Deleted \u201cbroken run\u201d")).to_be_visible()
    sync_api.expect(_card(page, "broken run")).to_have_count(0)
    assert not catalog.dataset(ids["failed"]).exists()
    assert ids["failed"] not in catalog.dataset_ids()
    # type filter and search
    page.get_by_role("button", name="User", exact=True).click()
    sync_api.expect(_card(page, "Demo drives")).to_have_count(0)
    page.get_by_role("button", name="All", exact=True).click()
    page.get_by_placeholder("Search by name").fill("demo")
    sync_api.expect(page.locator(".dataset-card")).to_have_count(1)
    assert page.dialogs == []


def test_curation_flow(page, data_root) -> None:
    catalog, ids = data_root["catalog"], data_root["ids"]
    demo = catalog.dataset(ids["demo"])
    meta = demo.frame(Table.METADATA)
    _card(page, "Demo drives").get_by_role("button", name="Open for curation").click()
    tiles = page.locator(".gallery .tile")
    sync_api.expect(tiles).to_have_count(48)
    sync_api.expect(page.locator(".page-label")).to_contain_text("Page 1 of 2")
    sync_api.expect(page.locator(".filtered-count")).to_have_text("60")
    _shot(page, "02-gallery.png")

    # QFV shows the clicked file
    name = tiles.first.get_attribute("title")
    tiles.first.click()
    sync_api.expect(page.locator(".qfv-name")).to_have_text(name)
    sync_api.expect(page.locator(".cur-qfv")).to_contain_text("Anomaly score")

    # a dark frame: the real analytics.parquet's flags and anomaly score, and its similar images are clickable
    analytics = demo.frame(Table.ANALYTICS).join(demo.frame(Table.FILES), on="image_id")
    dark = analytics.filter(pl.col("quality_flags").list.contains("dark")).row(0, named=True)
    page.locator(f'.gallery .tile[data-image-id="{dark["image_id"]}"]').click()
    qfv = page.locator(".cur-qfv")
    sync_api.expect(page.locator(".qfv-name")).to_have_text(dark["blob_name"])
    sync_api.expect(qfv).to_contain_text(f"Quality flags{', '.join(dark['quality_flags'])}")
    sync_api.expect(qfv).to_contain_text(f"Anomaly score{dark['anomaly_score']:.3f}")
    similar = page.locator(".similar .tile")
    sync_api.expect(similar).to_have_count(len(dark["similar_ids"]))
    _shot(page, "03-quick-file-view.png")
    neighbour = dark["similar_ids"][0]
    page.locator(f'.similar .tile[data-image-id="{neighbour}"]').click()
    neighbour_name = analytics.filter(pl.col("image_id") == neighbour)["blob_name"].item()
    sync_api.expect(page.locator(".qfv-name")).to_have_text(neighbour_name)
    sync_api.expect(page.locator(f'.gallery .tile.selected[data-image-id="{neighbour}"]')).to_have_count(
        1 if neighbour in analytics["image_id"].head(48).to_list() else 0)

    # untick "day": counts follow (AND across, OR within; None stays ticked)
    page.locator(".filter-time label", has_text="day (").click()
    expected = meta.filter(pl.col("time").is_null() | (pl.col("time") != "day")).height
    sync_api.expect(page.locator(".filtered-count")).to_have_text(f"{expected:,}")

    # sampling 100% -> 60%: the kept count is the library's selection
    handle = page.locator(".sampling-slider .noUi-handle")
    handle.focus()
    handle.press("ArrowLeft")
    handle.press("ArrowLeft")
    filters = {"time": ["night", "dawn_dusk", None]}
    kept = len(selected_ids(demo, 0.6, filters))
    sync_api.expect(page.locator(".kept-count")).to_have_text(f"{kept:,}")
    assert page.locator(".gallery .tile.excluded").count() > 0
    _shot(page, "04-filtered-sampled.png")

    # save the selection as a new dataset
    page.get_by_placeholder("e.g. rainy nights 40%").fill("no day 60%")
    page.get_by_placeholder("e.g. rainy nights 40%").press("Enter")
    page.get_by_role("button", name="Save selection").click()
    new_id = page.locator(".new-dataset-id").inner_text(timeout=30_000)
    derived = catalog.dataset(new_id)
    record = derived.load_record()
    assert record.name == "no day 60%" and record.original_dataset == ids["demo"]
    assert record.counts.accepted == kept
    assert derived.frame(Table.FILES).height == kept

    # 3D view and distribution
    page.locator(".bk-tab", has_text="3D embedding").click()
    page.wait_for_selector(".embedding-plot .js-plotly-plot")
    page.wait_for_timeout(1500)
    _shot(page, "05-embedding-3d.png")
    page.locator(".bk-tab", has_text="Distribution").click()
    sync_api.expect(page.get_by_text("kept in the 60% sample.")).to_be_visible()
    page.locator(".distribution-plot canvas").first.wait_for(state="visible")
    page.wait_for_timeout(1500)
    _shot(page, "06-distribution.png")
    assert page.dialogs == []


def test_xss_dataset_and_usage_page(page, data_root) -> None:
    _card(page, XSS_NAME).get_by_role("button", name="Open for curation").click()
    sync_api.expect(page.locator(".dataset-title")).to_have_text(XSS_NAME)
    page.locator(".gallery .tile").first.click()
    sync_api.expect(page.locator(".cur-qfv")).to_contain_text("not computed")  # no analytics.parquet
    assert page.locator('img[src="x"]').count() == 0
    page.locator(".bk-tab", has_text="Usage").click()
    sync_api.expect(page.locator(".usage-note")).to_contain_text("480 images processed, 12 failed")
    page.wait_for_timeout(1000)
    _shot(page, "07-usage.png")
    assert page.locator(".bk-tab", has_text="Teach").count() == 0  # teaching lives in the Curate page now
    assert page.dialogs == []


def test_download_results_json(page, data_root) -> None:
    with page.expect_download() as info:
        _card(page, "Demo drives").get_by_role("button", name="Download JSON").click()
    download = info.value
    assert download.suggested_filename == "Demo_drives-results.json"
    data = json.loads(Path(download.path()).read_text(encoding="utf-8"))
    assert data["dataset"]["id"] == data_root["ids"]["demo"]
    assert len(data["images"]) == 60


def test_teach_by_example(page, data_root) -> None:
    store = data_root["catalog"].dataset(data_root["ids"]["teach"])
    meta = store.frame(Table.METADATA).join(store.frame(Table.FILES), on="image_id")
    before = store.load_record().meta_model
    _card(page, "Teach drives").get_by_role("button", name="Open for curation").click()
    sync_api.expect(page.locator(".gallery .tile")).to_have_count(30)
    card = page.locator(".teach-card")
    result = card.locator(".teach-result")
    sync_api.expect(card.get_by_role("button", name="Label this image")).to_be_disabled()

    # two day images, one at a time from the quick file view
    for row in meta.filter(pl.col("time") == "day").head(2).iter_rows(named=True):
        page.locator(f'.gallery .tile[data-image-id="{row["image_id"]}"]').click()
        sync_api.expect(page.locator(".qfv-name")).to_have_text(row["blob_name"])
        card.get_by_role("button", name="Label this image").click()
        sync_api.expect(result).to_contain_text("Labelled 1 image(s) time = day")
    sync_api.expect(card.locator(".teach-counts")).to_contain_text("time: day 2")
    # one class only: an error message, not a traceback
    card.get_by_role("button", name="Teach", exact=True).click()
    sync_api.expect(result.locator('[data-kind="error"]')).to_contain_text("Not taught: nothing to teach")

    # the night images: filter the gallery to night, label the whole page
    nights = meta.filter(pl.col("time") == "night").height
    for other in ("day (", "dawn/dusk (", "None ("):
        page.locator(".filter-time label", has_text=other).click()
    sync_api.expect(page.locator(".filtered-count")).to_have_text(str(nights))
    card.locator(".teach-class select").select_option("night")
    card.get_by_role("button", name="Label this page").click()
    sync_api.expect(result).to_contain_text(f"Labelled {nights} image(s) time = night")
    sync_api.expect(card.locator(".teach-counts")).to_contain_text(f"time: day 2, night {nights}")
    sync_api.expect(card.locator(".teach-table tbody tr")).to_have_count(2 + nights)
    _shot(page, "08-teach-labels.png")

    card.get_by_role("button", name="Teach", exact=True).click()
    sync_api.expect(result.locator(".teach-meta-model")).to_have_text(f"{before}+probe-v1", timeout=60_000)
    sync_api.expect(result).to_contain_text("training accuracy 100%")
    sync_api.expect(card.locator(".teach-pending")).to_contain_text("No labels yet")
    assert store.load_record().meta_model == f"{before}+probe-v1"
    assert len(list(store.table_path(Table.FILES).parent.glob("teach-labels-*.csv"))) == 1  # beside the tables
    # the dataset was reloaded: the night filter now counts the re-tagged images
    retagged = store.frame(Table.METADATA)
    nights_now = retagged.filter(pl.col("time") == "night").height
    sync_api.expect(page.locator(".filtered-count")).to_have_text(str(nights_now))
    _shot(page, "09-teach-result.png")
    assert page.dialogs == []
