"""The paginated thumbnail gallery and the quick file view (QFV) of one image."""

from __future__ import annotations

from typing import Any

import panel as pn

from curation.viewer.data import class_label, format_bytes
from curation.dashboards.components import ThumbnailGrid, button, esc, heading, html_pane, message
from curation.dashboards.selection_view import SelectionBar
from curation.dashboards.store import DataStore


class GalleryView:
    """One page of thumbnails (48) of the filtered images; excluded-by-sampling ones are marked red."""

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self.grid = ThumbnailGrid(sizing_mode="stretch_width", css_classes=["gallery"], openable=True)
        self.grid.on_click(lambda image_id: setattr(store, "selected_image", image_id))
        self.first = button("\u00ab First", width=80)
        self.prev = button("\u2039 Prev", width=80)
        self.next = button("Next \u203a", width=80, css_classes=["next-page"])
        self.last = button("Last \u00bb", width=80)
        self.label = html_pane("", css_classes=["page-label"], margin=(12, 10))
        self.first.on_click(lambda e: self._go(1))
        self.prev.on_click(lambda e: self._go(store.page - 1))
        self.next.on_click(lambda e: self._go(store.page + 1))
        self.last.on_click(lambda e: self._go(store.page_info()[3]))
        store.param.watch(self._render, ["dataset_id", "selections", "fraction", "page", "region"])
        store.param.watch(lambda e: setattr(self.grid, "selected", e.new or ""), "selected_image")
        self.selection = SelectionBar(store, hint=False)  # only while a region is drawn: its count and Clear
        self.panel = pn.Column(
            self.selection.panel,
            pn.Row(self.first, self.prev, self.label, self.next, self.last,
                   html_pane('<span class="cur-hint">Double-click (or \u2922): full size</span>',
                             margin=(14, 10))),
            self.grid,
            sizing_mode="stretch_width",
        )

    def _go(self, page: int) -> None:
        self.store.page = max(1, min(page, self.store.page_info()[3]))

    def _render(self, *_: Any) -> None:
        if self.store.dataset_id is None:
            return
        page, start, stop, pages = self.store.page_info()
        total = self.store.filtered.height
        self.grid.items = self.store.page_items()
        shown = f"{start + 1:,}\u2013{stop:,} of {total:,}" if total else "0 images"
        self.label.object = f'<span class="cur-summary">Page {page:,} of {pages:,} \u00b7 {shown}</span>'
        self.first.disabled = self.prev.disabled = page <= 1
        self.next.disabled = self.last.disabled = page >= pages


def details_html(d: dict[str, Any]) -> str:
    """The escaped facts of one image for the QFV."""
    rows = [
        ("Size", format_bytes(d["size"])),
        ("Dimensions", f'{d["width"]} \u00d7 {d["height"]}' if d["width"] else None),
        ("Format", d["format"]),
        ("Sample", "kept" if d["kept"] else "excluded at this sampling level"),
    ]
    if d["error"]:
        rows.append(("Error", d["error"]))
    for category, (label, confidence) in d["tags"].items():
        shown = class_label(label) + (f" ({confidence:.2f})" if confidence is not None else "")
        rows.append((category.capitalize(), shown))
    if d["analytics"]:
        score = d["anomaly_score"]
        rows.append(("Anomaly score", f"{score:.3f}" if score is not None else "none (no embedding)"))
        flags = d["quality_flags"]
        rows.append(("Quality flags", ", ".join(flags) if flags else ("none" if flags is not None else "not computed")))
    else:
        rows += [("Anomaly score", "not computed"), ("Quality flags", "not computed")]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    preview = f'<img src="{d["src"]}" alt="{esc(d["name"])}">' if d["src"] else message("No thumbnail for this image.", "info")
    return f'<div class="cur-qfv"><h3 class="qfv-name">{esc(d["name"])}</h3>{preview}<table>{table}</table></div>'


class QuickFileView:
    """The selected image: facts, tags with confidence, analytics, similar images (clickable), preview."""

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self.body = html_pane(message("Click a thumbnail or a point to see the image here.", "info"), sizing_mode="stretch_width", css_classes=["qfv"])
        self.similar_title = html_pane("", sizing_mode="stretch_width")
        self.similar = ThumbnailGrid(tile=70, sizing_mode="stretch_width", empty_text="", css_classes=["similar"])
        self.similar.on_click(lambda image_id: setattr(store, "selected_image", image_id))
        close = pn.widgets.Button(name="Close", width=70, button_type="light")
        close.on_click(lambda e: setattr(store, "selected_image", None))
        # Wired by the page to the full-size viewer (dashboards.fullsize_view)
        self.open_full = button("Open full size", width=120, button_type="primary", css_classes=["qfv-open-full"])
        store.param.watch(self._render, ["selected_image", "fraction", "dataset_id"])
        self.panel = pn.Column(
            pn.Row(heading("Image"), pn.layout.HSpacer(), self.open_full, close),
            self.body, self.similar_title, self.similar,
            sizing_mode="stretch_width", scroll=True,
        )

    def _render(self, *_: Any) -> None:
        image_id = self.store.selected_image
        if not image_id or self.store.dataset_id is None:
            self.body.object = message("Click a thumbnail or a point to see the image here.", "info")
            self.similar_title.object, self.similar.items = "", []
            return
        try:
            d = self.store.details(image_id)
        except Exception as exc:
            self.body.object = message(f"Cannot show this image: {exc}", "error")
            return
        if d is None:
            self.body.object = message("This image is not in the dataset.", "error")
            self.similar_title.object, self.similar.items = "", []
            return
        self.body.object = details_html(d)
        if not d["analytics"]:
            self.similar_title.object = "<b>Similar images</b>: not computed"
        elif not d["similar_items"]:
            self.similar_title.object = "<b>Similar images</b>: none"
        else:
            self.similar_title.object = "<b>Similar images</b> (cosine distance)"
        self.similar.items = d["similar_items"]
