"""Issue #18 items 2 and 5 in Debian's chromium: the full-resolution viewer (from a tile, the quick file view and the
3D view; zoom, pan, ←/→ in filter order, Esc) and deep links. Screenshots go to test-artifacts/fullsize-*.

Reuses test_dashboard.py's server and browser fixtures over this module's own data root, whose datasets have a local
storage folder of originals (one of them with the originals gone).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import polars as pl
import pytest
from PIL import Image, ImageDraw

from curation.dataset.catalog import Catalog, Table
from curation.sampling.subsets import selected_ids
from tests.browser.dataset_builder import build_dataset
from tests.browser.test_dashboard import _card, _shot, browser, server, sync_api  # noqa: F401

pytestmark = pytest.mark.browser

BIG = (3200, 2400)  # the first original: past 2048 px, so the viewer downscales it
XSS_ID = "<img src=x onerror=alert(1)>"


def _originals(folder: Path, names: list[str]) -> None:
    """A 1280x720 picture per blob name (the first one 3200x2400): a gradient, a grid and the file's name."""
    for i, name in enumerate(names):
        size = BIG if i == 0 else (1280, 720)
        w, h = size
        ramp = np.linspace(0, 1, w)[None, :, None]
        base = np.array([30 + 7 * i % 200, 90, 160])[None, None, :]
        pixels = np.broadcast_to(base * (0.4 + 0.6 * ramp), (h, w, 3)).clip(0, 255).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(pixels))
        draw = ImageDraw.Draw(image)
        for x in range(0, w, w // 8):
            draw.line([(x, 0), (x, h)], fill=(255, 255, 255), width=3)
        for y in range(0, h, h // 6):
            draw.line([(0, y), (w, y)], fill=(255, 255, 255), width=3)
        draw.ellipse([w * 0.35, h * 0.3, w * 0.65, h * 0.7], fill=(240, 200, 40), outline=(0, 0, 0), width=6)
        draw.text((w * 0.05, h * 0.05), name, fill=(255, 255, 255), font_size=max(24, h // 18))
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="JPEG", quality=85)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("fullsize")
    catalog = Catalog(root)
    full = build_dataset(root, 40, "Full drives", seed=7)
    missing = build_dataset(root, 12, "Missing drives", seed=8, analytics=False)
    azure = build_dataset(root, 6, "Azure drives", seed=9, analytics=False)
    catalog.dataset(azure).update_record(storage={"kind": "azure", "account_name": "nocreds", "container_name": "c"})
    originals, gone = root / "originals", root / "moved-away"
    gone.mkdir()
    names = catalog.dataset(full).frame(Table.FILES)["blob_name"].to_list()
    _originals(originals, names)
    catalog.dataset(full).update_record(storage={"kind": "local", "path": str(originals), "prefix": None})
    catalog.dataset(missing).update_record(storage={"kind": "local", "path": str(gone), "prefix": None})
    return {"root": root, "catalog": catalog, "ids": {"full": full, "missing": missing, "azure": azure}}


@pytest.fixture
def page(browser, server: str) -> Iterator[object]:  # noqa: F811
    """A 1400x900 page on the datasets list; `pg.errors` and `pg.dialogs` record console errors and alerts."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    pg.errors, pg.dialogs = [], []
    pg.on("console", lambda m: m.type == "error" and pg.errors.append(m.text))
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.server = server
    yield pg
    context.close()


def _start(page, query: str = "") -> None:
    """Load the app (a deep link opens the Curate tab, so wait for a card to exist, not to be shown)."""
    page.goto(page.server + query)
    page.wait_for_selector(".dataset-card", state="attached")


def _open(page, name: str) -> None:
    _card(page, name).get_by_role("button", name="Open for curation").click()
    sync_api.expect(page.locator(".dataset-title")).to_have_text(name)
    sync_api.expect(page.locator(".gallery .tile").first).to_be_visible()


def _images(data_root, key: str) -> pl.DataFrame:
    """The dataset's images in the gallery's order (files, then their tags)."""
    store = data_root["catalog"].dataset(data_root["ids"][key])
    return store.frame(Table.FILES).join(store.frame(Table.METADATA), on="image_id", how="left", maintain_order="left")


def _viewer_shows(page, image_id: str, name: str) -> None:
    """Wait until the overlay is open and has drawn `image_id`."""
    sync_api.expect(page.locator(".fs-overlay")).to_be_visible()
    sync_api.expect(page.locator(".fs-name")).to_have_text(name)
    page.locator(f'.fs-stage[data-ready="{image_id}"]').wait_for(state="attached")


def _stage(page) -> dict[str, float]:
    data = page.locator(".fs-stage").evaluate("s => ({...s.dataset})")
    return {k: float(data[k]) for k in ("scale", "x", "y")}


def _query(page) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlparse(page.url).query).items()}


def test_full_size_from_the_gallery_zoom_pan_arrows_in_filter_order_and_esc(page, data_root) -> None:
    images = _images(data_root, "full")
    _start(page)
    _open(page, "Full drives")
    page.locator(".filter-time label", has_text="day (").click()  # filter order: the non-day images
    order = images.filter(pl.col("time").is_null() | (pl.col("time") != "day"))
    sync_api.expect(page.locator(".filtered-count")).to_have_text(str(order.height))
    first = order.row(1, named=True)
    page.locator(f'.gallery .tile[data-image-id="{first["image_id"]}"]').dblclick()
    _viewer_shows(page, first["image_id"], first["blob_name"])
    sync_api.expect(page.locator(".fs-position")).to_have_text(f"2 of {order.height}")
    sync_api.expect(page.locator(".fs-note")).to_contain_text("Original 1,280 \u00d7 720 px")
    assert page.locator(".fs-image").get_attribute("src").startswith("data:image/jpeg;base64,")
    assert _query(page)["image"] == first["image_id"] and _query(page)["full"] == "1"
    fit = _stage(page)
    # the image fits the window: its drawn box is inside the stage
    box, stage = page.locator(".fs-image").bounding_box(), page.locator(".fs-stage").bounding_box()
    assert box["width"] <= stage["width"] + 1 and box["height"] <= stage["height"] + 1
    assert max(box["width"] / stage["width"], box["height"] / stage["height"]) > 0.98
    _shot(page, "fullsize-01-gallery-fit.png")

    # zoom: the wheel over the stage, then the + button
    page.mouse.move(stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2)
    page.mouse.wheel(0, -300)
    page.wait_for_function("s => parseFloat(s.dataset.scale) > " + str(fit["scale"] * 1.1),
                           arg=page.locator(".fs-stage").element_handle())
    zoomed = _stage(page)
    page.locator(".fs-zoom-in").click()
    page.wait_for_function("s => parseFloat(s.dataset.scale) > " + str(zoomed["scale"] * 1.2),
                           arg=page.locator(".fs-stage").element_handle())
    # pan: drag right and down
    before = _stage(page)
    cx, cy = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 120, cy + 60, steps=6)
    page.mouse.up()
    panned = _stage(page)
    assert panned["x"] == pytest.approx(before["x"] + 120, abs=2)
    assert panned["y"] == pytest.approx(before["y"] + 60, abs=2)
    assert panned["scale"] == before["scale"]
    _shot(page, "fullsize-02-zoomed-panned.png")
    page.locator(".fs-fit").click()
    assert _stage(page)["scale"] == pytest.approx(fit["scale"], rel=1e-3)

    # ← / → walk the filtered images in the gallery's order
    page.keyboard.press("ArrowRight")
    nxt = order.row(2, named=True)
    _viewer_shows(page, nxt["image_id"], nxt["blob_name"])
    sync_api.expect(page.locator(".fs-position")).to_have_text(f"3 of {order.height}")
    sync_api.expect(page.locator(".qfv-name")).to_have_text(nxt["blob_name"])  # the selection follows
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    top = order.row(0, named=True)
    _viewer_shows(page, top["image_id"], top["blob_name"])
    page.keyboard.press("ArrowLeft")  # the first stays the first
    sync_api.expect(page.locator(".fs-position")).to_have_text(f"1 of {order.height}")
    # the first original is 3200x2400: downscaled to 2048 px before it is sent
    if top["blob_name"] == images["blob_name"][0]:
        sync_api.expect(page.locator(".fs-note")).to_contain_text("3,200 \u00d7 2,400 px")
        sync_api.expect(page.locator(".fs-note")).to_contain_text("downscaled to 2,048 px")
        assert page.locator(".fs-image").evaluate("i => Math.max(i.naturalWidth, i.naturalHeight)") == 2048
    _shot(page, "fullsize-03-arrow-keys.png")

    page.keyboard.press("Escape")
    sync_api.expect(page.locator(".fs-overlay")).to_be_hidden()
    page.wait_for_function("() => !location.search.includes('full=1')")
    assert _query(page)["image"] == top["image_id"]  # still selected in the quick file view
    assert page.errors == [] and page.dialogs == []


def test_full_size_from_the_quick_file_view_and_from_the_3d_view(page, data_root) -> None:
    images = _images(data_root, "full")
    _start(page)
    _open(page, "Full drives")
    row = images.row(5, named=True)
    page.locator(f'.gallery .tile[data-image-id="{row["image_id"]}"]').click()
    sync_api.expect(page.locator(".qfv-name")).to_have_text(row["blob_name"])
    page.get_by_role("button", name="Open full size").first.click()
    _viewer_shows(page, row["image_id"], row["blob_name"])
    _shot(page, "fullsize-04-from-quick-file-view.png")
    page.locator(".fs-close").click()
    sync_api.expect(page.locator(".fs-overlay")).to_be_hidden()

    # the 3D view: a click on a point selects its image (Plotly's click event), then "Open full size"
    page.locator(".bk-tab", has_text="3D embedding").click()
    plot = page.locator(".embedding-plot .js-plotly-plot")
    plot.wait_for(timeout=90_000)
    other = images.row(9, named=True)
    trace = plot.evaluate(
        "(gd, id) => { for (const [c, t] of gd.data.entries()) { const p = (t.customdata || []).indexOf(id);"
        " if (p >= 0) return [c, p]; } return null; }", other["image_id"])
    assert trace is not None
    plot.evaluate("(gd, cp) => gd.emit('plotly_click', {points: [{curveNumber: cp[0], pointNumber: cp[1],"
                  " customdata: gd.data[cp[0]].customdata[cp[1]]}]})", trace)
    sync_api.expect(page.locator(".qfv-name")).to_have_text(other["blob_name"])
    opener = page.locator(".embedding-open-full button")
    sync_api.expect(opener).to_be_enabled()
    opener.click()
    _viewer_shows(page, other["image_id"], other["blob_name"])
    _shot(page, "fullsize-05-from-3d-view.png")
    page.keyboard.press("Escape")
    sync_api.expect(page.locator(".fs-overlay")).to_be_hidden()
    assert page.errors == [] and page.dialogs == []


def test_missing_originals_show_the_thumbnail_and_why(page, data_root) -> None:
    row = _images(data_root, "missing").row(0, named=True)
    _start(page)
    _open(page, "Missing drives")
    tile = page.locator(f'.gallery .tile[data-image-id="{row["image_id"]}"]')
    thumb = tile.locator("img").get_attribute("src")
    tile.dblclick()
    _viewer_shows(page, row["image_id"], row["blob_name"])
    note = page.locator(".fs-note.fs-warn")
    sync_api.expect(note).to_contain_text("The original is missing from")
    sync_api.expect(note).to_contain_text("showing the thumbnail")
    assert page.locator(".fs-image").get_attribute("src") == thumb
    _shot(page, "fullsize-06-missing-original.png")
    page.keyboard.press("Escape")
    sync_api.expect(page.locator(".fs-overlay")).to_be_hidden()

    # an Azure dataset on a server without Azure credentials: the thumbnail and why, no request to Azure
    row = _images(data_root, "azure").row(0, named=True)
    page.locator(".bk-tab", has_text="Datasets").click()
    _open(page, "Azure drives")
    page.locator(f'.gallery .tile[data-image-id="{row["image_id"]}"]').dblclick()
    _viewer_shows(page, row["image_id"], row["blob_name"])
    sync_api.expect(page.locator(".fs-note.fs-warn")).to_contain_text("No Azure credentials on this server")
    assert page.locator(".fs-image").get_attribute("src").startswith("data:image/jpeg;base64,")
    _shot(page, "fullsize-06b-azure-without-credentials.png")
    assert page.errors == [] and page.dialogs == []


def test_a_deep_link_opens_that_exact_view_and_the_url_follows_changes(page, data_root) -> None:
    ids, catalog = data_root["ids"], data_root["catalog"]
    images = _images(data_root, "full")
    rows = images.filter(pl.col("time").is_in(["night"]) | pl.col("time").is_null())
    image = rows.row(3, named=True)
    _start(page, f"?dataset={ids['full']}&time=night,None&fraction=0.6&image={image['image_id']}&full=1")
    _viewer_shows(page, image["image_id"], image["blob_name"])
    kept = len(selected_ids(catalog.dataset(ids["full"]), 0.6, {"time": ["night", None]}))
    sync_api.expect(page.locator(".dataset-title")).to_have_text("Full drives")
    sync_api.expect(page.locator(".filtered-count")).to_have_text(str(rows.height))
    sync_api.expect(page.locator(".kept-count")).to_have_text(str(kept))
    sync_api.expect(page.locator(".summary")).to_contain_text("60% sample")
    _shot(page, "fullsize-07-deep-link-full.png")
    page.keyboard.press("Escape")
    sync_api.expect(page.locator(".fs-overlay")).to_be_hidden()
    checked = page.locator(".filter-time input:checked").evaluate_all("b => b.map(e => e.parentElement.textContent)")
    assert [c.split(" (")[0] for c in checked] == ["night", "None"]
    for category in ("weather", "road", "location"):
        boxes = page.locator(f".filter-{category} input")
        assert boxes.count() > 0 and page.locator(f".filter-{category} input:checked").count() == boxes.count()
    sync_api.expect(page.locator(".qfv-name")).to_have_text(image["blob_name"])
    sync_api.expect(page.locator(".sampling-slider")).to_contain_text("60")
    _shot(page, "fullsize-08-deep-link-view.png")

    # a filter change is in the URL at once: ticking "day" back adds it to time=
    page.locator(".filter-time label", has_text="day (").first.click()
    page.wait_for_function("() => new URLSearchParams(location.search).get('time') === 'day,night,None'")
    query = _query(page)
    assert query["dataset"] == ids["full"] and query["fraction"] == "0.6" and query["image"] == image["image_id"]
    assert "full" not in query
    assert page.errors == [] and page.dialogs == []


def test_a_link_to_an_unknown_dataset_or_image_says_so_in_one_line(page, data_root) -> None:
    _start(page, "?dataset=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E")
    note = page.locator(".link-note .cur-msg")
    sync_api.expect(note).to_contain_text("The link's dataset '<img src=x onerror=alert(1)>' cannot be opened")
    assert note.evaluate("n => n.getClientRects().length && n.innerText.split('\\n').length") == 1
    assert page.locator('img[src="x"]').count() == 0
    _shot(page, "fullsize-09-unknown-dataset-link.png")
    _start(page, f"?dataset={data_root['ids']['full']}&image=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&time=dusk")
    sync_api.expect(page.locator(".dataset-title")).to_have_text("Full drives")
    sync_api.expect(note).to_contain_text(f"the image '{XSS_ID}' is not in this dataset")
    sync_api.expect(note).to_contain_text("unknown time class(es) dusk")
    sync_api.expect(page.locator(".filtered-count")).to_have_text("40")  # no known class: the time filter is open
    assert page.locator('img[src="x"]').count() == 0
    _shot(page, "fullsize-10-unknown-image-link.png")
    assert page.dialogs == []
