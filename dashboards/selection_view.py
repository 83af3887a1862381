"""The region drawn on the 2D projection: how many images it holds, and a button that clears it."""

from __future__ import annotations

from typing import Any

import panel as pn

from curation.dashboards.components import button, html_pane
from curation.dashboards.store import DataStore

HINT = "Draw a lasso or a box on the 2D projection (3D embedding tab) to select a region of the layout."


class SelectionBar:
    """One line over the gallery and the plots: the region's count ("1,234 images in the lasso"), or a hint."""

    def __init__(self, store: DataStore, hint: bool = True) -> None:
        self.store = store
        self.hint = hint
        self.text = html_pane("", sizing_mode="stretch_width", margin=(8, 10), css_classes=["selection-count"])
        self.clear = button("Clear selection", width=130, button_type="warning", css_classes=["clear-selection"],
                            visible=False)
        self.clear.on_click(lambda e: setattr(store, "region", None))
        store.param.watch(self._render, ["dataset_id", "selections", "fraction", "region"])
        self.panel = pn.Row(self.text, self.clear, sizing_mode="stretch_width")
        self._render()

    def _render(self, *_: Any) -> None:
        region = self.store.region
        self.clear.visible = region is not None
        if self.store.dataset_id is None or region is None:
            self.text.object = f'<span class="cur-hint">{HINT}</span>' if self.hint else ""
            return
        counts = self.store.counts()
        shape = "box" if region.kind == "box" else "lasso"
        self.text.object = (
            f'<span class="cur-summary">Selection: <b class="region-count">{counts["filtered"]:,}</b> '
            f'image{"s" if counts["filtered"] != 1 else ""} in the {shape} '
            f'(of {counts["matching"]:,} matching the filters); the gallery, distribution and Save use only these</span>'
        )
