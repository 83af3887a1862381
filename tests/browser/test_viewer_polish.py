"""Issue #18's viewer fixes in Debian's chromium: cards updated in place, no delete of a Processing dataset, progress
and failure reasons on cards, one form of class names, a light first page. Screenshots go to test-artifacts/polish-*.

Reuses test_dashboard.py's server and browser fixtures over this module's own data root.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from urllib.parse import urlparse

import polars as pl
import pytest

from curation.dataset.catalog import Catalog, Table
from curation.dataset.registry import Counts
from tests.browser.dataset_builder import build_dataset
from tests.browser.test_dashboard import ARTIFACTS, XSS_NAME, _card, _shot, browser, server, sync_api  # noqa: F401

pytestmark = pytest.mark.browser

FIRST_PAGE_BUDGET = 3_000_000  # bytes of the datasets page (3 MB): no Plotly, MathJax, Tabulator or Fast bundles
LOCAL_HOSTS = {"127.0.0.1"}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("polish")
    catalog = Catalog(root)
    parent = build_dataset(root, 60, "Parent drives", seed=4)
    derived = build_dataset(root, 30, "Rainy subset", seed=5, analytics=False)
    catalog.dataset(derived).update_record(original_dataset=parent)
    running = catalog.register("still curating").id
    catalog.dataset(running).update_record(counts=Counts(found=10_000, accepted=10_000, processed=1_200, failed=34))
    failed = catalog.register(XSS_NAME).id
    catalog.dataset(failed).mark_failed("the inference service was unreachable <b>twice</b>")
    doomed = build_dataset(root, 30, "Delete me", seed=6, analytics=False)
    ids = {"parent": parent, "derived": derived, "running": running, "failed": failed, "doomed": doomed}
    return {"root": root, "catalog": catalog, "ids": ids}


@pytest.fixture
def page(browser, server: str) -> Iterator[object]:  # noqa: F811
    """A 1500x1000 page on the datasets list; `pg.requests` and `pg.errors` record every request and console error."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.requests, pg.errors, pg.dialogs = [], [], []
    pg.on("request", lambda r: pg.requests.append(r.url))
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    started = time.monotonic()
    pg.goto(server)
    pg.wait_for_selector(".dataset-card")
    sync_api.expect(pg.get_by_role("button", name="Open for curation").first).to_be_enabled()
    pg.usable_after = time.monotonic() - started
    yield pg
    context.close()


def _remote(urls: list[str]) -> list[str]:
    """Requests that leave the machine (blob: and data: URLs are made in the page)."""
    parsed = [urlparse(u) for u in urls]
    return [p.geturl() for p in parsed if p.scheme in ("http", "https", "ws", "wss") and p.hostname not in LOCAL_HOSTS]


def _open(page, name: str) -> None:
    _card(page, name).get_by_role("button", name="Open for curation").click()
    sync_api.expect(page.locator(".dataset-title")).to_have_text(name)
    sync_api.expect(page.locator(".gallery .tile").first).to_be_visible()


def test_first_page_is_light_and_local_and_plotly_comes_with_the_3d_tab(page, data_root) -> None:
    entries = page.evaluate(
        "[...performance.getEntriesByType('navigation'), ...performance.getEntriesByType('resource')]"
        ".map(e => ({name: e.name, size: e.encodedBodySize, transfer: e.transferSize}))"
    )
    total = sum(e["size"] for e in entries)
    print(f"\nfirst page: {total:,} bytes in {len(entries)} responses; usable after {page.usable_after:.2f} s")
    for e in sorted(entries, key=lambda e: -e["size"])[:8]:
        print(f"  {e['size']:>10,}  {e['name'].split('?')[0]}")
    names = " ".join(e["name"] for e in entries)
    for heavy in ("plotly", "mathjax", "tabulator", "fast-components"):
        assert heavy not in names, f"{heavy} is loaded by the first page"
    assert total < FIRST_PAGE_BUDGET, f"the first page weighs {total:,} bytes"
    assert _remote(page.requests) == []
    assert page.errors == []
    _shot(page, "polish-01-first-page.png")

    # the 3D tab brings Plotly when first opened, from this server, and draws the legend's classes as the filters do
    _open(page, "Parent drives")
    page.locator(".bk-tab", has_text="3D embedding").click()
    page.wait_for_selector(".embedding-plot .js-plotly-plot", timeout=90_000)
    page.wait_for_selector(".embedding-plot .legendtext")
    assert any("plotly" in u for u in page.requests) and _remote(page.requests) == []
    legend = page.locator(".embedding-plot .legendtext").all_text_contents()
    assert "dawn/dusk" in legend and "dawn_dusk" not in legend, legend
    assert page.errors == []
    _shot(page, "polish-02-3d-lazy-plotly.png")


def test_cards_update_in_place_so_a_delete_confirmation_survives_the_refresh(page, data_root) -> None:
    catalog, ids = data_root["catalog"], data_root["ids"]
    doomed, running = _card(page, "Delete me"), _card(page, "still curating")
    sync_api.expect(running).to_contain_text("1,234 / 10,000 images")
    doomed.get_by_role("button", name="Delete").click()
    yes = doomed.get_by_role("button", name="Yes, delete")
    sync_api.expect(yes).to_be_visible()
    # the running dataset progresses, this one's record changes too: the refresh updates the cards in place
    progressed = Counts(found=10_000, accepted=10_000, processed=5_000, failed=0)
    catalog.dataset(ids["running"]).update_record(counts=progressed)
    catalog.dataset(ids["doomed"]).update_record(meta_model="cpu-rules-2")
    sync_api.expect(running).to_contain_text("5,000 / 10,000 images", timeout=30_000)
    sync_api.expect(doomed).to_contain_text("cpu-rules-2")
    sync_api.expect(yes).to_be_visible()
    sync_api.expect(yes).to_be_enabled()
    _shot(page, "polish-03-confirm-survives-refresh.png", full_page=True)
    yes.click()
    sync_api.expect(page.locator(".datasets-message")).to_contain_text("Deleted \u201cDelete me\u201d.")
    sync_api.expect(_card(page, "Delete me")).to_have_count(0)
    assert not catalog.dataset(ids["doomed"]).exists()
    assert page.dialogs == [] and page.errors == []


def test_processing_card_shows_progress_and_cannot_be_deleted(page, data_root) -> None:
    catalog, ids = data_root["catalog"], data_root["ids"]
    running = _card(page, "still curating")
    sync_api.expect(running.locator(".cur-progress-text")).to_contain_text(" / 10,000 images")
    sync_api.expect(running.get_by_role("button", name="Delete")).to_be_disabled()
    sync_api.expect(running.get_by_role("button", name="Processing\u2026")).to_be_disabled()
    sync_api.expect(running).to_contain_text("Delete is available once the run ends.")
    # the disabled button looks disabled
    assert float(running.get_by_role("button", name="Delete").evaluate("b => getComputedStyle(b).opacity")) < 0.6
    running.get_by_role("button", name="Delete").click(force=True)  # a click on a disabled button does nothing
    assert catalog.dataset(ids["running"]).exists()
    running.screenshot(path=str(ARTIFACTS / "polish-04-processing-card.png"))  # the card itself


def test_failed_card_shows_the_reason_and_how_to_retry(page, data_root) -> None:
    ids = data_root["ids"]
    failed = _card(page, XSS_NAME)
    sync_api.expect(failed.locator(".cur-reason")).to_have_text("the inference service was unreachable <b>twice</b>")
    sync_api.expect(failed.locator(".cur-retry")).to_contain_text(f"--resume {ids['failed']}")
    sync_api.expect(failed.get_by_role("button", name="Failed", exact=True)).to_be_disabled()
    assert failed.get_by_role("button", name="Failed\u2026").count() == 0
    sync_api.expect(failed.get_by_role("button", name="Delete")).to_be_enabled()
    assert page.locator('img[src="x"]').count() == 0 and page.dialogs == []
    # a derived dataset names its original dataset, with the id as secondary text
    derived = _card(page, "Rainy subset")
    sync_api.expect(derived).to_contain_text("Parent drives")
    sync_api.expect(derived.locator(".cur-secondary")).to_have_text(ids["parent"])
    _shot(page, "polish-05-failed-and-derived-cards.png", full_page=True)  # the whole list: failed, derived and parent


def test_curate_page_labels_captions_teach_and_save_above_the_fold(page, data_root) -> None:
    store = data_root["catalog"].dataset(data_root["ids"]["parent"])
    meta = store.frame(Table.METADATA).join(store.frame(Table.FILES), on="image_id")
    _open(page, "Parent drives")
    # one form of class names: filters and quick file view (the 3D legend: the first test)
    sync_api.expect(page.locator(".filter-time label", has_text="dawn/dusk (")).to_be_visible()
    dusk = meta.filter(pl.col("time") == "dawn_dusk").row(0, named=True)
    page.locator(f'.gallery .tile[data-image-id="{dusk["image_id"]}"]').click()
    sync_api.expect(page.locator(".cur-qfv")).to_contain_text("Timedawn/dusk (")
    assert page.get_by_text("dawn_dusk").count() == 0
    # captions show the whole file name, the full blob name on hover
    cap = page.locator(f'.gallery .tile[data-image-id="{dusk["image_id"]}"] .cap')
    assert cap.get_attribute("title") == dusk["blob_name"]
    assert cap.evaluate("c => c.scrollHeight <= c.clientHeight + 1 && c.scrollWidth <= c.clientWidth + 1")
    # Teach is disabled without labels and looks it
    teach = page.locator(".teach-card").get_by_role("button", name="Teach", exact=True)
    sync_api.expect(teach).to_be_disabled()
    assert float(teach.evaluate("b => getComputedStyle(b).opacity")) < 0.6
    # at 1500x1000 the Save button and its message are on screen without scrolling
    page.evaluate("window.scrollTo(0, 0)")
    save = page.get_by_role("button", name="Save selection")
    sync_api.expect(save).to_be_in_viewport(ratio=1.0)
    save.click()
    result = page.locator(".save-result")
    sync_api.expect(result).to_contain_text("Not saved: give the new dataset a name")
    page.evaluate("window.scrollTo(0, 0)")
    sync_api.expect(result.locator(".cur-msg")).to_be_in_viewport(ratio=1.0)
    _shot(page, "polish-06-curate-1500x1000.png")
    page.locator(".bk-tab", has_text="Distribution").click()
    page.locator(".distribution-plot canvas").first.wait_for(state="visible")
    _shot(page, "polish-07-distribution.png")
    assert page.errors == [] and page.dialogs == []
