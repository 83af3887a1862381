"""Entry point of `panel serve dashboards/` (a Bokeh directory app)."""

from __future__ import annotations

import panel as pn

# The folder is installed as curation.dashboards (docs/architecture.md, Packaging): a checkout is served once it is
# installed (`pip install -e .`, as `make` does).
from curation.dashboards.app import EXTENSIONS, PAGE_CSS, create_app

if pn.state.served:
    pn.extension(*EXTENSIONS, sizing_mode="stretch_width", raw_css=[PAGE_CSS])
    create_app().servable(title="Image curation")
