"""Wires the store and the views into one template; dashboards/main.py serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import panel as pn
import polars as pl

from curation.settings import get_settings
from curation.viewer.data import link_query, parse_link
from curation.dashboards.components import html_pane, message
from curation.dashboards.datasets_view import DatasetsView
from curation.dashboards.distribution_view import DistributionView
from curation.dashboards.embedding_view import EmbeddingView
from curation.dashboards.filters_view import FiltersView, SamplingView, SaveView, summary_html
from curation.dashboards.fullsize_view import FullsizeView
from curation.dashboards.gallery_view import GalleryView, QuickFileView
from curation.dashboards.store import DataStore
from curation.dashboards.teach_view import TeachView
from curation.dashboards.usage_view import UsageView

# No Plotly here: the 3D tab loads it when first opened (EmbeddingView), so the first page stays light. No Tabulator
# either (the usage table is plain HTML).
EXTENSIONS: tuple[str, ...] = ()
HEADER_CSS = """
:host { width: 100%; }
.cur-header { background: #0b4a7a; color: white; padding: 10px 18px; font: 600 20px/1.3 system-ui, sans-serif;
              border-bottom: 3px solid #0072b5; }
"""
# System fonts only: the page makes no request off this machine (a template's web fonts would).
PAGE_CSS = ("body { margin: 0; font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; "
            "background: #f7f8fa; }")


class CurateView:
    """The curation page of the open dataset: controls left, teach + gallery / 3D / distribution centre, QFV right."""

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self.summary = html_pane(message("Open a Completed dataset from the Datasets page.", "info"), sizing_mode="stretch_width", css_classes=["summary"])
        self.filters, self.sampling, self.save = FiltersView(store), SamplingView(store), SaveView(store)
        self.gallery, self.embedding, self.distribution = GalleryView(store), EmbeddingView(store), DistributionView(store)
        self.qfv = QuickFileView(store)
        self.teach = TeachView(store)
        self.fullsize = FullsizeView(store)  # an overlay: from a tile, the quick file view or the 3D view's selection
        self.gallery.grid.on_open(self.fullsize.open)
        self.qfv.open_full.on_click(lambda e: self.fullsize.open())
        self.embedding.open_full.on_click(lambda e: self.fullsize.open())
        self.tabs = pn.Tabs(("Gallery", self.gallery.panel), ("3D embedding", self.embedding.panel),
                            ("Distribution", self.distribution.panel), sizing_mode="stretch_width", dynamic=False)
        self.tabs.param.watch(self._tab, "active")
        store.param.watch(self._summary, ["dataset_id", "selections", "fraction", "region"])
        # Save right under the sampling level, above the (tall) filters: its button and message stay above the fold
        controls = pn.Column(self.sampling.panel, self.save.panel, self.filters.panel, width=230, margin=(0, 10, 0, 0))
        self.qfv_column = pn.Column(self.qfv.panel, width=290, visible=False, styles={"border-left": "1px solid #dee2e6", "padding-left": "8px"})
        store.param.watch(lambda e: setattr(self.qfv_column, "visible", bool(e.new)), "selected_image")
        self.body = pn.Row(controls, pn.Column(self.teach.panel, self.tabs, sizing_mode="stretch_width"), self.qfv_column, sizing_mode="stretch_width", visible=False)
        self.panel = pn.Column(self.summary, self.body, self.fullsize.panel, sizing_mode="stretch_width")

    def _tab(self, event: Any) -> None:
        self.embedding.activate(event.new == 1)
        self.distribution.activate(event.new == 2)

    def _summary(self, *_: Any) -> None:
        if self.store.dataset_id is None:
            self.summary.object = message("Open a Completed dataset from the Datasets page.", "info")
            self.body.visible = False
            return
        self.body.visible = True
        try:
            self.summary.object = summary_html(self.store)
        except Exception as exc:
            self.summary.object = message(f"Cannot summarise the dataset: {exc}", "error")


def create_app(root: Path | None = None, usage_path: Path | None = None) -> pn.Column:
    """The whole dashboard for one session.

    No Panel template: every template adds HTML roots, which make Panel load MathJax (1.8 MB), and the Fast ones
    pull web fonts from the internet; a header and the tabs are all this app needs.
    """
    settings = get_settings()
    store = DataStore(root or settings.data_root)
    curate = CurateView(store)
    tabs = pn.Tabs(sizing_mode="stretch_width", dynamic=False, margin=(0, 10))

    def open_dataset(dataset_id: str) -> None:
        store.open(dataset_id)
        tabs.active = 1

    datasets = DatasetsView(store, on_open=open_dataset)
    usage = UsageView(usage_path or settings.usage_path or store.catalog.usage_file)
    tabs.extend([("Datasets", datasets.panel), ("Curate", curate.panel), ("Usage", usage.panel)])
    link_note = html_pane("", sizing_mode="stretch_width", margin=(4, 18), css_classes=["link-note"], visible=False)
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        datasets.start_refresh()
        location = pn.state.location
        if location is not None:
            problem = apply_link(store, curate, location.search or "")
            if store.dataset_id is not None:
                tabs.active = 1
            link_note.param.update(object=message(problem, "error") if problem else "", visible=bool(problem))
            store.param.watch(lambda e: setattr(link_note, "visible", False), "dataset_id")  # about the link only
            follow_url(store, curate, location)
    header = pn.pane.HTML('<div class="cur-header">Image curation</div>', stylesheets=[HEADER_CSS],
                          sizing_mode="stretch_width", margin=0)
    return pn.Column(header, link_note, tabs, sizing_mode="stretch_width", margin=0, css_classes=["curation-app"])


def apply_link(store: DataStore, curate: CurateView, search: str) -> str | None:
    """Open the view a deep link names (`viewer.data.parse_link`): dataset, filters, sampling level, the region
    drawn on the projection, the selected image and whether it is open full size. Returns one line (plain text, escaped when shown) saying what in the link
    could not be followed, or None; never raises."""
    link = parse_link(search)
    if link.dataset_id is None:
        return None
    try:
        store.open(link.dataset_id)
    except Exception as exc:  # unknown, Processing or unreadable: one line, not a traceback
        return f"The link's dataset {link.dataset_id!r} cannot be opened: {exc}"
    problems = list(link.problems)
    fraction = link.fraction if store.has_sampling else 1.0
    if fraction < link.fraction:
        problems.append("this dataset has no sampling, so the link's sample size is ignored")
    store.param.update(selections=link.selections, fraction=fraction, region=link.region)
    curate.sampling.slider.value = round(fraction * 100)
    if link.image_id:
        if store.images.filter(pl.col("image_id") == link.image_id).is_empty():
            problems.append(f"the image {link.image_id!r} is not in this dataset")
        else:
            store.selected_image = link.image_id
            if link.full:
                curate.fullsize.open()
    return f"Part of the link was not followed: {'; '.join(problems)}." if problems else None


def follow_url(store: DataStore, curate: CurateView, location: Any) -> None:
    """Keep the page's URL the deep link of what is shown (`viewer.data.link_query`), so copying it shares the view."""
    def update(*_: Any) -> None:
        query = link_query(store.dataset_id, store.selections, store.fraction, store.selected_image,
                           curate.fullsize.is_open, region=store.region)
        if (location.search or "") != query:
            location.search = query

    store.param.watch(update, ["dataset_id", "selections", "fraction", "selected_image", "region"])
    curate.fullsize.viewer.param.watch(update, "open")
    update()
