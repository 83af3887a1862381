"""Teach by example: label the open image or the gallery page, then fit the probes (curation.analysis.teach) and re-tag."""

from __future__ import annotations

from typing import Any

import panel as pn

from curation.taxonomy import DEFAULT_TAXONOMY
from curation.viewer.data import class_label, label_counts, teach_summary_lines
from curation.dashboards.components import APP_CSS, button, esc, html_pane, message
from curation.dashboards.store import DataStore

HINT = ("Pick a category and a class, then label the image open on the right or every image of this gallery page. "
        "Teach needs 2+ labelled images for each of 2+ classes of a category.")


def _word(cls: str) -> str:
    return class_label(cls)


def pending_html(pending: list[dict[str, str]], limit: int = 200) -> str:
    """The pending labels as an escaped table (file, category, class), newest first, with counts per class."""
    if not pending:
        return f'<div class="teach-hint">No labels yet. {esc(HINT)}</div>'
    counts = " \u00b7 ".join(
        f"{esc(c)}: " + ", ".join(f"{esc(_word(k))} {n}" for k, n in classes.items())
        for c, classes in label_counts(pending).items()
    )
    rows = "".join(
        f'<tr><td title="{esc(p["file"])}">{esc(p["file"].rsplit("/", 1)[-1])}</td><td>{esc(p["category"])}</td>'
        f'<td>{esc(_word(p["class"]))}</td></tr>'
        for p in reversed(pending[-limit:])
    )
    more = f'<div class="teach-more">\u2026 and {len(pending) - limit:,} more</div>' if len(pending) > limit else ""
    return (
        f'<div class="teach-counts"><b>{len(pending):,}</b> label(s) \u2014 {counts}</div>'
        f'<div class="teach-table"><table><thead><tr><th>file</th><th>category</th><th>class</th></tr></thead>'
        f"<tbody>{rows}</tbody></table>{more}</div>"
    )


def summary_html(summary: dict[str, Any]) -> str:
    """The escaped success message of a teach run; the new meta model in a code element."""
    first, *rest = teach_summary_lines(summary)
    head = first.replace(summary["meta_model"], "\0", 1)
    before, _, after = head.partition("\0")
    lines = [f'{esc(before)}<code class="teach-meta-model">{esc(summary["meta_model"])}</code>{esc(after)}']
    lines += [esc(line) for line in rest]
    return f'<div class="cur-msg cur-ok" data-kind="ok">{"<br>".join(lines)}</div>'


TEACH_CSS = """
.teach-hint { font-size: 12px; color: #6c757d; margin: 0 0 2px 0; }
.teach-title { font-size: 15px; font-weight: 600; color: #212529; }
.teach-sub { font-size: 12px; color: #6c757d; margin-left: 6px; }
.teach-counts { font-size: 13px; color: #343a40; margin: 2px 0 4px 0; }
.teach-table { max-height: 132px; overflow-y: auto; border: 1px solid #dee2e6; border-radius: 4px; }
.teach-table table { border-collapse: collapse; font-size: 12px; width: 100%; }
.teach-table th { position: sticky; top: 0; background: #f1f3f5; text-align: left; font-weight: 600; }
.teach-table th, .teach-table td { padding: 1px 6px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis;
                                   max-width: 220px; }
.teach-table tr:nth-child(even) td { background: #f8f9fa; }
.teach-more { font-size: 12px; color: #6c757d; padding: 2px 6px; }
"""


class TeachView:
    """Pick category and class, label the selected image or the page, see the pending labels, Clear, Teach."""

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self._teaching = False
        classes = DEFAULT_TAXONOMY.classes
        first = DEFAULT_TAXONOMY.categories[0]
        self.category = pn.widgets.Select(name="Category", options=list(classes), value=first, width=100,
                                          css_classes=["teach-category"])
        self.cls = pn.widgets.Select(name="Class", options={_word(c): c for c in classes[first]}, width=110,
                                     css_classes=["teach-class"])
        top = (26, 4, 4, 4)
        self.label_image = button("Label this image", width=125, disabled=True, margin=top,
                                             css_classes=["teach-label-image"])
        self.label_page = button("Label this page", width=125, margin=top,
                                            css_classes=["teach-label-page"])
        self.teach = button("Teach", width=80, button_type="primary", disabled=True, margin=top,
                                       css_classes=["teach-button"])
        self.clear = button("Clear", width=65, disabled=True, margin=top,
                                       css_classes=["teach-clear"])
        self.pending = pn.pane.HTML(pending_html([]), stylesheets=[APP_CSS, TEACH_CSS], sizing_mode="stretch_width",
                                    margin=(0, 5), css_classes=["teach-pending"])
        self.result = html_pane("", sizing_mode="stretch_width", css_classes=["teach-result"])
        self.category.param.watch(self._category, "value")
        self.label_image.on_click(lambda e: self._label("image"))
        self.label_page.on_click(lambda e: self._label("page"))
        self.clear.on_click(lambda e: self._clear())
        self.teach.on_click(self._teach)
        store.param.watch(self._pending, "pending_labels")
        store.param.watch(lambda e: setattr(self.label_image, "disabled", not e.new), "selected_image")
        store.param.watch(self._opened, "dataset_id")
        header = pn.pane.HTML(
            '<span class="teach-title">Teach by example</span>'
            '<span class="teach-sub">label a few images, then re-tag the whole dataset from them</span>',
            stylesheets=[TEACH_CSS], margin=(2, 5),
        )
        self.panel = pn.Card(
            pn.Row(self.category, self.cls, self.label_image, self.label_page, self.teach, self.clear,
                   sizing_mode="stretch_width"),
            self.pending,
            self.result,
            header=header, collapsible=True, sizing_mode="stretch_width", margin=(0, 0, 8, 0),
            css_classes=["teach-card"],
        )

    def _category(self, event: Any) -> None:
        self.cls.options = {_word(c): c for c in DEFAULT_TAXONOMY.classes[event.new]}

    def _opened(self, *_: Any) -> None:
        if not self._teaching:  # the reload after teaching keeps the teach result
            self.result.object = ""

    def _pending(self, *_: Any) -> None:
        pending = self.store.pending_labels
        self.pending.object = pending_html(pending)
        self.clear.disabled = self.teach.disabled = not pending

    def _label(self, scope: str) -> None:
        try:
            n = self.store.label(scope, self.category.value, self.cls.value)
            self.result.object = message(
                f"Labelled {n:,} image(s) {self.category.value} = {_word(self.cls.value)}.", "info"
            )
        except Exception as exc:  # shown as a message, never a traceback
            self.result.object = message(f"Not labelled: {exc}", "error")

    def _clear(self) -> None:
        self.store.clear_labels()
        self.result.object = ""

    def _teach(self, _: Any) -> None:
        self.teach.disabled = self.clear.disabled = True
        self._teaching = True
        try:
            summary = self.store.teach()
            self.result.object = summary_html(summary)
        except Exception as exc:  # ValueError for too few labels, anything else too: a message, never a traceback
            self.result.object = message(f"Not taught: {exc}", "error")
        finally:
            self._teaching = False
            self.clear.disabled = self.teach.disabled = not self.store.pending_labels
