"""HoloViews (bokeh) builders for palmc results: curves over time with a band over seeds, and trajectories.

Everything takes xarray objects that follow ``docs/dataset-contract.md`` (or query results derived from them):

* :func:`decimate` shortens the ``time`` axis lazily (block means or strides) to at most ``max_points`` records,
  so a 10^6-record series plots quickly and the HTML stays small;
* :func:`plot_result` turns a query result into curves: one panel per layer, one colour per model (and per
  variant of a sweep, labelled with the variant's label), a mean line and a band over seeds (min-max, std or
  quantiles), or the band of a result already reduced to quantiles;
* :func:`plot_query` runs a query (:func:`palmc.query.query`) and plots it;
* :func:`trajectories` (and :func:`weight_trajectories`, :func:`voltage_trajectories`) draw every entry of a
  weight matrix or every neuron of a layer over time, in a :class:`holoviews.HoloMap` whose widgets pick the
  model, variant (sweeps), seed and layer.

Sweeps: a variant has NaN at the times it does not record (the store's time axis is the union of all variants'
record times); its curves skip those times, so they are drawn through the variant's own records.

Time is in ms, angles in degrees; labels use the paper's symbols (B^PP, W^PP, ...).
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import holoviews as hv
import numpy as np
import xarray as xr

import holoviews.plotting.bokeh  # noqa: F401  - registers the bokeh backend (no notebook output)

__all__ = [
    "BandKind",
    "METRIC_LABELS",
    "accuracy_curves",
    "decimate",
    "line_colors",
    "model_colors",
    "plot_query",
    "plot_result",
    "seed_band",
    "trajectories",
    "unicode_math",
    "value_dimension",
    "voltage_trajectories",
    "weight_trajectories",
]

BandKind = Literal["minmax", "std", "quantile", "none"]

TIME = hv.Dimension("time", label="time", unit="ms")

_SUPERSCRIPT = dict(zip("ABDEGHIJKLMNOPRTUVWabdeginoprst0123456789+-",
                        "ᴬᴮᴰᴱᴳᴴᴵᴶᴷᴸᴹᴺᴼᴾᴿᵀᵁⱽᵂᵃᵇᵈᵉᵍⁱⁿᵒᵖʳˢᵗ⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻"))
_SUBSCRIPT = dict(zip("aehijklmnoprstuvx0123456789+-", "ₐₑₕᵢⱼₖₗₘₙₒₚᵣₛₜᵤᵥₓ₀₁₂₃₄₅₆₇₈₉₊₋"))


def unicode_math(text: str) -> str:
    """The paper's caret notation as Unicode super- and subscripts, which every browser draws in titles, legends
    and axis labels: ``(W^PP_l+1)^T`` or ``(W^PP_{l+1})^T`` -> ``(Wᴾᴾₗ₊₁)ᵀ`` (``W^PP_l+1`` would read as
    W^PP_l + 1). A script with a letter Unicode has no small form of (``J_g``) is left as written."""

    def convert(table: dict[str, str]):
        def replace(match: re.Match[str]) -> str:
            body = match.group(1) or match.group(2)
            return "".join(table[c] for c in body) if all(c in table for c in body) else match.group(0)
        return replace

    text = re.sub(r"\^(?:\{([A-Za-z0-9+-]+)\}|([A-Za-z0-9+-]+))", convert(_SUPERSCRIPT), text)
    return re.sub(r"_(?:\{([A-Za-z0-9+-]+)\}|([A-Za-z0-9+-]+))", convert(_SUBSCRIPT), text)


METRIC_LABELS: dict[str, str] = {
    "angle_BPP_WPPT": "∠(B^PP_l, (W^PP_l+1)^T)",
    "angle_jacobians": "∠(J_g, J_f^T)  [B^PP_l φ'_l+1 vs φ'_l (W^PP_l+1)^T]",
    "angle_BPP_RHS": "∠(B^PP_l, φ'_l (W^PP_l+1)^T φ'_l+1)",
    "angle_BPI_negBPP": "∠(B^PI_l, -B^PP_l)",
    "angle_WIP_WPP": "∠(W^IP_l, W^PP_l)",
    "angle_dWPP_BP": "∠(ΔW^PP_l, ΔW^BP_l)",
    "MSE": "MSE = Σ_i (ŭ^P_i - target_i)² over the output units",
    "mse_mean": "mean squared output error",
    "error": "output error ŭ^P - target (output layer)",
}
METRIC_LABELS = {name: unicode_math(label) for name, label in METRIC_LABELS.items()}
"""Axis labels (the paper's symbols) of the registered metrics; other results use their ``symbol``/``long_name``."""

_SHORT_LABELS: dict[str, str] = {
    "angle_BPP_WPPT": "∠(B^PP, (W^PP)^T)",
    "angle_jacobians": "∠(J_g, J_f^T)",
    "angle_BPP_RHS": "∠(B^PP, φ' (W^PP)^T φ')",
    "angle_BPI_negBPP": "∠(B^PI, -B^PP)",
    "angle_WIP_WPP": "∠(W^IP, W^PP)",
    "angle_dWPP_BP": "∠(ΔW^PP, ΔW^BP)",
    "MSE": "MSE (sum of squared errors)",
    "mse_mean": "mean squared error",
}
_SHORT_LABELS = {name: unicode_math(label) for name, label in _SHORT_LABELS.items()}

_PRE_LAYER_OFFSET = {"WPP": -1, "dWPP": -1, "WIP": -1, "dWIP": -1, "BPP": 1, "dBPP": 1, "BPI": 1, "dBPI": 1}
"""Layer of the presynaptic population of a weight variable, relative to its ``layer`` (dataset contract)."""

_WEIGHT_SYMBOLS = {
    "WPP": "W^PP", "dWPP": "ΔW^PP", "BPP": "B^PP", "dBPP": "ΔB^PP",
    "BPI": "B^PI", "dBPI": "ΔB^PI", "WIP": "W^IP", "dWIP": "ΔW^IP",
}
_WEIGHT_SYMBOLS = {name: unicode_math(symbol) for name, symbol in _WEIGHT_SYMBOLS.items()}

VOLTAGE_VARIABLES: tuple[str, ...] = ("uP", "uP_breve", "vbas", "vapi", "uI", "uI_breve", "rP_breve")
"""Voltage-like variables, in the order :func:`voltage_trajectories` prefers them."""

_PALETTE = (
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)


# ----------------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------------


def model_colors(models: Iterable[Any]) -> dict[str, str]:
    """A fixed colour per model name (Category10 order), so a model has the same colour in every panel."""
    return {str(m): _PALETTE[i % len(_PALETTE)] for i, m in enumerate(models)}


def _variants(obj: xr.DataArray | xr.Dataset) -> list[tuple[int | None, str]]:
    """(index, label) of each variant along the ``variant`` dim, or ``[(None, "")]`` without one."""
    if "variant" not in obj.dims:
        return [(None, "")]
    index = [int(v) for v in obj["variant"].values]
    labels = ([str(l) for l in np.asarray(obj["variant_label"].values, dtype=object)]
              if "variant_label" in obj.coords else [str(i) for i in index])
    return list(zip(index, labels))


def _selected_variant(obj: xr.DataArray | xr.Dataset) -> str:
    """The label of a single selected variant (a scalar ``variant`` coordinate), else ""."""
    if "variant" in obj.dims or "variant" not in obj.coords:
        return ""
    if "variant_label" in obj.coords and obj["variant_label"].ndim == 0:
        return str(obj["variant_label"].values)
    return str(obj["variant"].values)


def _line_label(model: str, variant: str) -> str:
    if not variant:
        return model
    return f"{model} [{variant}]" if model else variant


def _models(obj: xr.DataArray | xr.Dataset) -> list[str]:
    if "model" in obj.dims:
        return [str(m) for m in obj["model"].values]
    return [str(obj["model"].values)] if "model" in obj.coords else [""]  # one model selected, or none


def line_colors(obj: xr.DataArray | xr.Dataset) -> dict[str, str]:
    """A fixed colour per line of :func:`plot_result` (model, or "model [variant label]" for a sweep), so that a
    line has the same colour in every panel; keys are the legend labels."""
    return model_colors(_line_label(m, v) for m in _models(obj) for _, v in _variants(obj))


def _drop_padding(da: xr.DataArray) -> xr.DataArray:
    """The records where ``da`` (one variant) has any value: a variant's curve skips the times it does not record."""
    if "time" not in da.dims:
        return da
    others = [d for d in da.dims if d != "time"]
    defined = np.asarray(da.notnull().any(others).values if others else da.notnull().values)
    return da.isel(time=np.flatnonzero(defined)) if defined.any() and not defined.all() else da


def _units(attrs: dict[str, Any]) -> str | None:
    units = str(attrs.get("units") or "")
    return None if units in ("", "1", "None") else units


def value_dimension(da: xr.DataArray, name: str = "value") -> hv.Dimension:
    """The y-axis :class:`holoviews.Dimension` of ``da``: the paper's symbol of its metric/variable and its unit."""
    metric = str(da.attrs.get("metric") or da.name or "")
    label = (_SHORT_LABELS.get(metric) or METRIC_LABELS.get(metric) or unicode_math(str(da.attrs.get("symbol") or ""))
             or da.attrs.get("long_name") or metric or name)
    return hv.Dimension(name, label=str(label), unit=_units(da.attrs))


def _time_coords(da: xr.DataArray, dim: str) -> list[str]:
    return [str(c) for c in da.coords if c != dim and dim in da[c].dims]


def decimate(
    da: xr.DataArray, max_points: int = 2000, *, dim: str = "time", method: Literal["mean", "stride"] = "mean"
) -> xr.DataArray:
    """At most ``max_points`` records along ``dim`` (lazy if ``da`` is dask-backed).

    ``method="mean"``: means over blocks of k = ceil(n / max_points) consecutive records (NaNs skipped), each block
    labelled by the mean of its times; ``"stride"``: every k-th record, ending on the last one. Non-index
    coordinates along ``dim`` (``step``, ``epoch``, ``phase``) are dropped. Shorter series are returned unchanged.
    """
    if dim not in da.dims or max_points < 1:
        return da
    n = da.sizes[dim]
    if n <= max_points:
        return da
    k = math.ceil(n / max_points)
    da = da.drop_vars(_time_coords(da, dim))
    if method == "stride":
        return da.isel({dim: slice((n - 1) % k, None, k)})
    if method != "mean":
        raise ValueError(f"method must be 'mean' or 'stride', got {method!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return da.coarsen({dim: k}, boundary="pad", coord_func="mean").mean(keep_attrs=True)


def seed_band(
    da: xr.DataArray, band: BandKind = "minmax", *, quantiles: Sequence[float] = (0.1, 0.9), over: str = "seed"
) -> xr.Dataset:
    """Centre line and band of ``da`` over ``over`` (NaNs skipped): variables ``center``, ``lower``, ``upper``.

    ``center`` is the mean (the median for ``band="quantile"``); the band is min-max, mean ± std, or the two
    ``quantiles``. A result already reduced to quantiles (dim ``quantile``) gives the outer quantiles as the band
    and the 0.5 quantile (else the midpoint) as the centre. Without either dim, lower = upper = center.
    """
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if "quantile" in da.dims:
            qs = sorted(float(q) for q in da["quantile"].values)
            lower, upper = da.sel(quantile=qs[0], drop=True), da.sel(quantile=qs[-1], drop=True)
            if any(abs(q - 0.5) < 1e-12 for q in qs):
                center = da.sel(quantile=0.5, method="nearest", drop=True)
            else:
                center = 0.5 * (lower + upper)
        elif over in da.dims and da.sizes[over] > 1 and band != "none":
            if band == "minmax":
                center, lower, upper = da.mean(over), da.min(over), da.max(over)
            elif band == "std":
                center, spread = da.mean(over), da.std(over)
                lower, upper = center - spread, center + spread
            elif band == "quantile":
                q = da.quantile([min(quantiles), 0.5, max(quantiles)], dim=over)
                lower, center, upper = (q.isel(quantile=i, drop=True) for i in range(3))
            else:
                raise ValueError(f"band must be 'minmax', 'std', 'quantile' or 'none', got {band!r}")
        else:
            center = da.mean(over) if over in da.dims else da
            lower = upper = center
    return xr.Dataset({"center": center, "lower": lower, "upper": upper})


def _finite_range(values: np.ndarray) -> tuple[float, float] | None:
    finite = values[np.isfinite(values)]
    return (float(finite.min()), float(finite.max())) if finite.size else None


def _band_overlay(
    times: np.ndarray, band: xr.Dataset, *, label: str, color: str, ydim: hv.Dimension, band_label: str
) -> list[hv.Element]:
    """An Area (band) and a Curve (centre line) sharing ``label`` and ``color``."""
    center = np.asarray(band["center"].values, dtype=float)
    lower = np.asarray(band["lower"].values, dtype=float)
    upper = np.asarray(band["upper"].values, dtype=float)
    elements: list[hv.Element] = []
    hi_dim = hv.Dimension(f"{ydim.name}_upper", label=f"{ydim.label} ({band_label}, upper)")
    if not np.allclose(lower, upper, equal_nan=True):
        elements.append(
            hv.Area((times, lower, upper), kdims=[TIME], vdims=[ydim, hi_dim])
            .opts(color=color, alpha=0.2, line_alpha=0, muted_alpha=0)
        )
    elements.append(
        hv.Curve((times, center), kdims=[TIME], vdims=[ydim], label=label).opts(
            color=color, line_width=2, tools=["hover"], muted_alpha=0.1
        )
    )
    return elements


_BAND_NAMES = {"minmax": "min-max over seeds", "std": "mean ± std over seeds", "quantile": "quantiles over seeds"}


def _band_description(da: xr.DataArray, band: BandKind, quantiles: Sequence[float]) -> str:
    if "quantile" in da.dims:
        qs = sorted(float(q) for q in da["quantile"].values)
        return f"quantiles {qs[0]:g}-{qs[-1]:g}"
    if "seed" in da.dims and da.sizes["seed"] > 1 and band != "none":
        if band == "quantile":
            return f"quantiles {min(quantiles):g}-{max(quantiles):g} over seeds"
        return _BAND_NAMES.get(band, band)
    return ""


def _is_positive(da: xr.DataArray) -> bool:
    rng = _finite_range(np.asarray(da.values, dtype=float))
    return rng is not None and rng[0] > 0


def _scalar_plot(da: xr.DataArray, title: str, ydim: hv.Dimension, width: int, height: int,
                 colors: dict[str, str] | None = None) -> hv.Element | hv.Layout:
    """Results without a time axis: bars of the mean over seeds per (layer, model), plus a table of all values.
    Bars are coloured by model with ``colors`` (model -> colour: the colours of the curves), as the curves are."""
    labels = dict(_variants(da))

    def frame(values: xr.DataArray) -> Any:
        df = values.drop_vars([c for c in values.coords if c not in values.dims]).to_dataframe(name="value")
        df = df.reset_index()
        if "variant" in df.columns:  # variants by their labels
            df["variant"] = [labels.get(int(v), str(v)) for v in df["variant"]]
        return df

    table = hv.Table(frame(da)).opts(title=f"{title} (values)", width=width, height=height)
    cats = [d for d in ("layer", "model", "variant") if d in da.dims]
    if not cats or set(da.dims) - {"layer", "model", "variant", "seed"}:
        return table
    mean = da.mean("seed") if "seed" in da.dims else da
    bars_df = frame(mean)
    for c in cats:
        bars_df[c] = bars_df[c].astype(str)
    bars = hv.Bars(bars_df, kdims=cats, vdims=[hv.Dimension("value", label=ydim.label, unit=ydim.unit)]).opts(
        title=f"{title} (mean over seeds)" if "seed" in da.dims else title, width=width, height=height,
        tools=["hover"], xrotation=0,
    )
    if "model" in cats:
        palette = {**model_colors(bars_df["model"].unique()), **(colors or {})}
        bars = bars.opts(color=hv.dim("model").categorize(palette), show_legend=False)
    return (bars + table).cols(2)


# ----------------------------------------------------------------------------------------------------------------
# curves over time
# ----------------------------------------------------------------------------------------------------------------


def plot_result(
    da: xr.DataArray,
    *,
    title: str | None = None,
    band: BandKind = "minmax",
    quantiles: Sequence[float] = (0.1, 0.9),
    max_points: int = 2000,
    max_lines: int = 32,
    logy: bool | None = None,
    colors: dict[str, str] | None = None,
    width: int = 460,
    height: int = 300,
    ncols: int = 2,
) -> hv.Layout | hv.Overlay | hv.Element:
    """Plot a query result (or any contract variable) over time.

    One panel per ``layer`` (if present); in each, one colour per ``model`` (per model and ``variant`` for a sweep,
    labelled "model [variant label]"; each variant's curve skips the times it does not record): a line for the
    mean over seeds and a band (``band``: min-max, mean ± std, quantiles, or none). A result reduced to quantiles
    draws its outer quantiles as the band. Any other dim (``neuron``, ``pre``, ...) gives one thin line per entry
    (at most ``max_lines``, mean over seeds). The series is first decimated to ``max_points`` records (block means).
    Results without ``time`` give bars and a table. ``logy=None`` uses a log axis for MSE-like positive results.
    """
    metric = str(da.attrs.get("metric") or da.name or "")
    ydim = value_dimension(da, name=metric or "value")
    title = title or _SHORT_LABELS.get(metric) or ydim.label
    if _selected_variant(da):
        title = f"{title} [{_selected_variant(da)}]"
    if "time" not in da.dims:
        return _scalar_plot(da.load(), title, ydim, width, height, colors)
    data = decimate(da, max_points).load()
    if logy is None:
        logy = metric.lower() in ("mse", "mse_mean") and _is_positive(data)
    lines = [(m, v, _line_label(m, label)) for m in _models(data) for v, label in _variants(data)]
    defaults = line_colors(data)
    colors = colors or defaults
    band_text = _band_description(data, band, quantiles)
    layers: list[int | None] = [None]
    if "layer" in data.dims:
        layers = [int(l) for l in data["layer"].values]
        other = [d for d in data.dims if d != "layer"]
        defined = [int(l) for l, ok in zip(layers, np.asarray(data.notnull().any(other).values)) if ok]
        layers = defined or layers  # leave out layers where the quantity does not exist (all NaN)
    panels: list[hv.Overlay] = []
    for layer in layers:
        sub = data.sel(layer=layer, drop=True) if layer is not None else data
        elements: list[hv.Element] = []
        for model, variant, name in lines:
            run = sub.sel(model=model, drop=True) if "model" in sub.dims else sub
            if variant is not None:
                run = _drop_padding(run.sel(variant=variant, drop=True))
            color = colors.get(name) or defaults[name]
            elements += _model_elements(run, name, color, ydim, band, quantiles, band_text, max_lines)
        panel_title = title if layer is None else f"{title}, layer {layer}"
        overlay = hv.Overlay(elements).opts(
            title=panel_title, width=width, height=height, show_grid=True, logy=bool(logy),
            legend_position="right",  # outside the axes: inside, it covered bands (FA's, near 90°)
        )
        panels.append(overlay)
    if len(panels) == 1:
        return panels[0]
    return hv.Layout(panels).cols(ncols)


def _model_elements(
    run: xr.DataArray,
    model: str,
    color: str,
    ydim: hv.Dimension,
    band: BandKind,
    quantiles: Sequence[float],
    band_text: str,
    max_lines: int,
) -> list[hv.Element]:
    times = np.asarray(run["time"].values, dtype=float)
    extra = [d for d in run.dims if d not in ("time", "seed", "quantile")]
    if not extra:
        stats = seed_band(run, band, quantiles=quantiles)
        return _band_overlay(times, stats, label=model or ydim.label, color=color, ydim=ydim, band_label=band_text)
    center = seed_band(run, "none")["center"] if "quantile" not in run.dims else seed_band(run)["center"]
    stacked = center.stack(entry=extra).transpose("entry", "time")
    picks = _evenly(stacked.sizes["entry"], max_lines)
    values = np.asarray(stacked.values, dtype=float)
    x, y = _nan_joined(times, [values[i] for i in picks])
    return [hv.Curve((x, y), kdims=[TIME], vdims=[ydim], label=model).opts(color=color, alpha=0.6, line_width=1)]


def _evenly(n: int, k: int) -> list[int]:
    """At most ``k`` evenly spaced indices of ``range(n)``, including the first and last."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def plot_query(
    ds: xr.Dataset, metric: str | None = None, *, plot: dict[str, Any] | None = None, **query_kwargs: Any
) -> hv.Layout | hv.Overlay | hv.Element:
    """Evaluate ``palmc.query.query(ds, metric, **query_kwargs)`` and :func:`plot_result` it (``plot`` = its options).

    Example: ``plot_query(ds, "angle_BPP_WPPT", select={"phase": "training"})``.
    """
    from palmc.query import query

    return plot_result(query(ds, metric, **query_kwargs), **(plot or {}))


# ----------------------------------------------------------------------------------------------------------------
# trajectories of weights and voltages
# ----------------------------------------------------------------------------------------------------------------


def _as_list(value: Any, default: Iterable[Any]) -> list[Any]:
    if value is None:
        return list(default)
    return list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]


def _layer_sizes(ds: xr.Dataset) -> dict[int, int]:
    if "layer_size" in ds.coords:
        return {int(l): int(n) for l, n in zip(ds["layer"].values, np.asarray(ds["layer_size"].values))}
    return {}


def existing_layers(ds: xr.Dataset, variable: str) -> list[int]:
    """The layers at which ``variable`` exists, from the dataset contract (e.g. B^PP: 1..L-1, W^PP: 1..L)."""
    if "layer" not in ds[variable].dims:
        return []
    layers = [int(l) for l in ds["layer"].values]
    top = max(layers)
    if variable in _PRE_LAYER_OFFSET:
        low = 2 if variable in ("WIP", "dWIP") else 1
        high = top - 1 if _PRE_LAYER_OFFSET[variable] > 0 else top
    elif variable in ("vapi", "vapi_noise"):
        low, high = 1, top - 1
    elif variable in ("uI", "uI_breve", "rI_breve"):
        low, high = 2, top
    else:
        low, high = 1, top
    return [l for l in layers if low <= l <= high]


def _entries(ds: xr.Dataset, variable: str, layer: int | None) -> list[tuple[int, ...]]:
    """Valid (neuron[, pre]) index tuples of ``variable`` at ``layer`` (padding beyond the layer widths left out)."""
    da = ds[variable]
    sizes = _layer_sizes(ds)
    top = max(sizes) if sizes else 0
    if layer is None:
        layer_of = {"input": 0}.get(variable, top)
        n_post = sizes.get(layer_of, da.sizes.get("neuron", 1))
    else:
        n_post = sizes.get(layer, da.sizes.get("neuron", 1))
    n_post = min(n_post, da.sizes.get("neuron", 1))
    if "pre" not in da.dims:
        return [(i,) for i in range(n_post)]
    pre_layer = None if layer is None else layer + _PRE_LAYER_OFFSET.get(variable, -1)
    n_pre = min(sizes.get(pre_layer, da.sizes["pre"]) if pre_layer is not None else da.sizes["pre"], da.sizes["pre"])
    return [(i, j) for i in range(n_post) for j in range(n_pre)]


def trajectories(
    ds: xr.Dataset,
    variable: str,
    *,
    models: Any = None,
    seeds: Any = None,
    layers: Any = None,
    max_lines: int = 64,
    max_points: int = 1000,
    point_budget: int | None = None,
    width: int = 460,
    height: int = 300,
    dims: Sequence[str] = ("model", "seed", "layer"),
    color: str | None = None,
    variants: Any = None,
) -> hv.HoloMap:
    """Every entry of a weight matrix (or every neuron of a layer) over time, one frame per (model, seed, layer),
    and per variant (indices ``variants``, default all) for a sweep.

    The HoloMap's widgets pick the model, seed and layer, and the variant of a sweep (key dimension ``variant``
    after ``model`` unless ``dims`` places it; its widget shows the variant labels). A variant's lines skip the
    times it does not record. The lines of a frame are drawn as one NaN-separated curve
    (one glyph, so even thousands of frames stay responsive). At most ``max_lines`` entries per frame (evenly spaced
    over the matrix, padding excluded) and ``max_points`` records per line (block means); ``point_budget`` caps
    the total number of points over all frames (fewer records per line, at least 50) to keep an HTML export
    small. Layers where the variable does not exist (e.g. B^PP at the output layer) get an empty frame.
    """
    da = ds[variable]
    all_models = [str(m) for m in ds["model"].values] if "model" in da.dims else [""]
    all_seeds = [int(s) for s in ds["seed"].values] if "seed" in da.dims else [0]
    models_ = [str(m) for m in _as_list(models, all_models)]
    seeds_ = [int(s) for s in _as_list(seeds, all_seeds)]
    has_variant = "variant" in da.dims
    labels = dict(_variants(da))
    variants_ = [int(v) for v in _as_list(variants, labels)] if has_variant else [None]
    if has_variant and "variant" not in dims:  # the variant widget right after the model's
        at = list(dims).index("model") + 1 if "model" in dims else 0
        dims = [*dims[:at], "variant", *dims[at:]]
    has_layer = "layer" in da.dims
    valid_layers = existing_layers(ds, variable) if has_layer else []
    layers_ = [int(l) for l in _as_list(layers, valid_layers)] if has_layer else [None]

    entries = {l: _entries(ds, variable, l) for l in layers_}
    picks = {l: [entries[l][i] for i in _evenly(len(entries[l]), max_lines)] for l in layers_}
    if point_budget:
        n_lines = sum(len(p) for p in picks.values()) * len(models_) * len(seeds_) * len(variants_)
        max_points = max(50, min(max_points, point_budget // max(n_lines, 1)))

    sel: dict[str, Any] = {}
    if "model" in da.dims:
        sel["model"] = models_
    if "seed" in da.dims:
        sel["seed"] = seeds_
    if has_variant:
        sel["variant"] = variants_
    if has_layer:
        sel["layer"] = [l for l in layers_ if l in valid_layers] or layers_[:1]
    data = decimate(da.sel(sel), max_points).load()
    times = np.asarray(data["time"].values, dtype=float)

    symbol = _WEIGHT_SYMBOLS.get(variable) or unicode_math(str(da.attrs.get("symbol") or variable))
    ydim = hv.Dimension(variable, label=symbol, unit=_units(da.attrs))
    color = color or _PALETTE[0]
    frames: dict[tuple[Any, ...], hv.Curve] = {}
    frame_keys = [(m, v, s, l) for m in models_ for v in variants_ for s in seeds_ for l in layers_]
    for model, variant, seed, layer in frame_keys:
        key_values = {"model": model, "variant": variant, "seed": seed, "layer": layer}
        key = tuple(key_values[d] for d in dims if d != "layer" or has_layer)
        run = data
        if "model" in run.dims:
            run = run.sel(model=model)
        if "seed" in run.dims:
            run = run.sel(seed=seed)
        lines: list[np.ndarray] = []
        run_times = times
        if variant is not None:
            run = run.sel(variant=variant)
        if layer is None or layer in valid_layers:
            if layer is not None:
                run = run.sel(layer=layer)
            if variant is not None:
                run = _drop_padding(run)
                run_times = np.asarray(run["time"].values, dtype=float)
            values = np.asarray(run.transpose("time", ...).values, dtype=float)
            lines = [values[(slice(None), *idx)] for idx in picks[layer]]
        x, y = _nan_joined(run_times, lines)
        label = _frame_label(symbol, variable, layer, valid_layers)
        frames[key] = hv.Curve((x, y), kdims=[TIME], vdims=[ydim], label=label).opts(
            color=color, alpha=0.7, line_width=1, width=width, height=height, show_grid=True,
            framewise=True, tools=["hover"],
        )
    kdims = [_variant_dimension(labels) if d == "variant" else d for d in dims if d != "layer" or has_layer]
    return hv.HoloMap(frames, kdims=kdims)


def _variant_dimension(labels: dict[int, str]) -> hv.Dimension:
    """The key dimension ``variant`` (values: indices) whose widgets and titles show the variants' labels."""
    return hv.Dimension("variant", value_format=lambda v: labels.get(int(v), str(v)))


def _nan_joined(times: np.ndarray, lines: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Many lines as one NaN-separated (x, y) pair: a single bokeh glyph draws them all, fast and compact."""
    if not lines:
        return times[:1].copy(), np.full(min(times.size, 1), np.nan)
    gap = np.array([np.nan])
    x = np.concatenate([part for _ in lines for part in (times, gap)][:-1])
    y = np.concatenate([part for line in lines for part in (line, gap)][:-1])
    return x, y


def _frame_label(symbol: str, variable: str, layer: int | None, valid: list[int]) -> str:
    if layer is None:
        return symbol
    symbol = unicode_math(f"{symbol}_{layer}")  # Bᴾᴾ₁
    if layer not in valid:
        return f"{symbol}: not defined at layer {layer}"
    offset = _PRE_LAYER_OFFSET.get(variable)
    if offset is None:
        return symbol
    return f"{symbol} (layer {layer + offset} → {layer})"


def weight_trajectories(ds: xr.Dataset, variable: str = "WPP", **kwargs: Any) -> hv.HoloMap:
    """:func:`trajectories` of a weight variable (``WPP``, ``BPP``, ``BPI``, ``WIP`` or their updates ``d*``)."""
    if variable not in _PRE_LAYER_OFFSET:
        raise ValueError(f"{variable!r} is not a weight variable; weights: {', '.join(_PRE_LAYER_OFFSET)}")
    return trajectories(ds, variable, **kwargs)


def voltage_trajectories(ds: xr.Dataset, variable: str | None = None, **kwargs: Any) -> hv.HoloMap:
    """:func:`trajectories` of a voltage (default: the first recorded of uP, uP_breve, vbas, vapi, uI, ...)."""
    if variable is None:
        recorded = [v for v in VOLTAGE_VARIABLES if v in ds.data_vars]
        if not recorded:
            raise ValueError(f"no voltage recorded; variables: {', '.join(map(str, ds.data_vars))}")
        variable = recorded[0]
    return trajectories(ds, variable, **kwargs)


EVAL_EPOCH = hv.Dimension("eval_epoch", label="epochs of training")


def accuracy_curves(da: xr.DataArray, *, title: str | None = None, band: BandKind = "minmax",
                    colors: dict[str, str] | None = None, width: int = 460, height: int = 300) -> hv.Overlay:
    """Accuracy (task supervised, dim ``eval_epoch``) in percent over the epochs of training: one colour per model
    (and variant of a sweep), the mean over seeds as a line and a band over seeds."""
    metric = str(da.attrs.get("metric") or da.name or "accuracy")
    percent = (100 * da.load()).assign_attrs(da.attrs)
    ydim = hv.Dimension(metric, label=f"{da.attrs.get('long_name', metric)} (%)")
    defaults = line_colors(percent)
    colors = colors or defaults
    band_label = _BAND_NAMES.get(band, "")
    epochs = np.asarray(percent["eval_epoch"].values, dtype=float)
    elements: list[hv.Element] = []
    for model in _models(percent):
        for variant, label in _variants(percent):
            name = _line_label(model, label)
            run = percent.sel(model=model, drop=True) if "model" in percent.dims else percent
            if variant is not None:
                run = run.sel(variant=variant, drop=True)
            for element in _band_overlay(epochs, seed_band(run, band), label=name,
                                         color=colors.get(name) or defaults[name], ydim=ydim, band_label=band_label):
                elements.append(element.redim(**{TIME.name: EVAL_EPOCH}))
    return hv.Overlay(elements).opts(title=title or ydim.label, width=width, height=height, show_grid=True,
                                     legend_position="bottom_right")

