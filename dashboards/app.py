"""Wires the store and the views into one template; dashboards/main.py serves it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import panel as pn

from curation.settings import get_settings
from dashboards.components import html_pane, message
from dashboards.datasets_view import DatasetsView
from dashboards.distribution_view import DistributionView
from dashboards.embedding_view import EmbeddingView
from dashboards.filters_view import FiltersView, SamplingView, SaveView, summary_html
from dashboards.gallery_view import GalleryView, QuickFileView
from dashboards.store import DataStore
from dashboards.teach_view import TeachView
from dashboards.usage_view import UsageView

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
        self.tabs = pn.Tabs(("Gallery", self.gallery.panel), ("3D embedding", self.embedding.panel),
                            ("Distribution", self.distribution.panel), sizing_mode="stretch_width", dynamic=False)
        self.tabs.param.watch(self._tab, "active")
        store.param.watch(self._summary, ["dataset_id", "selections", "fraction"])
        # Save right under the sampling level, above the (tall) filters: its button and message stay above the fold
        controls = pn.Column(self.sampling.panel, self.save.panel, self.filters.panel, width=230, margin=(0, 10, 0, 0))
        self.qfv_column = pn.Column(self.qfv.panel, width=290, visible=False, styles={"border-left": "1px solid #dee2e6", "padding-left": "8px"})
        store.param.watch(lambda e: setattr(self.qfv_column, "visible", bool(e.new)), "selected_image")
        self.body = pn.Row(controls, pn.Column(self.teach.panel, self.tabs, sizing_mode="stretch_width"), self.qfv_column, sizing_mode="stretch_width", visible=False)
        self.panel = pn.Column(self.summary, self.body, sizing_mode="stretch_width")

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
    if pn.state.curdoc is not None and pn.state.curdoc.session_context is not None:
        datasets.start_refresh()
    header = pn.pane.HTML('<div class="cur-header">Image curation</div>', stylesheets=[HEADER_CSS],
                          sizing_mode="stretch_width", margin=0)
    return pn.Column(header, tabs, sizing_mode="stretch_width", margin=0, css_classes=["curation-app"])
