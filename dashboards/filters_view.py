"""Meta filters with live counts, the sampling slider, and saving the selection as a dataset."""

from __future__ import annotations

from typing import Any

import panel as pn

from curation.viewer.data import class_label, class_options
from curation.dashboards.components import button, esc, heading, html_pane, message
from curation.dashboards.store import DataStore


def _label(cls: str, count: int) -> str:
    return f"{class_label(cls)} ({count:,})"


class FiltersView:
    """Checkboxes per category (OR within, AND across) whose labels carry live counts."""

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self._syncing = False
        self.groups = {
            c: pn.widgets.CheckBoxGroup(name=c, options=list(v), value=list(v), inline=False, css_classes=[f"filter-{c}"])
            for c, v in class_options().items()
        }
        for group in self.groups.values():
            group.param.watch(self._changed, "value")
        reset = button("Clear filters", button_type="light", width=120)
        reset.on_click(lambda e: self._reset())
        cards = [pn.Card(g, title=c.capitalize(), collapsible=False, sizing_mode="stretch_width", margin=(4, 0)) for c, g in self.groups.items()]
        self.panel = pn.Column(heading("Filters"), *cards, reset, sizing_mode="stretch_width")
        store.param.watch(self._sync, ["dataset_id", "selections", "fraction", "region"])

    def _changed(self, _: Any) -> None:
        if self._syncing:
            return
        self.store.param.update(selections={c: list(g.value) for c, g in self.groups.items()}, page=1)

    def _reset(self) -> None:
        self.store.param.update(selections={c: list(v) for c, v in class_options().items()}, page=1)

    def _sync(self, *_: Any) -> None:
        if self.store.dataset_id is None:
            return
        counts = self.store.facet_counts()
        self._syncing = True
        try:
            for category, group in self.groups.items():
                group.options = {_label(cls, n): cls for cls, n in counts[category].items()}
                group.value = list(self.store.selections.get(category, group.value))
        finally:
            self._syncing = False


class SamplingView:
    """The sampling level in 20% steps, and the selection's summary."""

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self.slider = pn.widgets.IntSlider(name="Sample size (%)", start=20, end=100, step=20, value=100, css_classes=["sampling-slider"])
        self.note = html_pane("", sizing_mode="stretch_width")
        self.slider.param.watch(self._changed, "value_throttled")
        store.param.watch(self._sync, ["dataset_id"])
        self.panel = pn.Column(heading("Sampling"), self.slider, self.note, sizing_mode="stretch_width")

    def _changed(self, event: Any) -> None:
        self.store.param.update(fraction=event.new / 100)

    def _sync(self, *_: Any) -> None:
        if self.store.dataset_id is None:
            return
        self.slider.value = round(self.store.fraction * 100)
        self.slider.disabled = not self.store.has_sampling
        self.note.object = "" if self.store.has_sampling else message("Sampling not computed for this dataset.", "info")


class SaveView:
    """Save the current filters and sampling level as a new derived dataset."""

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self.name = pn.widgets.TextInput(name="New dataset name", placeholder="e.g. rainy nights 40%")
        self.button = button("Save selection", button_type="primary", css_classes=["save-button"])
        self.result = html_pane("", sizing_mode="stretch_width", css_classes=["save-result"])
        self.button.on_click(self._save)
        store.param.watch(lambda e: setattr(self.result, "object", ""), ["dataset_id"])
        self.panel = pn.Column(heading("Save"), self.name, self.button, self.result, sizing_mode="stretch_width")

    def _save(self, _: Any) -> None:
        self.button.disabled = True
        try:
            record = self.store.save(self.name.value or "")
            self.result.object = (
                f'<div class="cur-msg cur-ok">Saved \u201c{esc(record.name)}\u201d as dataset '
                f'<code class="new-dataset-id">{esc(record.id)}</code> ({record.counts.accepted:,} images).</div>'
            )
        except Exception as exc:  # shown as a message, never a traceback
            self.result.object = message(f"Not saved: {exc}", "error")
        finally:
            self.button.disabled = False


def summary_html(store: DataStore) -> str:
    """One line: dataset name and how many images the filters and the sample keep."""
    counts = store.counts()
    record_name = store.record().name
    pct = round(store.fraction * 100)
    sample = (
        f' \u00b7 <b class="kept-count">{counts["kept"]:,}</b> kept in the {pct}% sample'
        f' ({counts["filtered"] - counts["kept"]:,} excluded, red)' if pct < 100 else
        f' \u00b7 <b class="kept-count">{counts["kept"]:,}</b> kept (100% sample)'
    )
    return (
        f'<div class="cur-summary"><b class="dataset-title">{esc(record_name)}</b> \u2014 '
        f'<b class="filtered-count">{counts["filtered"]:,}</b> of {counts["total"]:,} images match the filters'
        f'{" and the selection" if store.region is not None else ""}{sample}</div>'
    )

