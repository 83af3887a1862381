"""The datasets page: a card per dataset, type filter, search, open, download, delete."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import panel as pn

from curation.dataset.registry import DatasetRecord, DatasetType, DemoDatasetProtected, Status
from curation.viewer.data import filter_records
from dashboards.components import esc, html_pane, message
from dashboards.store import DataStore

REFRESH_MS = 3000
CARD_STYLES = {"border": "1px solid #dee2e6", "border-radius": "8px", "padding": "8px", "background": "white"}


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "\u2014"


def card_html(record: DatasetRecord) -> str:
    """The escaped card body of one dataset."""
    status = record.status.value
    reason = f'<div class="cur-msg cur-error">{esc(record.failure_reason)}</div>' if record.failure_reason else ""
    images = record.counts.accepted or record.counts.processed
    rows = [
        ("Type", record.type.value),
        ("Original dataset", record.original_dataset),
        ("Created", _when(record.created)),
        ("Updated", _when(record.updated)),
        ("Meta model", record.meta_model),
        ("Embedding model", record.embedding_model),
        ("Images", f"{images:,}" + (f" ({record.counts.failed:,} failed)" if record.counts.failed else "")),
        ("Id", record.id),
    ]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows)
    return (
        f'<div class="cur-card"><h3 class="cur-name">{esc(record.name)}</h3>'
        f'<span class="cur-badge cur-{esc(status)}">{esc(status)}</span>{reason}<table>{table}</table></div>'
    )


def _filename(record: DatasetRecord) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", record.name).strip("_") or record.id)[:60] + "-results.json"


class DatasetsView:
    """Presents the store's dataset list; `on_open` is called with the id of a dataset to curate."""

    def __init__(self, store: DataStore, on_open: Callable[[str], None]) -> None:
        self.store = store
        self.on_open = on_open
        self.kind = pn.widgets.RadioButtonGroup(
            name="Type", options={"All": "all", "Demo": "demo", "User": "user"}, value="all", width=220
        )
        self.search = pn.widgets.TextInput(placeholder="Search by name", width=260)
        self.refresh_button = pn.widgets.Button(name="Refresh", width=90)
        self.message = html_pane("", sizing_mode="stretch_width")
        self.cards = pn.FlexBox(sizing_mode="stretch_width", gap="12px")
        self._signature: tuple = ()
        self.kind.param.watch(lambda e: self.render(), "value")
        self.search.param.watch(lambda e: self.render(), "value_input")
        self.refresh_button.on_click(lambda e: self.render(force=True))
        self.panel = pn.Column(
            pn.Row(self.kind, self.search, self.refresh_button, sizing_mode="stretch_width"),
            self.message,
            self.cards,
            sizing_mode="stretch_width",
        )
        self.render(force=True)

    def start_refresh(self) -> None:
        """Poll the registry so Processing datasets update (and new ones appear) on their own."""
        pn.state.add_periodic_callback(self.poll, period=REFRESH_MS)

    def poll(self) -> None:
        try:
            records = self.store.records()
        except Exception as exc:  # a poll must never break the page
            self.message.object = message(f"Cannot list datasets: {exc}", "error")
            return
        if self._sig(records) != self._signature:
            self.render(records=records)

    @staticmethod
    def _sig(records: list[DatasetRecord]) -> tuple:
        return tuple((r.id, r.status.value, r.updated.isoformat(), r.name) for r in records)

    def render(self, force: bool = False, records: list[DatasetRecord] | None = None) -> None:
        try:
            records = records if records is not None else self.store.records()
        except Exception as exc:
            self.message.object = message(f"Cannot list datasets: {exc}", "error")
            return
        self._signature = self._sig(records)
        shown = filter_records(records, self.kind.value, self.search.value_input or "")
        cards = [self._card(r) for r in shown]
        if not cards:
            text = "No datasets match." if records else f"No datasets under {self.store.catalog.root.resolve()}."
            cards = [html_pane(message(text, "info"))]
        self.cards.objects = cards

    def _card(self, record: DatasetRecord) -> pn.Column:
        completed = record.status == Status.COMPLETED
        open_button = pn.widgets.Button(
            name="Open for curation" if completed else f"{record.status.value}\u2026",
            button_type="primary", disabled=not completed, width=130,
        )
        open_button.on_click(lambda e, i=record.id: self._open(i))
        download = pn.widgets.FileDownload(
            callback=lambda i=record.id: self.store.results_file(i), filename=_filename(record),
            label="Download JSON", button_type="default", disabled=not completed, width=115,
        )
        delete = pn.widgets.Button(name="Delete", button_type="danger", button_style="outline", width=75)
        confirm_text = html_pane(message(f"Delete \u201c{record.name}\u201d and all its results? This cannot be undone.", "error"))
        yes = pn.widgets.Button(name="Yes, delete", button_type="danger", width=110)
        no = pn.widgets.Button(name="Cancel", width=80)
        confirm = pn.Column(confirm_text, pn.Row(yes, no), visible=False, sizing_mode="stretch_width")
        delete.on_click(lambda e: self._ask_delete(record, confirm))
        yes.on_click(lambda e: self._delete(record))
        no.on_click(lambda e: setattr(confirm, "visible", False))
        return pn.Column(
            html_pane(card_html(record), sizing_mode="stretch_width"),
            pn.Row(open_button, download, delete),
            confirm,
            width=390, styles=CARD_STYLES, css_classes=["dataset-card"], tags=[record.id],
        )

    def _open(self, dataset_id: str) -> None:
        try:
            self.on_open(dataset_id)
            self.message.object = ""
        except Exception as exc:
            self.message.object = message(str(exc), "error")

    def _ask_delete(self, record: DatasetRecord, confirm: pn.Column) -> None:
        if record.type == DatasetType.DEMO:
            self.message.object = message(f"\u201c{record.name}\u201d is the demo dataset and cannot be deleted.", "error")
            return
        confirm.visible = True

    def _delete(self, record: DatasetRecord) -> None:
        try:
            self.store.delete(record.id)
            self.message.object = message(f"Deleted \u201c{record.name}\u201d.", "ok")
        except DemoDatasetProtected:
            self.message.object = message(f"\u201c{record.name}\u201d is the demo dataset and cannot be deleted.", "error")
        except Exception as exc:
            self.message.object = message(f"Could not delete \u201c{record.name}\u201d: {exc}", "error")
        self.render(force=True)
