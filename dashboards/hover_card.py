"""The hover preview: a card at the mouse cursor with the hovered point's thumbnail, name and tags."""

from __future__ import annotations

from typing import Any

import param
from panel.custom import JSComponent

CARD_STYLE = ("position:fixed;z-index:10000;display:none;pointer-events:none;width:220px;padding:6px;"
              "background:white;border:1px solid #adb5bd;border-radius:6px;box-shadow:0 4px 14px rgba(0,0,0,.25);"
              "font:12px/1.35 system-ui,sans-serif;color:#212529")


# Plotly emits plotly_unhover(old point) and then builds plotly_hover from `gd._hoverdata`, which it has just set to
# the new point. Panel's own unhover handler puts the old point back into `gd._hoverdata` first (to give a later
# click its context), so moving straight from one point onto another reported the old one. This wraps Panel's
# PlotlyPlotView so every Plotly pane keeps the new point: a listener put before Panel's remembers it and one after
# Panel's restores it. A pure unhover (onto empty space) has no new point and keeps Panel's behaviour.
PLOTLY_HOVER_FIX = """
    function fixPlotlyHover() {
      let Plot = null;
      try { Plot = window.Bokeh.Models['panel.models.plotly.PlotlyPlot']; } catch (e) { return; }
      const View = Plot && Plot.prototype.default_view;
      const install = View && View.prototype._install_callbacks;
      if (typeof install !== 'function' || View.prototype._curationHoverFix) return;
      View.prototype._install_callbacks = function () {
        install.call(this);
        const gd = this.container;
        let next;
        gd._ev.prependListener('plotly_unhover', () => { next = gd._hoverdata; });
        gd.on('plotly_unhover', () => { if (next) gd._hoverdata = next; next = undefined; });
      };
      View.prototype._curationHoverFix = true;
    }
    fixPlotlyHover();
"""


class HoverCard(JSComponent):
    """Shows `preview` at the mouse cursor; hides it when `preview` is emptied or the mouse moves away from where it
    was shown (Plotly tells the server about a hover, not about leaving a point).

    The card lives in the page's body, outside every Panel layout, so no layout clips or shifts it. Text goes in
    through textContent only. `data-image-id` and `data-shown-at` (performance.now() when drawn) let a test or a
    benchmark follow it.
    """

    preview = param.Dict(default={}, doc="id, name, src (data URI or None), tags: [[category, class], ...]; {} hides.")

    _esm = f"""
    const STYLE = {CARD_STYLE!r};
    {PLOTLY_HOVER_FIX}
    export function render({{ model, el }}) {{
      fixPlotlyHover();
      document.querySelectorAll('body > .cur-hover-card').forEach((old) => old.remove());  // one per page, on re-render too
      const card = document.createElement('div');
      card.className = 'cur-hover-card';
      card.setAttribute('style', STYLE);
      document.body.append(card);
      let mouse = {{x: 0, y: 0}}, anchor = null;
      const track = (e) => {{
        mouse = {{x: e.clientX, y: e.clientY}};
        if (anchor && Math.hypot(mouse.x - anchor.x, mouse.y - anchor.y) > 40) {{ card.style.display = 'none'; anchor = null; }}
      }};
      document.addEventListener('mousemove', track, {{capture: true, passive: true}});
      function draw() {{
        const p = model.preview || {{}};
        if (!p.id) {{ card.style.display = 'none'; anchor = null; return; }}
        card.replaceChildren();
        if (p.src) {{
          const img = document.createElement('img');
          img.src = p.src;
          img.alt = p.name || '';
          img.setAttribute('style', 'width:100%;border-radius:4px;display:block');
          card.append(img);
        }}
        const name = document.createElement('div');
        name.className = 'cur-hover-name';
        name.textContent = p.name || p.id;
        name.setAttribute('style', 'font-weight:600;word-break:break-all;margin:4px 0 2px');
        card.append(name);
        for (const [category, cls] of (p.tags || [])) {{
          const row = document.createElement('div');
          row.className = 'cur-hover-tag';
          row.textContent = `${{category}}: ${{cls}}`;
          card.append(row);
        }}
        card.style.display = 'block';  // below and right of the cursor; flipped where the window ends
        const w = card.offsetWidth, h = card.offsetHeight;
        const left = mouse.x + 16 + w <= window.innerWidth ? mouse.x + 16 : mouse.x - 16 - w;
        const top = mouse.y + 16 + h <= window.innerHeight ? mouse.y + 16 : mouse.y - 16 - h;
        card.style.left = `${{Math.max(0, left)}}px`;
        card.style.top = `${{Math.max(0, top)}}px`;
        card.dataset.imageId = p.id;
        card.dataset.shownAt = String(performance.now());
        anchor = {{...mouse}};
      }}
      model.on('preview', draw);
      model.on('remove', () => {{ card.remove(); document.removeEventListener('mousemove', track, {{capture: true}}); }});
      const holder = document.createElement('span');
      holder.className = 'cur-hover-holder';
      return holder;
    }}
    """

    def show(self, preview: dict[str, Any] | None) -> None:
        self.preview = preview or {}
