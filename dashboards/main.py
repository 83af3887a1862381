"""Entry point of `panel serve dashboards/` (a Bokeh directory app)."""

from __future__ import annotations

import sys
from pathlib import Path

import panel as pn

try:
    import dashboards.app  # noqa: F401
except ImportError:  # served from a checkout that is not installed: import from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dashboards.app import EXTENSIONS, PAGE_CSS, create_app

if pn.state.served:
    pn.extension(*EXTENSIONS, sizing_mode="stretch_width", raw_css=[PAGE_CSS])
    create_app().servable(title="Image curation")
