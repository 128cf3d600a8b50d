"""HoloMaps as a standalone bokeh layout whose widgets switch frames in the browser (no server, no re-rendering).

Panel's ``embed=True`` re-renders a HoloMap once per widget state in Python (about a second per state for a
layout of several plots) and stores every state's plot patch. :func:`linked_holomaps` renders only the first
frame of each HoloMap with HoloViews (so styling, hover and legends are HoloViews'), stores each frame's data once
in its own ``ColumnDataSource``, and a small ``CustomJS`` callback swaps the data, the title and the y range when a
widget changes. Supported frames: :class:`holoviews.Curve` and overlays of curves (same number of curves in
every frame), which is what :func:`palmc.plots.trajectories` and the dashboard produce.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import holoviews as hv
import numpy as np
from bokeh.layouts import column, gridplot, row
from bokeh.models import ColumnDataSource, CustomJS, GlyphRenderer, LayoutDOM, Model, Plot, Select

__all__ = ["linked_holomaps", "render_bokeh"]

_JS = """
const key = selects.map((s) => s.value).join("|");
for (let p = 0; p < panels.length; p++) {
  const panel = panels[p];
  const frame = panel.frames[key];
  if (frame === undefined) { continue; }
  for (let i = 0; i < panel.renderers.length; i++) {
    panel.renderers[i].data_source.data = Object.assign({}, frame[i].data);
  }
  panel.figure.title.text = panel.titles[key];
  const yr = panel.yranges[key];
  if (yr !== undefined && yr !== null) {
    panel.figure.y_range.start = yr[0];
    panel.figure.y_range.end = yr[1];
  }
}
"""


def render_bokeh(obj: Any, *, canvas: bool = True) -> Model:
    """``hv.render(obj)`` with the bokeh backend; ``canvas=True`` draws with the HTML canvas instead of WebGL
    (HoloViews' default), which renders identically everywhere, including software-rendered headless browsers."""
    model = hv.render(obj, backend="bokeh")
    if canvas:
        for plot in model.select({"type": Plot}):
            plot.output_backend = "canvas"
    return model


def _curves(element: hv.Element | hv.Overlay) -> list[hv.Curve]:
    if isinstance(element, hv.Overlay):
        return [el for el in element if isinstance(el, hv.Curve)]
    if isinstance(element, hv.Curve):
        return [element]
    raise TypeError(f"linked_holomaps draws Curve frames or overlays of curves, got {type(element).__name__}")


def _title(element: hv.Element | hv.Overlay) -> str:
    title = element.opts.get().kwargs.get("title")
    if title:
        return str(title)
    return str(element.label or "")


def _yrange(curves: list[hv.Curve]) -> list[float]:
    values = np.concatenate([np.asarray(c.dimension_values(1), dtype=float) for c in curves])
    finite = values[np.isfinite(values)]
    if finite.size == 0:  # an empty frame (e.g. B^PP at the output layer)
        return [-1.0, 1.0]
    low, high = float(finite.min()), float(finite.max())
    pad = 0.05 * (high - low) if high > low else max(abs(high) * 0.05, 1e-3)
    return [low - pad, high + pad]


def _option(dim: hv.Dimension, value: Any) -> str | tuple[str, str]:
    """A ``Select`` option: the key value as text, shown by the dimension's ``value_format`` if it has one (e.g. a
    variant's label for its index), so the frame keys stay short and the widget readable."""
    if dim.value_format is None:
        return str(value)
    return (str(value), str(dim.pprint_value(value)))


def _key_text(key: Sequence[Any]) -> str:
    return "|".join(str(k) for k in key)


def linked_holomaps(
    maps: Sequence[hv.HoloMap], *, ncols: int = 2, labels: dict[str, str] | None = None,
    initial: dict[str, Any] | None = None,
) -> LayoutDOM:
    """A bokeh layout of ``maps`` (same key dimensions) with one ``Select`` per key dimension.

    Each HoloMap becomes one plot; the selects switch all plots to the frame of the chosen key. ``labels`` renames
    the widgets (default: the key dimension labels); the page opens on the first key that has the ``initial``
    values (e.g. ``{"model": "PAL"}``), else on the first key. The result embeds in any HTML file (e.g. via
    ``panel.pane.Bokeh``) and needs no Python to switch frames.
    """
    if not maps:
        raise ValueError("linked_holomaps needs at least one HoloMap")
    kdims = [d.name for d in maps[0].kdims]
    for hmap in maps[1:]:
        if [d.name for d in hmap.kdims] != kdims:
            raise ValueError(f"all HoloMaps need the key dimensions {kdims}, got {[d.name for d in hmap.kdims]}")
    keys = list(maps[0].keys())
    wanted = {kdims.index(name): value for name, value in (initial or {}).items() if name in kdims}
    first = next((k for k in keys if all(k[i] == v for i, v in wanted.items())), keys[0])
    options = [sorted({k[i] for k in keys}, key=lambda v: (str(type(v)), v)) for i in range(len(kdims))]
    labels = labels or {}
    selects = [
        Select(title=labels.get(name, maps[0].kdims[i].pprint_label), value=str(first[i]),
               options=[_option(maps[0].kdims[i], v) for v in options[i]],
               width=160 if maps[0].kdims[i].value_format is None else 320)  # labels are longer
        for i, name in enumerate(kdims)
    ]

    figures, panels = [], []
    for hmap in maps:
        figure = render_bokeh(hmap[first])
        renderers = [r for r in figure.renderers if isinstance(r, GlyphRenderer)]
        n = len(_curves(hmap[first]))
        if len(renderers) != n:
            raise ValueError(f"expected {n} line renderers in the first frame, found {len(renderers)}")
        frames: dict[str, list[ColumnDataSource]] = {}
        titles: dict[str, str] = {}
        yranges: dict[str, list[float]] = {}
        for key, element in hmap.data.items():
            curves = _curves(element)
            if len(curves) != n:
                raise ValueError(f"frame {key} has {len(curves)} curves, the first frame has {n}")
            sources = []
            for renderer, curve in zip(renderers, curves):
                x_field, y_field = renderer.glyph.x, renderer.glyph.y
                sources.append(ColumnDataSource({
                    x_field: np.asarray(curve.dimension_values(0), dtype=float),
                    y_field: np.asarray(curve.dimension_values(1), dtype=float),
                }))
            text = _key_text(key)
            frames[text], titles[text], yranges[text] = sources, _title(element), _yrange(curves)
        figure.title.text = titles[_key_text(first)]
        figures.append(figure)
        panels.append({"figure": figure, "renderers": renderers, "frames": frames, "titles": titles,
                       "yranges": yranges})

    callback = CustomJS(args={"selects": selects, "panels": panels}, code=_JS)
    for select in selects:
        select.js_on_change("value", callback)
    grid = gridplot(figures, ncols=ncols, merge_tools=True, toolbar_location="right")
    return column(row(*selects), grid)
