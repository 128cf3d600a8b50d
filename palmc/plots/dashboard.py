"""The default dashboard of a store (``palmc plot``): one standalone, offline HTML file.

:func:`build_dashboard` picks what to show from what the store holds:

* a header (experiment, network, models, seeds, run status);
* per metric, curves over time, one panel per hidden layer, one colour per model, mean over seeds with a min-max
  band: the alignment angles of the feedback weights (∠(B^PP_l, (W^PP_l+1)^T) and, if ``vbas`` is recorded, the
  Jacobian angle and ∠ to PAL's fixed point), and for ``fw_bw`` and ``supervised`` the output error MSE and
  ∠(ΔW^PP, ΔW^BP) when recorded;
* task ``supervised``: test and training accuracy over the epochs of training (mean and band over seeds);
* per run, with widgets to pick model, seed and layer: the trajectories of W^PP and B^PP entries, of a voltage,
  and the alignment angles of that run.

A sweep store (dim ``variant``) gets one curve per model and variant (legend "model [variant label]") and a
variant widget in the per-run section; each variant's curves are drawn through its own records.

With a queries YAML (``queries: {name: {...}}``, see :mod:`palmc.query`) it plots those queries' results instead
(``include_defaults=True`` keeps the default sections too). :func:`save_dashboard` writes it with bokeh's
resources inlined (``bokeh.resources.INLINE``), so the file opens without a network.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import holoviews as hv
import numpy as np
import panel as pn
import xarray as xr
import yaml

from palmc.plots.curves import (
    accuracy_curves,
    METRIC_LABELS,
    _SHORT_LABELS,
    TIME,
    VOLTAGE_VARIABLES,
    _drop_padding,
    _variant_dimension,
    _variants,
    decimate,
    line_colors,
    model_colors,
    plot_result,
    trajectories,
    unicode_math,
)
from palmc.plots.linked import linked_holomaps, render_bokeh
from palmc.store.layout import decode_run_status

__all__ = ["build_dashboard", "default_metrics", "save_dashboard"]

ANGLE_METRICS: tuple[str, ...] = (
    "angle_BPP_WPPT", "angle_jacobians", "angle_BPP_RHS", "angle_BPI_negBPP", "angle_WIP_WPP",
)
"""Angle metrics the dashboard shows when the store holds what they need, in this order."""

FW_BW_METRICS: tuple[str, ...] = ("MSE", "angle_dWPP_BP")
"""fw_bw metrics shown first (when recorded)."""

ACCURACY_METRICS: tuple[str, ...] = ("test_accuracy", "train_accuracy")
"""Task supervised: accuracies over the epochs, in their own section (their axis is eval_epoch, not time)."""

_BAND_TEXT = {"minmax": " and min-max over seeds (band)", "std": " and mean ± std over seeds (band)",
              "quantile": " and the 10%-90% quantiles over seeds (band)"}

PLOT_WIDTH = 520
"""Width of one plot in pixels (two plots per row)."""

_TRAJECTORY_BUDGET = 150_000
"""Points per trajectory plot over all (model, seed, layer) frames (keeps the embedded HTML a few MB)."""


def _md(text: str, **kwargs: Any) -> pn.pane.Markdown:
    return pn.pane.Markdown(text, disable_anchors=True, **kwargs)


def _escape(text: str) -> str:
    """Markdown-safe text (formulas keep their underscores and asterisks)."""
    return text.replace("\\", "\\\\").replace("_", "\\_").replace("*", "\\*")


def _metric_ok(ds: xr.Dataset, name: str) -> bool:
    from palmc.query import METRICS

    metric = METRICS.get(name)
    if metric is None or not all(r in ds.variables for r in metric.requires):
        return False
    if name.startswith("angle_") and name not in ("angle_WIP_WPP", "angle_dWPP_BP"):
        return int(ds["layer"].max()) >= 2  # needs a hidden layer
    return True


def default_metrics(ds: xr.Dataset) -> list[str]:
    """The metrics the default dashboard plots for ``ds``: fw_bw error metrics, then the alignment angles."""
    with_targets = ds.attrs.get("task") in ("fw_bw", "supervised")
    names = list(FW_BW_METRICS) + list(ANGLE_METRICS) if with_targets else list(ANGLE_METRICS)
    return [n for n in names if _metric_ok(ds, n)]


def _thin(ds: xr.Dataset, max_records: int) -> xr.Dataset:
    """Every k-th record (ending on the last) so that at most ``max_records`` remain: metrics are then computed on
    these records only, which bounds the cost of a dashboard of a very long run.

    In a sweep each variant is thinned on its own records (a stride over the union of all variants' times could
    miss a sparsely recording variant entirely), and the union of the kept records is kept."""
    from palmc.query.variants import isel_time, recorded

    n = ds.sizes.get("time", 0)
    mask = recorded(ds)
    if mask is None or "variant" not in mask.dims:
        if n <= max_records:
            return ds
        k = math.ceil(n / max_records)
        return ds.isel(time=slice((n - 1) % k, None, k))
    keep = np.zeros(n, dtype=bool)
    for column in np.asarray(mask.transpose("time", "variant").values).T:
        own = np.flatnonzero(column)
        k = max(1, math.ceil(own.size / max_records))
        keep[own[(own.size - 1) % k::k] if own.size else own] = True
    return ds if keep.all() else isel_time(ds, np.flatnonzero(keep))


def _experiment_description(ds: xr.Dataset) -> str:
    try:
        data = yaml.safe_load(str(ds.attrs.get("experiment", ""))) or {}
        return str(data.get("description", "")) if isinstance(data, dict) else ""
    except yaml.YAMLError:
        return ""


def _header(ds: xr.Dataset, source: str | None) -> str:
    attrs = ds.attrs
    name = attrs.get("name") or "palmc recording"
    widths = [int(n) for n in np.asarray(ds["layer_size"].values)] if "layer_size" in ds.coords else []
    models = [str(m) for m in ds["model"].values] if "model" in ds.dims else []
    kinds = [str(k) for k in np.asarray(ds["model_kind"].values)] if "model_kind" in ds.coords else models
    model_text = ", ".join(m if m == k else f"{m} ({k})" for m, k in zip(models, kinds))
    seeds = [int(s) for s in ds["seed"].values] if "seed" in ds.dims else []
    seed_text = ", ".join(map(str, seeds[:12])) + (f", ... ({len(seeds)} seeds)" if len(seeds) > 12 else "")
    times = np.asarray(ds["time"].values, dtype=float) if "time" in ds.dims else np.array([])
    lines = [f"# {name}"]
    description = _experiment_description(ds)
    if description:
        lines.append(description)
    lines.append("")
    rows = [
        ("task", attrs.get("task", "?")),
        ("network", "-".join(map(str, widths)) if widths else "?"),
        ("models", model_text or "?"),
        ("seeds", seed_text or "?"),
        ("dt, Tpres", f"{attrs.get('dt', '?')} ms, {_tpres_text(ds)}"),
        ("records", f"{times.size} (t = {times.min():g} .. {times.max():g} ms)" if times.size else "0"),
        ("steps", f"{attrs.get('steps_done', '?')} of {attrs.get('steps_total', '?')}, "
                  f"status {attrs.get('status', '?')}"),
        ("variables", ", ".join(str(v) for v in ds.data_vars if "time" in ds[v].dims)),
    ]
    if "variant" in ds.dims:
        variants = [f"{i}: {label}" for i, label in _variants(ds)]
        rows.append(("variants", "; ".join(variants[:12]) + (f"; ... ({len(variants)} variants)"
                                                             if len(variants) > 12 else "")))
    if "run_status" in ds.data_vars:
        status = list(decode_run_status(ds["run_status"].values, ds["run_status"].attrs).ravel())
        counts = {s: status.count(s) for s in sorted(set(status))}
        rows.append(("runs", ", ".join(f"{n} {s}" for s, n in counts.items())))
    if source:
        rows.append(("store", f"`{source}`"))
    lines.append(" · ".join(f"**{k}** {v}" for k, v in rows))
    return "\n".join(lines)


def _tpres_text(ds: xr.Dataset) -> str:
    """Tpres in ms; per variant when a sweep's variants differ (the attr is variant 0's)."""
    if "presentation_steps" in ds.coords and "variant" in ds["presentation_steps"].dims and "dt" in ds.attrs:
        values = sorted({float(n) * float(ds.attrs["dt"]) for n in np.asarray(ds["presentation_steps"].values)})
        if len(values) > 1:
            return ", ".join(f"{v:g}" for v in values) + " ms (per variant)"
    return f"{ds.attrs.get('Tpres', '?')} ms"


def _run_angles(
    results: dict[str, xr.DataArray], models: list[str], seeds: list[int], layers: list[int], width: int, height: int,
    variants: list[int | None] | None = None,
) -> hv.HoloMap | None:
    """Per (model, [variant,] seed, layer): the alignment angles of that run, one curve per metric."""
    angles = {m: r for m, r in results.items() if m.startswith("angle_") and "layer" in r.dims}
    if not angles:
        return None
    ydim = hv.Dimension("angle", label="angle", unit="deg")
    colors = model_colors(angles)
    variants = variants or [None]
    frames: dict[tuple[Any, ...], hv.Overlay] = {}
    for model, variant, seed, layer in [(m, v, s, l) for m in models for v in variants for s in seeds for l in layers]:
        curves = []
        for name, da in angles.items():
            run = da.sel(model=model, seed=seed)
            if variant is not None:
                run = _drop_padding(run.sel(variant=variant))  # the variant's own records only
            t = np.asarray(run["time"].values, dtype=float)
            if layer in da["layer"].values:
                y = np.asarray(run.sel(layer=layer).values, dtype=float)
            else:
                y = np.full(t.shape, np.nan)
            curves.append(
                hv.Curve((t, y), kdims=[TIME], vdims=[ydim], label=_SHORT_LABELS.get(name, name)).opts(
                    color=colors[name], line_width=1.5, tools=["hover"]
                )
            )
        defined = any(layer in da["layer"].values for da in angles.values())
        title = "alignment angles of this run" + ("" if defined else f" (none defined at layer {layer})")
        key = (model, seed, layer) if variant is None else (model, variant, seed, layer)
        frames[key] = hv.Overlay(curves).opts(
            title=title, width=width, height=height, show_grid=True, legend_position="right", framewise=True,
        )
    if variants == [None]:
        return hv.HoloMap(frames, kdims=["model", "seed", "layer"])
    labels = dict(_variants(next(iter(angles.values()))))
    return hv.HoloMap(frames, kdims=["model", _variant_dimension(labels), "seed", "layer"])


def _default_sections(ds: xr.Dataset, *, max_points: int, max_seeds: int, band: str) -> list[Any]:
    from palmc.query import query

    sections: list[Any] = []
    metrics = default_metrics(ds)
    thin = _thin(ds, 8 * max_points)
    results: dict[str, xr.DataArray] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name in metrics:
            results[name] = decimate(query(thin, name), max_points).load()
    colors = line_colors(ds) if "model" in ds.dims else None

    if results:
        n = ds.sizes.get("seed", 1)
        sections.append(_md(
            "## Learning curves\n"
            f"{'Median' if band == 'quantile' else 'Mean'} over {n} seed{'s' if n != 1 else ''} (line)"
            f"{_BAND_TEXT.get(band, '')}, one colour per model"
            + (" and variant (its label in brackets; each variant is drawn through its own records). "
               if "variant" in ds.dims else ". ")
            + "Angles in degrees between matrices (Frobenius inner product); 0° = aligned. "
            + ("Curves are block means of the records to keep the plot small. "
               if ds.sizes.get("time", 0) > max_points else "")
            + "Click a legend entry to mute a model."
        ))
        for name, da in results.items():
            plot = plot_result(da, band=band, max_points=max_points, colors=colors,  # type: ignore[arg-type]
                               width=PLOT_WIDTH)
            summary = _escape(unicode_math(_summary(name)))
            sections.append(_md(f"**{_escape(METRIC_LABELS.get(name, name))}**: {summary}"))
            sections.append(pn.pane.Bokeh(render_bokeh(plot)))

    accuracy = [name for name in ACCURACY_METRICS if _metric_ok(ds, name)]
    if accuracy:
        n = ds.sizes.get("seed", 1)
        sections.append(_md(
            "## Accuracy\n"
            f"Task supervised: a frozen copy of the network (plasticity, nudging and noise off) classifies the test "
            f"set (and the first training samples) after settling and every few epochs. Mean over {n} seed"
            f"{'s' if n != 1 else ''} (line){_BAND_TEXT.get(band, '')}, one colour per model."))
        for name in accuracy:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                plot = accuracy_curves(query(ds, name), band=band if band != "quantile" else "minmax",  # type: ignore[arg-type]
                                       colors=colors, width=PLOT_WIDTH)
            sections.append(_md(f"**{_escape(name)}**: {_escape(_summary(name))}"))
            sections.append(pn.pane.Bokeh(render_bokeh(plot)))

    per_run = _per_run_section(ds, results, max_points=max_points, max_seeds=max_seeds)
    if per_run is not None:
        sections += per_run
    return sections


def _summary(name: str) -> str:
    from palmc.query import METRICS

    metric = METRICS.get(name)
    return metric.summary if metric is not None else ""


def _most_interesting_model(ds: xr.Dataset) -> str:
    """The model the "One run" section opens on: the first PAL model (whose feedback learns), else the last."""
    models = [str(m) for m in ds["model"].values]
    kinds = [str(k) for k in np.asarray(ds["model_kind"].values)] if "model_kind" in ds.coords else models
    return next((m for m, k in zip(models, kinds) if k == "PAL"), models[-1])


def _per_run_section(
    ds: xr.Dataset, results: dict[str, xr.DataArray], *, max_points: int, max_seeds: int
) -> list[Any] | None:
    weights = [v for v in ("WPP", "BPP") if v in ds.data_vars]
    voltages = [v for v in VOLTAGE_VARIABLES if v in ds.data_vars][:1]
    if not (weights or voltages) or not {"model", "seed", "layer"} <= set(ds.dims):
        return None
    models = [str(m) for m in ds["model"].values]
    seeds = [int(s) for s in ds["seed"].values][:max_seeds]
    layers = [int(l) for l in ds["layer"].values if int(l) >= 1]
    variants = [v for v, _ in _variants(ds)]
    width, height = PLOT_WIDTH, 280
    maps: list[hv.HoloMap] = []
    for variable in weights + voltages:
        maps.append(trajectories(
            ds, variable, models=models, seeds=seeds, layers=layers, max_lines=48, max_points=max_points,
            point_budget=_TRAJECTORY_BUDGET, width=width, height=height,
        ))
    angles = _run_angles(results, models, seeds, layers, width, height, variants)
    if angles is not None:
        maps.append(angles)
    layout = linked_holomaps(maps, ncols=2, initial={"model": _most_interesting_model(ds)})
    note = "" if len(seeds) == ds.sizes["seed"] else f" (the first {len(seeds)} of {ds.sizes['seed']} seeds)"
    text = (
        "## One run\n"
        f"Pick the model, {'variant, ' if 'variant' in ds.dims else ''}seed{note} and layer with the widgets. "
        f"{unicode_math('W^PP_l')}: layer l-1 → l; {unicode_math('B^PP_l')}: layer l+1 → "
        "apical dendrites of layer l (not defined at the output layer). At most 48 entries per matrix are drawn; "
        "the voltage panel shows the neurons of the layer (at most 48)."
    )
    return [_md(text), pn.pane.Bokeh(layout)]


def _query_sections(ds: xr.Dataset, queries_path: str | Path, *, max_points: int, band: str) -> list[Any]:
    from palmc.query import evaluate, load_queries

    queries = load_queries(queries_path)
    colors = line_colors(ds) if "model" in ds.dims else None
    sections: list[Any] = [_md(f"## Queries from `{Path(queries_path).name}`")]
    for name, q in queries.items():
        result = evaluate(q, ds, name=name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            plot = plot_result(result, title=name, band=band, max_points=max_points,  # type: ignore[arg-type]
                               colors=colors, width=PLOT_WIDTH)
        text = f"**{name}**: `{q.model_dump_json(exclude_defaults=True, exclude={'description'})}`"
        if q.description:
            text += f"  \n{q.description}"
        sections += [_md(text), pn.pane.Bokeh(render_bokeh(plot))]
    return sections


def build_dashboard(
    ds: xr.Dataset,
    queries_path: str | Path | None = None,
    *,
    include_defaults: bool | None = None,
    max_points: int = 2000,
    max_seeds: int = 10,
    band: str = "minmax",
    source: str | None = None,
) -> pn.Column:
    """The dashboard of ``ds`` as a :class:`panel.Column` (display it in a notebook or save it).

    Default sections are chosen from what ``ds`` holds (see the module docstring); with ``queries_path`` the
    queries' results are plotted instead (``include_defaults=True`` keeps the defaults too). Curves have at most
    ``max_points`` points; the per-run widgets offer the first ``max_seeds`` seeds. ``band`` is the band over seeds
    (minmax, std, quantile or none).
    """
    if include_defaults is None:
        include_defaults = queries_path is None
    parts: list[Any] = [_md(_header(ds, source))]
    if include_defaults:
        parts += _default_sections(ds, max_points=max_points, max_seeds=max_seeds, band=band)
    if queries_path is not None:
        parts += _query_sections(ds, queries_path, max_points=max_points, band=band)
    if len(parts) == 1:
        parts.append(_md("_Nothing to plot: the store holds no variable that a default plot uses._"))
    return pn.Column(*parts, sizing_mode="fixed", width=2 * PLOT_WIDTH + 100)


def _inline_stylesheets(root: Any) -> None:
    """Replace panel's stylesheets linked from its CDN by their text (shipped with panel), so the page needs no
    network for its styling either (``bokeh.resources.INLINE`` inlines the JavaScript, not these sheets)."""
    from bokeh.models import ImportedStyleSheet, InlineStyleSheet
    from panel.io.resources import CDN_DIST

    dist = Path(pn.__file__).parent / "dist"
    cache: dict[str, Any] = {}

    def local(url: str) -> str | None:
        url = url.split("?")[0]
        if not url.startswith(CDN_DIST):
            return None
        path = dist / url[len(CDN_DIST):]
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def inline(sheet: Any) -> Any:
        if isinstance(sheet, ImportedStyleSheet):
            css = local(sheet.url)
            if css is not None:
                return cache.setdefault(sheet.url, InlineStyleSheet(css=css))
        elif isinstance(sheet, str) and sheet.startswith("http"):
            css = local(sheet)
            return css if css is not None else sheet
        return sheet

    for model in list(root.references()):
        sheets = getattr(model, "stylesheets", None)
        if sheets:
            model.stylesheets = [inline(sheet) for sheet in sheets]


def save_dashboard(
    store_or_dataset: str | Path | xr.Dataset,
    out_html: str | Path,
    queries_path: str | Path | None = None,
    **kwargs: Any,
) -> Path:
    """Write the dashboard of a store (path or open Dataset) to ``out_html``, one offline HTML file.

    Bokeh's JavaScript and panel's stylesheets are inlined (``bokeh.resources.INLINE``) and the per-run widgets
    switch frames in the browser, so the file needs neither a network nor a server. ``kwargs`` go to
    :func:`build_dashboard`. Returns the path written.
    """
    from palmc.query import open_store

    if isinstance(store_or_dataset, xr.Dataset):
        ds, source = store_or_dataset, kwargs.pop("source", None)
    else:
        ds, source = open_store(store_or_dataset), str(store_or_dataset)
        kwargs.pop("source", None)
    dashboard = build_dashboard(ds, queries_path, source=source, **kwargs)
    return save_page(dashboard, out_html, f"palmc: {ds.attrs.get('name', 'dashboard')}")


def save_page(page: Any, out_html: str | Path, title: str) -> Path:
    """Write a panel object as one offline HTML file (bokeh's JavaScript and panel's stylesheets inlined)."""
    from bokeh.document import Document
    from bokeh.resources import INLINE
    from panel.io.save import save as save_panel

    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = Document(title=title)
    root = page.get_root(doc)
    _inline_stylesheets(root)
    if root.document is None:
        doc.add_root(root)
    # no icon links: panel's template points them at its CDN, and the file must not reference the network
    offline = {"apple_icon": "", "app_favicon": ""}
    save_panel(doc, str(out), resources=INLINE, title=title, template_variables=offline)
    return out
