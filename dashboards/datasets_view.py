"""The datasets page: a card per dataset, type filter, search, open, download, delete.

Cards are kept, one per dataset id, and updated in place by the periodic refresh: a refresh never rebuilds a card,
so an open delete confirmation survives it, and only added or removed datasets add or remove cards.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import panel as pn

from curation.dataset.catalog import DatasetProcessing
from curation.dataset.registry import DatasetRecord, DatasetType, DemoDatasetProtected, Status
from curation.viewer.data import filter_records
from curation.dashboards.components import button, esc, html_pane, message
from curation.dashboards.store import DataStore

REFRESH_MS = 3000
CARD_STYLES = {"border": "1px solid #dee2e6", "border-radius": "8px", "padding": "8px", "background": "white"}
OPEN_LABELS = {Status.COMPLETED: "Open for curation", Status.PROCESSING: "Processing\u2026", Status.FAILED: "Failed"}


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "\u2014"


def progress(record: DatasetRecord) -> tuple[int, int]:
    """(done, total) images of a run, as the CLI's progress bar counts them: processed + failed of accepted."""
    counts = record.counts
    return min(counts.processed + counts.failed, counts.accepted), counts.accepted


def progress_text(record: DatasetRecord) -> str:
    """"1,234 / 10,000 images", or what the run does before it knows how many images it accepted."""
    done, total = progress(record)
    if not total:
        return f"listing images ({record.counts.found:,} found)" if record.counts.found else "starting\u2026"
    return f"{done:,} / {total:,} images"


def retry_hint(record: DatasetRecord) -> str:
    """The command that resumes a Failed run (the same name and source as the first run, plus --resume)."""
    return f"curation curate --name \u2026 --local|--container \u2026 --resume {record.id}"


def _status_html(record: DatasetRecord) -> str:
    if record.status == Status.PROCESSING:
        done, total = progress(record)
        pct = round(100 * done / total) if total else 0
        return (
            f'<div class="cur-progress" role="progressbar" aria-valuenow="{done}" aria-valuemax="{total}">'
            f'<div class="cur-progress-bar" style="width:{pct}%"></div></div>'
            f'<div class="cur-progress-text">{esc(progress_text(record))}</div>'
            '<div class="cur-hint">Delete is available once the run ends.</div>'
        )
    if record.status == Status.FAILED:
        return (
            f'<div class="cur-msg cur-error cur-reason">{esc(record.failure_reason or "no reason recorded")}</div>'
            f'<div class="cur-hint">Retry: <code class="cur-retry">{esc(retry_hint(record))}</code></div>'
        )
    return ""


def card_html(record: DatasetRecord, parent_name: str | None = None) -> str:
    """The escaped card body of one dataset; `parent_name` is the name of its original dataset, when it has one."""
    status = record.status.value
    images = record.counts.accepted or record.counts.processed
    if record.original_dataset is None:
        original = esc(None)
    else:
        shown = parent_name if parent_name is not None else "(deleted)"
        original = f'{esc(shown)}<br><span class="cur-secondary">{esc(record.original_dataset)}</span>'
    rows = [
        ("Type", esc(record.type.value)),
        ("Original dataset", original),
        ("Created", esc(_when(record.created))),
        ("Updated", esc(_when(record.updated))),
        ("Meta model", esc(record.meta_model)),
        ("Embedding model", esc(record.embedding_model)),
        ("Images", esc(f"{images:,}" + (f" ({record.counts.failed:,} failed)" if record.counts.failed else ""))),
        ("Id", esc(record.id)),
    ]
    table = "".join(f"<tr><td>{esc(k)}</td><td>{v}</td></tr>" for k, v in rows)
    return (
        f'<div class="cur-card"><h3 class="cur-name">{esc(record.name)}</h3>'
        f'<span class="cur-badge cur-{esc(status)}">{esc(status)}</span>{_status_html(record)}'
        f"<table>{table}</table></div>"
    )


def _filename(record: DatasetRecord) -> str:
    return (re.sub(r"[^A-Za-z0-9._-]+", "_", record.name).strip("_") or record.id)[:60] + "-results.json"


def _set(widget: Any, **values: Any) -> None:
    """Set only what changed, so a refresh sends nothing for an unchanged card."""
    changed = {k: v for k, v in values.items() if getattr(widget, k) != v}
    if changed:
        widget.param.update(**changed)


class DatasetCard:
    """One dataset's card; `update` changes its text and buttons in place (an open confirmation stays open)."""

    def __init__(self, view: DatasetsView, record: DatasetRecord) -> None:
        self.view = view
        self.dataset_id = record.id
        self.record = record
        self.body = html_pane("", sizing_mode="stretch_width")
        self.open_button = button("Open", button_type="primary", width=130, css_classes=["open-button"])
        self.download = pn.widgets.FileDownload(
            callback=lambda: view.store.results_file(self.dataset_id), filename=_filename(record),
            label="Download JSON", button_type="default", width=115,
        )
        self.delete_button = button("Delete", button_type="danger", button_style="outline", width=75,
                                    css_classes=["delete-button"])
        self.note = html_pane("", sizing_mode="stretch_width", css_classes=["card-note"])
        self.confirm_text = html_pane("", sizing_mode="stretch_width")
        self.yes = button("Yes, delete", button_type="danger", width=110, css_classes=["confirm-delete"])
        self.no = button("Cancel", width=80)
        self.confirm = pn.Column(self.confirm_text, pn.Row(self.yes, self.no), visible=False,
                                 sizing_mode="stretch_width", css_classes=["delete-confirm"])
        self.open_button.on_click(lambda e: view.open(self))
        self.delete_button.on_click(lambda e: view.ask_delete(self))
        self.yes.on_click(lambda e: view.delete(self))
        self.no.on_click(lambda e: self.cancel())
        self.panel = pn.Column(
            self.body, pn.Row(self.open_button, self.download, self.delete_button), self.note, self.confirm,
            width=390, styles=CARD_STYLES, css_classes=["dataset-card"], tags=[record.id],
        )

    def update(self, record: DatasetRecord, parent_name: str | None = None) -> None:
        """Show `record` (a newer version of this card's dataset)."""
        self.record = record
        _set(self.body, object=card_html(record, parent_name))
        completed, processing = record.status == Status.COMPLETED, record.status == Status.PROCESSING
        _set(self.open_button, name=OPEN_LABELS.get(record.status, record.status.value), disabled=not completed)
        _set(self.download, disabled=not completed, filename=_filename(record))
        _set(self.delete_button, disabled=processing)
        _set(self.confirm_text, object=message(
            f"Delete \u201c{record.name}\u201d and all its results? This cannot be undone.", "error"))
        if processing and self.confirm.visible:  # it started running again (a resume) while the question was open
            self.confirm.visible = False
            self.say(f"\u201c{record.name}\u201d is Processing again: it cannot be deleted until the run ends.",
                     "error")

    def say(self, text: str, kind: str = "info") -> None:
        self.note.object = message(text, kind) if text else ""

    def cancel(self) -> None:
        self.confirm.visible = False
        self.say("")


class DatasetsView:
    """Presents the store's dataset list; `on_open` is called with the id of a dataset to curate."""

    def __init__(self, store: DataStore, on_open: Callable[[str], None]) -> None:
        self.store = store
        self.on_open = on_open
        self.kind = pn.widgets.RadioButtonGroup(
            name="Type", options={"All": "all", "Demo": "demo", "User": "user"}, value="all", width=220
        )
        self.search = pn.widgets.TextInput(placeholder="Search by name", width=260)
        self.refresh_button = button("Refresh", width=90)
        self.message = html_pane("", sizing_mode="stretch_width", css_classes=["datasets-message"])
        self.empty = html_pane("", css_classes=["datasets-empty"])
        self.cards = pn.FlexBox(sizing_mode="stretch_width", gap="12px")
        self._cards: dict[str, DatasetCard] = {}
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
        """Update the cards in place; add cards for new datasets and drop those of removed ones."""
        try:
            records = records if records is not None else self.store.records()
        except Exception as exc:
            self.message.object = message(f"Cannot list datasets: {exc}", "error")
            return
        self._signature = self._sig(records)
        names = {r.id: r.name for r in records}
        for gone in set(self._cards) - set(names):
            del self._cards[gone]
        shown = filter_records(records, self.kind.value, self.search.value_input or "")
        for record in shown:
            card = self._cards.get(record.id)
            if card is None:
                card = self._cards[record.id] = DatasetCard(self, record)
            card.update(record, names.get(record.original_dataset) if record.original_dataset else None)
        objects: list[Any] = [self._cards[r.id].panel for r in shown]
        if not objects:
            text = "No datasets match." if records else f"No datasets under {self.store.catalog.root.resolve()}."
            _set(self.empty, object=message(text, "info"))
            objects = [self.empty]
        if [id(o) for o in objects] != [id(o) for o in self.cards.objects]:
            self.cards.objects = objects

    def open(self, card: DatasetCard) -> None:
        record = card.record
        if record.status != Status.COMPLETED:  # the button is disabled then; say why if a click gets through
            card.say(f"Only Completed datasets can be opened; this one is {record.status.value}.", "error")
            return
        try:
            self.on_open(card.dataset_id)
            self.message.object = ""
            card.say("")
        except Exception as exc:
            card.say(f"Cannot open it: {exc}", "error")

    def ask_delete(self, card: DatasetCard) -> None:
        record = card.record
        if record.type == DatasetType.DEMO:
            card.say(f"\u201c{record.name}\u201d is the demo dataset and cannot be deleted.", "error")
            return
        if record.status == Status.PROCESSING:
            card.say(f"\u201c{record.name}\u201d is Processing: it can be deleted once the run ends.", "error")
            return
        card.say("")
        card.confirm.visible = True

    def delete(self, card: DatasetCard) -> None:
        """Delete after confirmation; always ends with a visible message (on the card, or above the list)."""
        record = card.record
        card.confirm.visible = False
        try:
            self.store.delete(card.dataset_id)
        except DemoDatasetProtected:
            card.say(f"\u201c{record.name}\u201d is the demo dataset and cannot be deleted.", "error")
        except DatasetProcessing:
            card.say(f"\u201c{record.name}\u201d is Processing: it can be deleted once the run ends.", "error")
        except Exception as exc:
            card.say(f"Could not delete \u201c{record.name}\u201d: {exc}", "error")
        else:
            self.message.object = message(f"Deleted \u201c{record.name}\u201d.", "ok")
        self.render(force=True)
