"""The usage page: images processed and failed per key, day and model, from the service's JSON ledger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the backend the options below are for)
import panel as pn
import polars as pl

from curation.viewer.data import read_usage, usage_by_day
from curation.dashboards.components import esc, heading, html_pane, message

NO_LEDGER = "No usage ledger configured (set CURATION_USAGE_PATH to the inference service's usage JSON file)."


USAGE_CSS = """
.usage-table { max-height: 260px; overflow-y: auto; border: 1px solid #dee2e6; border-radius: 4px; }
.usage-table table { border-collapse: collapse; font-size: 13px; width: 100%; }
.usage-table th { position: sticky; top: 0; background: #f1f3f5; text-align: left; font-weight: 600; }
.usage-table th, .usage-table td { padding: 2px 8px; }
.usage-table td.n { text-align: right; font-variant-numeric: tabular-nums; }
.usage-table tr:nth-child(even) td { background: #f8f9fa; }
"""


def usage_table_html(usage: pl.DataFrame) -> str:
    """The ledger's rows as an escaped HTML table (no table widget: its JavaScript would weigh on the first page)."""
    head = "<tr><th>key</th><th>day</th><th>model</th><th>processed</th><th>failed (not charged)</th></tr>"
    rows = "".join(
        f'<tr><td>{esc(k)}</td><td>{esc(d)}</td><td>{esc(m)}</td><td class="n">{p:,}</td><td class="n">{f:,}</td></tr>'
        for k, d, m, p, f in usage.select("key_id", "day", "model", "processed", "failed").iter_rows()
    )
    return f'<div class="usage-table"><table><thead>{head}</thead><tbody>{rows}</tbody></table></div>'


class UsageView:
    def __init__(self, usage_path: Path | None) -> None:
        self.usage_path = usage_path
        self.note = html_pane("", sizing_mode="stretch_width", css_classes=["usage-note"])
        self.table = pn.pane.HTML("", stylesheets=[USAGE_CSS], sizing_mode="stretch_width", visible=False)
        self.chart = pn.pane.HoloViews(None, sizing_mode="stretch_width", backend="bokeh", visible=False)
        refresh = pn.widgets.Button(name="Reload", width=90)
        refresh.on_click(lambda e: self.render())
        self.panel = pn.Column(pn.Row(heading("Usage", 3), refresh), self.note, self.chart, self.table, sizing_mode="stretch_width")
        self.render()

    def render(self, *_: Any) -> None:
        if self.usage_path is None:
            self.note.object = message(NO_LEDGER, "info")
            return
        try:
            usage = read_usage(self.usage_path)
        except ValueError as exc:
            self.note.object = message(str(exc), "error")
            self.table.visible = self.chart.visible = False
            return
        total_p, total_f = int(usage["processed"].sum()), int(usage["failed"].sum())
        self.note.object = message(f"{total_p:,} images processed, {total_f:,} failed (not charged) \u2014 {self.usage_path}", "info")
        self.table.object = usage_table_html(usage)
        daily = usage_by_day(usage)
        data = [(d, f"{m} {k}", n) for d, m, k, n in daily.iter_rows()]
        self.chart.object = hv.Bars(data, kdims=["day", "series"], vdims=["images"]).opts(
            title="Images per day", height=300, responsive=True, color="series", cmap="Category10",
            tools=["hover"], toolbar=None, multi_level=True, show_legend=False, xlabel="",
        )
        self.table.visible = self.chart.visible = True
