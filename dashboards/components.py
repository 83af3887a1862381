"""Small presentational pieces: a clickable thumbnail grid and escaped HTML snippets."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

import panel as pn
import param
from panel.custom import JSComponent

GRID_CSS = """
:host { display: block; width: 100%; }
.grid { display: grid; gap: 8px; width: 100%; }
.tile { position: relative; padding: 0; border: 2px solid transparent; border-radius: 6px; background: #f1f3f5;
        cursor: pointer; overflow: hidden; display: flex; flex-direction: column; text-align: left; }
.tile:hover { border-color: #0072b5; }
.tile.selected { border-color: #0072b5; box-shadow: 0 0 0 2px #0072b555; }
.tile img, .tile .none { width: 100%; aspect-ratio: 4 / 3; object-fit: cover; display: block; }
.tile .none { display: flex; align-items: center; justify-content: center; color: #868e96; font: 11px sans-serif; }
.tile .cap { font: 11px/1.35 sans-serif; color: #343a40; padding: 2px 4px; overflow: hidden; word-break: break-all;
             display: -webkit-box; -webkit-line-clamp: 2; -webkit-box-orient: vertical; min-height: 2.7em; }
.tile.excluded { border-color: #d62728; }
.tile.excluded img { opacity: 0.45; }
.tile .badge { position: absolute; top: 4px; left: 4px; background: #d62728; color: white; font: 10px sans-serif;
               padding: 1px 5px; border-radius: 3px; }
.empty { font: 14px sans-serif; color: #495057; padding: 24px; }
.tile .open-full { position: absolute; top: 3px; right: 3px; width: 22px; height: 22px; border-radius: 4px;
                   background: rgba(0, 0, 0, 0.55); color: white; font: 15px/22px sans-serif; text-align: center;
                   opacity: 0; transition: opacity 0.15s; }
.tile:hover .open-full, .tile.selected .open-full { opacity: 1; }
.tile .open-full:hover { background: #0072b5; }
"""


class ThumbnailGrid(JSComponent):
    """A grid of thumbnails; clicking one calls the registered callbacks with its image id.

    Names go through textContent/attributes only, never innerHTML, so file names cannot inject markup.
    """

    items = param.List(default=[], doc="Dicts: id, name, label, src (data URI or None), kept.")
    selected = param.String(default="", doc="Image id drawn highlighted.")
    tile = param.Integer(default=130, doc="Minimum tile width in pixels.")
    empty_text = param.String(default="No images match the filters.")
    openable = param.Boolean(default=False, doc="Tiles open full size on a double-click or their \u2922 corner.")

    _esm = """
    export function render({ model, el }) {
      const grid = document.createElement('div');
      grid.className = 'grid';
      function draw() {
        grid.replaceChildren();
        grid.style.gridTemplateColumns = `repeat(auto-fill, minmax(${model.tile}px, 1fr))`;
        if (!model.items.length) {
          const empty = document.createElement('div');
          empty.className = 'empty';
          empty.textContent = model.empty_text;
          grid.append(empty);
        }
        for (const item of model.items) {
          const tile = document.createElement('button');
          tile.type = 'button';
          tile.className = 'tile' + (item.kept ? '' : ' excluded') + (item.id === model.selected ? ' selected' : '');
          tile.title = item.name;
          tile.dataset.imageId = item.id;
          if (item.src) {
            const img = document.createElement('img');
            img.src = item.src;
            img.alt = item.name;
            tile.append(img);
          } else {
            const none = document.createElement('div');
            none.className = 'none';
            none.textContent = 'no thumbnail';
            tile.append(none);
          }
          if (!item.kept) {
            const badge = document.createElement('span');
            badge.className = 'badge';
            badge.textContent = 'excluded';
            tile.append(badge);
          }
          const cap = document.createElement('span');
          cap.className = 'cap';
          cap.textContent = item.label || item.name;
          cap.title = item.name;
          tile.append(cap);
          tile.addEventListener('click', () => model.send_msg({ id: item.id }));
          if (model.openable) {
            const open = document.createElement('span');
            open.className = 'open-full';
            open.textContent = '\u2922';
            open.title = 'Open full size (or double-click the thumbnail)';
            open.addEventListener('click', (e) => {
              e.stopPropagation();
              model.send_msg({ id: item.id, open: true });
            });
            tile.append(open);
            tile.addEventListener('dblclick', () => model.send_msg({ id: item.id, open: true }));
          }
          grid.append(tile);
        }
      }
      draw();
      model.on('items', draw);
      model.on('selected', draw);
      model.on('tile', draw);
      model.on('openable', draw);
      return grid;
    }
    """
    _stylesheets = [GRID_CSS]

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._click_callbacks: list[Callable[[str], None]] = []
        self._open_callbacks: list[Callable[[str], None]] = []

    def on_click(self, callback: Callable[[str], None]) -> None:
        self._click_callbacks.append(callback)

    def on_open(self, callback: Callable[[str], None]) -> None:
        """Called with the image id of a tile opened full size (`openable` grids only)."""
        self._open_callbacks.append(callback)

    def _handle_msg(self, msg: Any) -> None:
        image_id = msg.get("id") if isinstance(msg, dict) else None
        if isinstance(image_id, str):
            for callback in self._open_callbacks if msg.get("open") else self._click_callbacks:
                callback(image_id)


HEADING_CSS = """
.cur-heading { margin: 8px 0 6px; font-weight: 600; line-height: 1.2; }
h3.cur-heading { font-size: 1.3em; }
h4.cur-heading { font-size: 1.05em; }
"""

APP_CSS = """
.cur-msg { padding: 8px 12px; border-radius: 6px; font-size: 14px; margin: 4px 0; }
.cur-info { background: #e7f1fb; color: #0b4a7a; border: 1px solid #b6d4f0; }
.cur-ok { background: #e6f4ea; color: #1e5631; border: 1px solid #b7dfc2; }
.cur-error { background: #fdecea; color: #8a1c1c; border: 1px solid #f5c2c0; }
.cur-badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; }
.cur-Completed { background: #e6f4ea; color: #1e5631; }
.cur-Processing { background: #fff4e5; color: #8a5300; }
.cur-Failed { background: #fdecea; color: #8a1c1c; }
.cur-card h3 { margin: 0 0 6px 0; font-size: 17px; word-break: break-word; }
.cur-card table, .cur-qfv table { border-collapse: collapse; font-size: 13px; width: 100%; }
.cur-card td, .cur-qfv td { padding: 2px 6px 2px 0; vertical-align: top; }
.cur-card td:first-child, .cur-qfv td:first-child { color: #6c757d; white-space: nowrap; }
.cur-qfv h3 { margin: 4px 0; font-size: 15px; word-break: break-all; }
.cur-qfv img { width: 100%; border-radius: 6px; }
.cur-secondary { color: #868e96; font-size: 11px; font-family: monospace; }
.cur-hint { font-size: 12px; color: #6c757d; margin: 2px 0 4px 0; }
.cur-hint code { font-size: 11px; background: #f1f3f5; padding: 1px 4px; border-radius: 3px; word-break: break-all; }
.cur-progress { height: 8px; background: #f1f3f5; border-radius: 4px; overflow: hidden; margin: 6px 0 2px 0; }
.cur-progress-bar { height: 100%; background: #e8a33d; transition: width 0.4s; }
.cur-progress-text { font-size: 13px; color: #8a5300; font-weight: 600; }
.cur-summary { font-size: 14px; color: #343a40; }
.cur-summary b { font-size: 15px; }
"""


# Bokeh's disabled buttons differ from enabled ones by a shade only: make them plainly unavailable.
BUTTON_CSS = """
.bk-btn:disabled, .bk-btn[disabled] { opacity: 0.45; cursor: not-allowed; filter: grayscale(0.8); box-shadow: none; }
"""


def button(name: str, **kwargs: Any) -> pn.widgets.Button:
    """A Button whose disabled state is visible (BUTTON_CSS)."""
    return pn.widgets.Button(name=name, stylesheets=[BUTTON_CSS], **kwargs)


class ScriptLoader(JSComponent):
    """Loads a JavaScript bundle into the page when first rendered, then sets `loaded` (or `error`).

    The 3D view needs Plotly (4.7 MB) only when its tab opens, so the bundle is not among the first page's resources;
    `src` is relative to Panel's own static folder, found from panel.min.js's script tag (any URL prefix works).
    """

    src = param.String(doc="Path under Panel's static extension folder, e.g. bundled/plotlyplot/plotly.min.js.")
    global_name = param.String(doc="The global the bundle defines (already there: nothing is loaded).")
    loaded = param.Boolean(default=False)
    error = param.String(default="")

    _esm = """
    export function render({ model, el }) {
      const note = document.createElement('div');
      note.className = 'script-loading';
      note.textContent = 'Loading the 3D viewer\u2026';
      if (window[model.global_name]) { model.loaded = true; return note; }
      const panel = document.querySelector('script[src*="extensions/panel/panel"]');
      const src = new URL(model.src, panel ? panel.src : new URL('static/extensions/panel/', document.baseURI)).href;
      let tag = document.querySelector(`script[data-lazy-src="${CSS.escape(src)}"]`);
      if (!tag) {
        tag = document.createElement('script');
        tag.src = src;
        tag.dataset.lazySrc = src;
        document.head.append(tag);
      }
      tag.addEventListener('load', () => { model.loaded = true; });
      tag.addEventListener('error', () => { model.error = `could not load ${src}`; });
      return note;
    }
    """


def esc(value: object) -> str:
    """Any value as escaped text; None as an em dash."""
    return "\u2014" if value is None else html.escape(str(value))


def message(text: str, kind: str = "info") -> str:
    """An escaped message box: kind is info, ok or error."""
    return f'<div class="cur-msg cur-{kind}" data-kind="{kind}">{esc(text)}</div>'


def html_pane(text: str = "", **kwargs: Any) -> pn.pane.HTML:
    return pn.pane.HTML(text, stylesheets=[APP_CSS], **kwargs)


def heading(text: str, level: int = 4, **kwargs: Any) -> pn.pane.HTML:
    """A section title. HTML, not a Markdown pane: Markdown would add Panel's markdown.css (9 KB) to the first page."""
    return pn.pane.HTML(f'<h{level} class="cur-heading">{html.escape(text)}</h{level}>', stylesheets=[HEADING_CSS],
                        margin=(0, 5), **kwargs)


class LazyView:
    """A view that renders only while its tab is shown, and again on show if the data changed meanwhile.

    Subclasses implement `_render` and call `_invalidate` from their store watchers.
    """

    _active = False
    _stale = True

    def activate(self, active: bool) -> None:
        """Called when the view's tab is shown (True) or hidden (False)."""
        self._active = active
        if active and self._stale:
            self._render()  # type: ignore[attr-defined]

    def _invalidate(self, *_: Any) -> None:
        self._stale = True
        if self._active:
            self._render()  # type: ignore[attr-defined]
