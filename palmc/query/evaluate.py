"""Lazy evaluation of :class:`~palmc.query.model.Query` objects over a contract Dataset.

Pipeline of one query (every step is an xarray operation, so a dask-backed dataset gives a dask-backed result):

1. select ``model``/``seed``/``variant`` (and swept fields) on the dataset, and the records given by
   ``time``/``phase``/``epoch`` and, if asked, ``per_sample_end`` (metrics are computed record by record, so picking
   records first is equivalent and cheaper; ``last`` without a window is also applied here);
2. compute the metric (or take the recorded variable);
3. select ``layer``/``neuron``/``pre`` (and any other dim) on the metric's result;
4. time aggregation ``every`` or ``moving_window``, then ``last``;
5. reduction over seeds.

Sweeps (dim ``variant``, see :mod:`palmc.query.variants`): selecting variants drops the records none of them has;
``last`` takes each variant's last record; when the variants' time protocols differ, steps 1-4 of queries that
depend on the protocol (``per_sample_end``, ``epoch``, ``every``, ``moving_window``) run variant by variant and the
results are joined on the union of their times (NaN where a variant has no value).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from palmc.query.metrics import METRICS, Metric, list_metrics
from palmc.query.model import (
    Aggregate,
    Query,
    QueryError,
    Reduce,
    Selection,
    available_text,
    duration_ms,
    load_queries,
    parse_query,
)
from palmc.query.variants import (
    VARIANT,
    isel_last,
    isel_time,
    per_variant_protocols,
    select_variants,
    trim_records,
    variant_labels,
)
from palmc.store.layout import load_small_coords

__all__ = ["evaluate", "open_store", "query", "run_queries", "run_query_file"]

_PRE_METRIC_DIMS = ("model", "seed")
_DIM_ORDER = ("time", "layer", "neuron", "pre", "quantile", "seed", "model", VARIANT)


def open_store(path: str | Path, **kwargs: Any) -> xr.Dataset:
    """Open a palmc Zarr store lazily (dask-backed): ``xr.open_zarr(path, consolidated=False, **kwargs)``, with
    the small coordinates (phase, epoch, step, ...) in memory."""
    return load_small_coords(xr.open_zarr(path, consolidated=False, **kwargs))


# ----------------------------------------------------------------------------------------------------------------
# selection helpers
# ----------------------------------------------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _select_dims(obj: xr.DataArray | xr.Dataset, sel: Mapping[str, Any], what: str) -> Any:
    """``obj.sel(sel)``, checking that every dim and value exists (QueryError listing what is available)."""
    for dim, value in sel.items():
        if dim not in obj.dims:
            raise QueryError(f"unknown dim {dim!r} for {what}; dims: {available_text(obj.dims)}")
        available = list(obj[dim].values)
        missing = [v for v in _as_list(value) if v not in available]
        if missing:
            raise QueryError(
                f"{dim} {', '.join(map(repr, missing))} not in {what}; available {dim}s: {available_text(available)}"
            )
    return obj.sel(dict(sel)) if sel else obj


def _strings(values: Any) -> np.ndarray:
    """Any string array (fixed width, object or numpy's StringDType from Zarr v3) as a plain ``str`` array."""
    return np.asarray(values, dtype=object).astype(str)


def _dt(ds: xr.Dataset) -> float | None:
    return float(ds.attrs["dt"]) if "dt" in ds.attrs else None


def _steps(ds: xr.Dataset) -> np.ndarray:
    if "step" in ds.coords:
        return np.asarray(ds["step"].values, dtype=np.int64)
    dt = _dt(ds)
    if dt is None:
        raise QueryError(f"need the coordinate 'step' or the attribute 'dt'; attrs: {available_text(ds.attrs)}")
    return np.rint(np.asarray(ds["time"].values) / dt).astype(np.int64)


def _presentation_ends(ds: xr.Dataset) -> np.ndarray:
    """Mask of the records that end a presentation: steps S + k*Tp (k >= 0), S = settling steps, Tp = Tpres/dt."""
    for attr in ("Tpres", "dt"):
        if attr not in ds.attrs:
            raise QueryError(f"per_sample_end needs the attribute {attr!r}; attrs: {available_text(ds.attrs)}")
    tp = int(round(float(ds.attrs["Tpres"]) / float(ds.attrs["dt"])))
    steps = _steps(ds)
    settling = np.zeros(steps.shape, dtype=bool)
    if "epoch" in ds.coords and ds["epoch"].dims == ("time",):
        settling = np.asarray(ds["epoch"].values) == 0
    elif "phase" in ds.coords:
        settling = _strings(ds["phase"].values) == "settling"
    s = int(steps[settling].max()) if settling.any() else 0
    return (steps >= s) & ((steps - s) % max(tp, 1) == 0)


def _record_indices(ds: xr.Dataset, select: Selection, agg: Aggregate) -> np.ndarray | None:
    """Indices along ``time`` of the records kept by the time/phase/epoch selection and ``per_sample_end``."""
    wants_time = select.time is not None or select.phase is not None or select.epoch is not None
    wants_time = wants_time or agg.per_sample_end or agg.last or agg.every is not None
    if "time" not in ds.dims:
        if wants_time or agg.moving_window is not None:
            raise QueryError(f"the dataset has no 'time' dim; dims: {available_text(ds.dims)}")
        return None
    n = ds.sizes["time"]
    mask = np.ones(n, dtype=bool)
    times = np.asarray(ds["time"].values, dtype=float)
    if select.time is not None:
        t0, t1 = select.time
        dt = _dt(ds)
        eps = 1e-6 * dt if dt else 1e-9 * max(1.0, abs(t0), abs(t1))
        mask &= (times >= t0 - eps) & (times <= t1 + eps)
        if not mask.any():
            raise QueryError(
                f"no records in the time range [{t0}, {t1}] ms; recorded times: {times.min()} .. {times.max()} ms"
            )
    if select.phase is not None:
        if "phase" not in ds.coords:
            raise QueryError(f"the dataset has no coordinate 'phase'; coordinates: {available_text(ds.coords)}")
        phases = _strings(ds["phase"].values)
        if select.phase not in set(phases):
            raise QueryError(f"phase {select.phase!r} not in the store; phases: {available_text(sorted(set(phases)))}")
        mask &= phases == select.phase
    if select.epoch is not None:
        if "epoch" not in ds.coords:
            raise QueryError(f"the dataset has no coordinate 'epoch'; coordinates: {available_text(ds.coords)}")
        if ds["epoch"].dims != ("time",):  # evaluate() splits such stores by variant; this guards other callers
            raise QueryError(
                f"the variants record different epochs (coordinate 'epoch' has dims {ds['epoch'].dims}): "
                "select one variant (select: {variant: ...}) to select epochs"
            )
        epochs = np.asarray(ds["epoch"].values)
        wanted = _as_list(select.epoch)
        missing = [e for e in wanted if e not in set(epochs.tolist())]
        if missing:
            raise QueryError(f"epoch {missing} not in the store; epochs: {available_text(sorted(set(epochs.tolist())))}")
        mask &= np.isin(epochs, wanted)
    if agg.per_sample_end:
        mask &= _presentation_ends(ds)
    if not mask.any():
        raise QueryError("the time/phase/epoch selection and per_sample_end leave no records")
    return None if mask.all() else np.flatnonzero(mask)


# ----------------------------------------------------------------------------------------------------------------
# aggregation and reduction
# ----------------------------------------------------------------------------------------------------------------


def _time_coords(da: xr.DataArray) -> list[str]:
    return [c for c in da.coords if c != "time" and da[c].dims == ("time",)]


def _segments(ds: xr.Dataset) -> np.ndarray:
    """Start times (ms) of settling and of each epoch, then the end of the run: the anchors of ``every`` blocks.

    From the attrs ``settling_steps`` (older stores: the last settling record) and ``steps_total``, and the number of
    epochs in the ``epoch`` coordinate. Without them (a dataset that is not a palmc store), blocks start at t = 0.
    """
    dt = _dt(ds)
    if dt is None or "epoch" not in ds.coords or ds["epoch"].dims != ("time",) or "steps_total" not in ds.attrs:
        return np.array([0.0, np.inf])
    epochs = np.asarray(ds["epoch"].values)
    if "settling_steps" in ds.attrs:
        settling = int(ds.attrs["settling_steps"])
    else:
        steps = _steps(ds)
        settling = int(steps[epochs == 0].max()) if (epochs == 0).any() else 0
    n_epochs, total = int(epochs.max()), int(ds.attrs["steps_total"])
    if n_epochs < 1:
        return np.array([0.0, total * dt])
    per_epoch = (total - settling) / n_epochs
    starts = [0, *(settling + e * per_epoch for e in range(n_epochs))]
    return np.array([*starts, total], dtype=float) * dt


def _block_means(da: xr.DataArray, block_ms: float, dt: float | None, segments: np.ndarray) -> xr.DataArray:
    """Means over blocks of ``time`` anchored at each segment start t_s (settling, then each epoch): block k of a
    segment holds (t_s + k*N, t_s + (k+1)*N] and is labelled by its end, or by the segment's end if that comes
    first (so the last block of the run is labelled within the run); NaNs skipped."""
    times = np.asarray(da["time"].values, dtype=float)
    eps = 0.5 * dt if dt else 1e-9 * block_ms
    segment = np.clip(np.searchsorted(segments, times - eps, side="right") - 1, 0, len(segments) - 2)
    start, end = segments[segment], segments[segment + 1]
    block = np.floor((times - eps - start) / block_ms)
    label = np.minimum(start + (block + 1) * block_ms, end)
    labels, first, counts = np.unique(label, return_index=True, return_counts=True)
    da = da.drop_vars(_time_coords(da))
    regular = bool(np.all(np.diff(label) >= 0)) and len(set(counts.tolist())) == 1
    if regular:
        out = da.coarsen(time=int(counts[0])).mean()
    else:
        out = da.assign_coords(_block=("time", label)).groupby("_block").mean("time")
        out = out.rename(_block="time")
    return out.assign_coords(time=labels)


def _still_writing(ds: xr.Dataset) -> bool:
    """Whether some runs of the store may not have reached their last record (running, interrupted, failed)."""
    return str(ds.attrs.get("status", "complete")) != "complete"


def _last_written(ds: xr.Dataset) -> xr.DataArray:
    """Index along ``time`` of each run's latest written record (dims seed, model[, variant]): records not yet
    written (and a variant's records after its end) are NaN in every recorded variable (read from the first)."""
    name = next(str(v) for v in ds.data_vars if "time" in ds[v].dims)
    runs = [d for d in ("seed", "model", VARIANT) if d in ds[name].dims]
    written = ds[name].notnull().any([d for d in ds[name].dims if d not in ("time", *runs)])
    index = xr.DataArray(np.arange(ds.sizes["time"]), dims="time")
    return index.where(written, 0).max("time").compute()


def _moving_mean(da: xr.DataArray, window_ms: float) -> xr.DataArray:
    """Trailing mean over the last ``window_ms`` (in records: round(window / record spacing)); NaNs skipped;
    the first window-1 records (no full window) are dropped."""
    times = np.asarray(da["time"].values, dtype=float)
    if times.size < 2:
        raise QueryError(f"moving_window needs at least 2 records, the selection has {times.size}")
    spacing = float(np.median(np.diff(times)))
    window = max(1, int(round(window_ms / spacing)))
    if window > times.size:
        raise QueryError(
            f"moving_window of {window_ms} ms = {window} records is longer than the {times.size} selected records"
        )
    return da.rolling(time=window, min_periods=1).mean().isel(time=slice(window - 1, None))


def _reduce(da: xr.DataArray, red: Reduce, what: str) -> xr.DataArray:
    if red.how == "none":
        return da
    unknown = [d for d in red.over if d not in da.dims and d not in da.coords]
    if unknown:
        raise QueryError(f"cannot reduce {what} over {unknown}: no such dim; dims: {available_text(da.dims)}")
    dims = [d for d in red.over if d in da.dims]
    if not dims:  # reduced dims already selected to a single value
        return da
    if da.chunks is not None and red.how in ("median", "quantile"):
        da = da.chunk({d: -1 for d in dims})
    if red.how == "quantile":
        out = da.quantile(red.quantile, dim=dims, keep_attrs=True)
        # quantile drops every coordinate that is not a dim: keep those the reduction leaves meaningful (the time
        # of a value after `last`, the selected model or layer, step, phase, ...)
        kept = {c: da[c] for c in da.coords if c not in out.coords and not set(da[c].dims) & set(dims)}
        return out.assign_coords(kept)
    return getattr(da, red.how)(dim=dims, keep_attrs=True)


def _order(da: xr.DataArray) -> xr.DataArray:
    first = [d for d in _DIM_ORDER if d in da.dims]
    return da.transpose(*first, *[d for d in da.dims if d not in first])


# ----------------------------------------------------------------------------------------------------------------
# evaluation
# ----------------------------------------------------------------------------------------------------------------


def _resolve(q: Query, ds: xr.Dataset) -> Metric | str:
    """The registered metric, or the name of a recorded variable."""
    if q.variable is not None:
        if q.variable not in ds.data_vars:
            raise QueryError(
                f"unknown variable {q.variable!r}; variables: {available_text(ds.data_vars)}; "
                f"metrics: {available_text(list_metrics())}"
            )
        if q.args:
            raise QueryError(f"a recorded variable takes no args, got {available_text(q.args)}")
        return q.variable
    name = q.target
    if name in METRICS:
        return METRICS[name]
    if name in ds.data_vars:
        if q.args:
            raise QueryError(f"a recorded variable takes no args, got {available_text(q.args)}")
        return name
    raise QueryError(
        f"unknown metric {name!r}; metrics: {available_text(list_metrics())}; "
        f"recorded variables (usable as metrics): {available_text(ds.data_vars)}"
    )


def _protocol_dependent(q: Query) -> bool:
    """Whether the query's records or windows depend on the time protocol (presentation length, epochs)."""
    agg = q.aggregate
    return agg.per_sample_end or q.select.epoch is not None or agg.every is not None or agg.moving_window is not None


def _evaluate_records(
    q: Query, ds: xr.Dataset, target: Metric | str, post: Mapping[str, Any], what: str
) -> xr.DataArray:
    """Steps 1 (records) to 4 of the pipeline on a dataset whose variants, if any, share their time protocol."""
    segments = _segments(ds) if q.aggregate.every is not None else None
    idx = _record_indices(ds, q.select, q.aggregate)
    if idx is not None:
        ds = isel_time(ds, idx)
    window = q.aggregate.every is not None or q.aggregate.moving_window is not None
    if q.aggregate.last and not window:
        if _still_writing(ds) and any("time" in ds[v].dims for v in ds.data_vars):
            ds = ds.isel(time=_last_written(ds))  # each run's latest record, not the NaN of records to come
        elif VARIANT in ds.dims:  # each variant's own last record, not the NaN padding after a shorter variant's end
            ds = isel_last(ds)
        else:
            ds = ds.isel(time=-1)

    out = target(ds, **q.args) if isinstance(target, Metric) else ds[target]
    if q.aggregate.last and "eval_epoch" in out.dims:
        out = out.isel(eval_epoch=-1)  # results of evaluations (task supervised): the last one
    out = _select_dims(out, post, f"the result of {what}")

    if q.aggregate.every is not None:
        out = _block_means(out, duration_ms(q.aggregate.every, ds.attrs), _dt(ds), segments)
    elif q.aggregate.moving_window is not None:
        out = _moving_mean(out, duration_ms(q.aggregate.moving_window, ds.attrs))
    if q.aggregate.last and window:
        out = out.isel(time=-1)
    return out


def _per_variant(q: Query, ds: xr.Dataset, target: Metric | str, post: Mapping[str, Any], what: str) -> xr.DataArray:
    """Evaluate variant by variant (each on its own records and protocol) and join the results along ``variant``."""
    labels = variant_labels(ds)
    parts = []
    for i, index in enumerate(labels):
        one = trim_records(ds.isel({VARIANT: [i]}))  # a size-1 dim, so the parts concatenate along it
        try:
            parts.append(_evaluate_records(q, one, target, post, what))
        except QueryError as err:
            raise QueryError(f"variant {index} ({labels[index]}): {err}") from None
    return _concat_variants(parts, ds)


def _concat_variants(parts: list[xr.DataArray], ds: xr.Dataset) -> xr.DataArray:
    """Join per-variant results on the union of their times. Coordinates along ``time`` (step, phase) are taken
    from ``ds`` again; ``epoch`` becomes (time, variant) with -1 where a variant has no value, as in the store."""
    along_time = [str(c) for c in ds.coords if c != "time" and "time" in ds[c].dims]
    fixed: list[xr.DataArray] = []
    epochs: list[xr.DataArray] = []
    for part in parts:
        if "time" in part.dims:
            own = [c for c in part.coords if c != "time" and part[c].dims == ("time",)]
            if "epoch" in own:
                epochs.append(part["epoch"].reset_coords(drop=True).expand_dims({VARIANT: part[VARIANT].values}))
            part = part.drop_vars(own)
        else:  # `last`: the time of each variant's value becomes a coordinate along variant
            scalars = [c for c in part.coords if part[c].ndim == 0 and (c == "time" or c in along_time)]
            part = part.assign_coords({c: (VARIANT, [part[c].values.item()]) for c in scalars})
        fixed.append(part.drop_vars("last_record", errors="ignore"))
    out = xr.concat(fixed, dim=VARIANT, join="outer", coords="minimal", compat="override", combine_attrs="override")
    if "time" in out.dims:
        times = out["time"].values
        if np.isin(times, ds["time"].values).all():  # record times (not block labels): reattach step, phase
            for c in along_time:
                if c != "epoch" and ds[c].dims == ("time",):
                    out = out.assign_coords({c: ("time", ds[c].sel(time=times).values, ds[c].attrs)})
        if len(epochs) == len(parts):
            epoch = xr.concat(epochs, dim=VARIANT, join="outer", coords="minimal", fill_value=-1)
            epoch = epoch.reindex(time=times, fill_value=-1)
            out = out.assign_coords(epoch=epoch.transpose("time", VARIANT).astype(np.int64))
    return out


def _split_selection(ds: xr.Dataset, select: Selection) -> tuple[dict[str, Any], Any, dict[str, Any], dict[str, Any]]:
    """(model/seed selection, variant selection, swept-field selection, post-metric selection)."""
    dims = select.dims()
    variant = dims.pop(VARIANT, None)
    fields = {k: dims.pop(k) for k in list(dims) if k not in ds.dims and k in ds.coords and ds[k].dims == (VARIANT,)}
    pre = {k: v for k, v in dims.items() if k in _PRE_METRIC_DIMS}
    post = {k: v for k, v in dims.items() if k not in _PRE_METRIC_DIMS}
    return pre, variant, fields, post


def evaluate(query: Query | Mapping[str, Any], ds: xr.Dataset, name: str | None = None) -> xr.DataArray:
    """Evaluate one query on ``ds`` and return a (lazy, if ``ds`` is dask-backed) DataArray.

    The result keeps the dims that the selection, aggregation and reduction leave (e.g. ``time``, ``layer``,
    ``seed``/``quantile``, ``model``, ``variant``); its attrs record the metric, units and the query as JSON.
    """
    q = parse_query(dict(query) if isinstance(query, Mapping) else query)
    target = _resolve(q, ds)
    if isinstance(target, Metric):
        target.check(ds, q.args)
    what = f"{q.target!r}"

    pre, variant, fields, post = _split_selection(ds, q.select)
    ds = _select_dims(ds, pre, "the store")
    ds = select_variants(ds, variant, fields)
    split = per_variant_protocols(ds) and _protocol_dependent(q)
    out = _per_variant(q, ds, target, post, what) if split else _evaluate_records(q, ds, target, post, what)
    if split or "time" not in out.dims or q.aggregate.every is not None or q.aggregate.moving_window is not None:
        # last_record indexes the records along `time`; it means nothing once records are aggregated or joined
        out = out.drop_vars("last_record", errors="ignore")

    out = _reduce(out, q.reduce, what)
    if VARIANT in out.dims:  # some reductions (quantile) drop the variant's label and swept fields
        out = out.assign_coords({c: ds[c] for c in ds.coords if ds[c].dims == (VARIANT,) and c not in out.coords
                                 and c != "last_record"})
    out = _order(out)
    attrs = dict(out.attrs)
    attrs.setdefault("long_name", q.target)
    attrs.setdefault("units", "")
    attrs["metric"] = q.target
    attrs["query"] = q.model_dump_json(exclude_defaults=True)
    out.attrs = attrs
    return out.rename(name or q.target)


def query(
    ds: xr.Dataset,
    metric: str | None = None,
    *,
    variable: str | None = None,
    args: Mapping[str, Any] | None = None,
    select: Mapping[str, Any] | None = None,
    aggregate: str | Mapping[str, Any] | None = None,
    reduce: str | list[float] | Mapping[str, Any] | None = None,
    name: str | None = None,
) -> xr.DataArray:
    """Notebook entry point: ``query(ds, "angle_BPP_WPPT", select={"phase": "training"}, aggregate="last",
    reduce={"quantile": [0.1, 0.9]})``. Same fields as the YAML query; see :class:`~palmc.query.model.Query`."""
    spec: dict[str, Any] = {"metric": metric, "variable": variable}
    for key, value in (("args", args), ("select", select), ("aggregate", aggregate), ("reduce", reduce)):
        if value is not None:
            spec[key] = dict(value) if isinstance(value, Mapping) else value
    return evaluate(parse_query(spec), ds, name=name)


def run_queries(ds: xr.Dataset, queries: Mapping[str, Query | Mapping[str, Any]]) -> dict[str, xr.DataArray]:
    """Evaluate several named queries on ``ds`` (results stay lazy)."""
    return {name: evaluate(q, ds, name=name) for name, q in queries.items()}


def run_query_file(
    store_or_dataset: str | Path | xr.Dataset, queries_yaml_path: str | Path
) -> dict[str, xr.DataArray | xr.Dataset]:
    """Evaluate every query of a YAML file (``queries: {name: {...}}``) on a store path or an open Dataset."""
    queries = load_queries(queries_yaml_path)
    ds = store_or_dataset if isinstance(store_or_dataset, xr.Dataset) else open_store(store_or_dataset)
    return dict(run_queries(ds, queries))
