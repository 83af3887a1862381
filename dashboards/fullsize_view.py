"""The full-resolution viewer: the original image over the page, fit to the window, with zoom, pan and ←/→/Esc."""

from __future__ import annotations

import importlib
from typing import Any

import param
import polars as pl
from panel.custom import JSComponent

from curation.dashboards.store import DataStore
from curation.settings import get_settings
from curation.viewer.data import original_image, thumbnail_data_uri

VIEWER_CSS = """
:host { display: block; width: 0; height: 0; }
.fs-overlay { position: fixed; inset: 0; z-index: 10000; background: #0c1016; display: none;
              flex-direction: column; font: 13px system-ui, sans-serif; color: #e9ecef; outline: none; }
.fs-bar { display: flex; align-items: center; gap: 6px; padding: 8px 12px; background: rgba(0, 0, 0, 0.45); }
.fs-name { font-weight: 600; font-size: 14px; word-break: break-all; flex: 1 1 auto; min-width: 0; }
.fs-position, .fs-zoom { color: #adb5bd; white-space: nowrap; }
.fs-zoom { min-width: 44px; text-align: right; }
.fs-bar button { background: #343a40; color: #f8f9fa; border: 1px solid #495057; border-radius: 4px;
                 min-width: 32px; height: 30px; font-size: 15px; cursor: pointer; padding: 0 8px; }
.fs-bar button:hover { background: #495057; }
.fs-note { padding: 4px 12px; color: #ced4da; font-size: 12px; min-height: 16px; }
.fs-note.fs-warn { color: #ffd8a8; }
.fs-stage { position: relative; flex: 1 1 auto; overflow: hidden; cursor: grab; touch-action: none; }
.fs-stage.fs-dragging { cursor: grabbing; }
.fs-image { position: absolute; left: 0; top: 0; transform-origin: 0 0; user-select: none; max-width: none;
            image-rendering: auto; }
.fs-help { position: absolute; right: 12px; bottom: 8px; color: #868e96; font-size: 11px; pointer-events: none; }
"""


class FullsizeViewer(JSComponent):
    """The overlay. `src` is the original (a data: URI or a signed URL); when it is empty or the browser cannot load
    it, `fallback` (the thumbnail) is shown and `note` says why. Names go through textContent only.

    The browser sends {"action": "nav", "step": ±1} for ←/→ and the arrow buttons; Esc and × set `open` False.
    The stage carries data-scale, data-x, data-y (the view's transform) and data-ready (the image id once drawn).
    """

    open = param.Boolean(default=False)
    src = param.String(default="")
    fallback = param.String(default="")
    image_id = param.String(default="")
    image_name = param.String(default="")
    position = param.String(default="", doc="e.g. '3 of 60' in the gallery's filter order.")
    note = param.String(default="")
    warn = param.Boolean(default=False, doc="The note is a reason the original is not shown.")

    _esm = """
    export function render({ model, el }) {
      const make = (tag, cls, text) => {
        const e = document.createElement(tag);
        if (cls) e.className = cls;
        if (text !== undefined) e.textContent = text;
        return e;
      };
      const overlay = make('div', 'fs-overlay');
      overlay.tabIndex = -1;
      overlay.setAttribute('role', 'dialog');
      overlay.setAttribute('aria-label', 'Full-size image');
      const bar = make('div', 'fs-bar');
      const name = make('span', 'fs-name');
      const position = make('span', 'fs-position');
      const zoomText = make('span', 'fs-zoom');
      const button = (cls, text, title, action) => {
        const b = make('button', cls, text);
        b.type = 'button';
        b.title = title;
        b.addEventListener('click', (e) => { e.stopPropagation(); action(); });
        return b;
      };
      const stage = make('div', 'fs-stage');
      const img = make('img', 'fs-image');
      img.draggable = false;
      img.alt = '';
      const note = make('div', 'fs-note');
      const help = 'wheel or +/\u2212: zoom \u00b7 drag: pan \u00b7 \u2190/\u2192: previous/next \u00b7 Esc: close';
      stage.append(img, make('div', 'fs-help', help));
      let s = 1, x = 0, y = 0, fit = 1;
      const apply = () => {
        img.style.transform = `translate(${x}px, ${y}px) scale(${s})`;
        stage.dataset.scale = s.toFixed(4);
        stage.dataset.x = x.toFixed(1);
        stage.dataset.y = y.toFixed(1);
        zoomText.textContent = `${Math.round(s * 100)}%`;
      };
      const fitView = () => {
        const r = stage.getBoundingClientRect();
        const w = img.naturalWidth || 1, h = img.naturalHeight || 1;
        const stand_in = img.getAttribute('src') === model.fallback && !model.src;  // a thumbnail: at most 3x
        fit = Math.min(r.width / w, r.height / h, stand_in ? 3 : Infinity) || 1;
        s = fit;
        x = (r.width - w * s) / 2;
        y = (r.height - h * s) / 2;
        apply();
      };
      const zoomAt = (factor, px, py) => {
        const next = Math.min(Math.max(s * factor, fit / 4), Math.max(fit, 1) * 16);
        const k = next / s;
        x = px - (px - x) * k;
        y = py - (py - y) * k;
        s = next;
        apply();
      };
      const zoomCentre = (factor) => {
        const r = stage.getBoundingClientRect();
        zoomAt(factor, r.width / 2, r.height / 2);
      };
      const nav = (step) => model.send_msg({ action: 'nav', step });
      const close = () => { overlay.style.display = 'none'; model.open = false; };
      bar.append(
        name, position,
        button('fs-prev', '\u2039', 'Previous image (\u2190)', () => nav(-1)),
        button('fs-next', '\u203a', 'Next image (\u2192)', () => nav(1)),
        button('fs-zoom-out', '\u2212', 'Zoom out', () => zoomCentre(1 / 1.25)),
        zoomText,
        button('fs-zoom-in', '+', 'Zoom in', () => zoomCentre(1.25)),
        button('fs-fit', 'Fit', 'Fit to the window', fitView),
        button('fs-close', '\u00d7', 'Close (Esc)', close),
      );
      overlay.append(bar, note, stage);

      stage.addEventListener('wheel', (e) => {
        e.preventDefault();
        const r = stage.getBoundingClientRect();
        zoomAt(e.deltaY < 0 ? 1.2 : 1 / 1.2, e.clientX - r.left, e.clientY - r.top);
      }, { passive: false });
      let drag = null;
      stage.addEventListener('pointerdown', (e) => {
        if (e.button !== 0) return;
        drag = { px: e.clientX, py: e.clientY, x, y };
        stage.setPointerCapture(e.pointerId);
        stage.classList.add('fs-dragging');
      });
      stage.addEventListener('pointermove', (e) => {
        if (!drag) return;
        x = drag.x + e.clientX - drag.px;
        y = drag.y + e.clientY - drag.py;
        apply();
      });
      const endDrag = () => { drag = null; stage.classList.remove('fs-dragging'); };
      stage.addEventListener('pointerup', endDrag);
      stage.addEventListener('pointercancel', endDrag);
      stage.addEventListener('dblclick', fitView);

      const showNote = (text, warn) => {
        note.textContent = text;
        note.classList.toggle('fs-warn', warn);
      };
      img.addEventListener('load', () => { fitView(); stage.dataset.ready = model.image_id; });
      img.addEventListener('error', () => {
        if (model.fallback && img.getAttribute('src') !== model.fallback) {
          showNote('The browser could not load the original; showing the thumbnail.', true);
          img.src = model.fallback;
        } else {
          stage.dataset.ready = model.image_id;
        }
      });
      const draw = () => {
        overlay.style.display = model.open ? 'flex' : 'none';
        name.textContent = model.image_name;
        name.title = model.image_name;
        position.textContent = model.position;
        showNote(model.note, model.warn);
        const want = model.src || model.fallback;
        if (img.dataset.want !== want) {
          img.dataset.want = want;
          delete stage.dataset.ready;
          if (want) img.src = want; else img.removeAttribute('src');
        }
        if (model.open && !overlay.contains(document.activeElement)) overlay.focus({ preventScroll: true });
      };
      // Capture phase on the window: while open, the keys are the viewer's, not the slider's or the page's.
      const keys = (e) => {
        if (!model.open) return;
        const step = { ArrowLeft: -1, ArrowRight: 1 }[e.key];
        if (step) nav(step);
        else if (e.key === 'Escape') close();
        else if (e.key === '+' || e.key === '=') zoomCentre(1.25);
        else if (e.key === '-') zoomCentre(1 / 1.25);
        else return;
        e.preventDefault();
        e.stopPropagation();
      };
      window.addEventListener('keydown', keys, true);
      window.addEventListener('resize', () => { if (model.open && img.naturalWidth) fitView(); });
      model.on('remove', () => window.removeEventListener('keydown', keys, true));
      model.on(['open', 'src', 'fallback', 'image_name', 'position', 'note', 'warn'], draw);
      draw();
      return overlay;
    }
    """
    _stylesheets = [VIEWER_CSS]

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._nav_callbacks: list[Any] = []

    def on_nav(self, callback: Any) -> None:
        self._nav_callbacks.append(callback)

    def _handle_msg(self, msg: Any) -> None:
        if isinstance(msg, dict) and msg.get("action") == "nav" and msg.get("step") in (-1, 1):
            for callback in self._nav_callbacks:
                callback(msg["step"])


def block_credentials(config: Any) -> Any:
    """An Azure config with its credential from the Prefect block it names, as the flows load it; other configs as
    they are. Imported only then, so a local dataset never imports Prefect."""
    if getattr(config, "kind", None) != "azure" or config.secrets():
        return config
    if not (config.credentials_block or config.secret_block):
        return config
    for module in ("curation.tasks.blocks",):  # where the flows' blocks module lives
        try:
            blocks = importlib.import_module(module)
        except ImportError:
            continue
        return blocks.load_storage_credentials(config)
    return config


class FullsizeView:
    """Shows the store's selected image full size while `viewer.open`; ←/→ walk the filtered images (the gallery's
    order, excluded-by-sampling ones included, as the gallery shows them)."""

    def __init__(self, store: DataStore) -> None:
        self.store = store
        self.viewer = FullsizeViewer(margin=0, width=0, height=0, sizing_mode="fixed", css_classes=["fullsize"])
        self.viewer.on_nav(self.step)
        self.viewer.param.watch(self._render, "open")
        store.param.watch(self._render, ["selected_image", "dataset_id"])
        self.panel = self.viewer

    @property
    def is_open(self) -> bool:
        return self.viewer.open

    def open(self, image_id: str | None = None) -> None:
        """Open the viewer on `image_id` (selecting it), or on the selected image."""
        if image_id:
            self.store.selected_image = image_id
        if self.store.selected_image:
            self.viewer.open = True

    def close(self) -> None:
        self.viewer.open = False

    def _order(self) -> pl.Series:
        return self.store.filtered["image_id"]

    def step(self, delta: int) -> None:
        """Select the previous (-1) or next (+1) image in the filter order; the first one when the open image is not
        among the filtered ones. Stops at either end."""
        ids = self._order()
        if ids.is_empty():
            return
        found = ids.index_of(self.store.selected_image) if self.store.selected_image else None
        index = 0 if found is None else min(max(found + delta, 0), ids.len() - 1)
        self.store.selected_image = ids[index]

    def _render(self, *_: Any) -> None:
        image_id = self.store.selected_image
        if not self.viewer.open:
            return
        if not image_id or self.store.dataset_id is None:
            self.viewer.open = False
            return
        rows = self.store.images.filter(pl.col("image_id") == image_id).select("blob_name", "thumbnail")
        if rows.is_empty():
            self.viewer.param.update(src="", fallback="", image_id=image_id, image_name=image_id, position="",
                                     note="This image is not in the dataset.", warn=True)
            return
        name, thumbnail = rows.row(0)
        try:
            original = original_image(self.store.record(), name, get_settings(), credentials=block_credentials)
            src, note, warn = original.src or "", original.note, original.src is None
        except Exception as exc:  # one line, never a traceback
            note = f"The original cannot be shown ({exc.__class__.__name__}); showing the thumbnail."
            src, warn = "", True
        ids = self._order()
        found = ids.index_of(image_id)
        position = f"{found + 1:,} of {ids.len():,}" if found is not None else "not among the filtered images"
        self.viewer.param.update(src=src, fallback=thumbnail_data_uri(self.store.catalog, thumbnail) or "",
                                 image_id=image_id, image_name=name, position=position, note=note, warn=warn)

