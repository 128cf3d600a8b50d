"""Presenting and saving query results: a readable text table, and .zarr / .nc / .csv files.

File layout (.zarr and .nc): one Dataset with one variable per query, named after the query. Dims keep their
names (``time``, ``layer``, ...) when all results that use them share the same coordinate values; when two results
disagree (e.g. block-averaged vs raw ``time``), the later one's dim is renamed ``<dim>__<query>``. Coordinates that
label values without being dims (the ``time`` of ``aggregate: last``, a selected ``layer`` or ``model``) are kept as
``<coord>__<query>``. Each variable's attributes ``query_dims`` and ``query_coords`` hold the original names, so
:func:`load_results` restores them.
CSV is a long table: one row per value, columns ``query``, ``metric``, the dims and labelling coordinates,
``value`` and ``units``; integers stay integers and padding rows are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from palmc.query.model import QueryError

__all__ = ["format_table", "load_results", "save_results", "to_frame"]

Result = xr.DataArray | xr.Dataset


def _arrays(results: Mapping[str, Result]) -> dict[str, xr.DataArray]:
    """Flatten results to named DataArrays (a Dataset result contributes ``<name>.<variable>``)."""
    out: dict[str, xr.DataArray] = {}
    for name, res in results.items():
        if isinstance(res, xr.Dataset):
            for var in res.data_vars:
                out[f"{name}.{var}"] = res[var]
        else:
            out[name] = res
    return out


def _fmt(value: Any, float_format: str) -> str:
    if isinstance(value, (float, np.floating)):
        return "nan" if np.isnan(value) else format(float(value), float_format)
    if isinstance(value, (bytes, np.bytes_)):
        return value.decode()
    return str(value)


_ORDER = ("time", "layer", "neuron", "pre", "quantile", "seed", "model", "variant")
_SHOWN_COORDS = ("time", "variant")
"""Coordinates shown in their own column also when they are not dims: the time of a value after ``aggregate:
last`` (a scalar, or one per variant when the variants end at different times) and a selected variant."""


def _columns(da: xr.DataArray) -> list[str]:
    extra = [c for c in _SHOWN_COORDS if c in da.coords and c not in da.dims and set(da[c].dims) <= set(da.dims)]
    return list(da.dims) + extra


def _cell(item: xr.DataArray, column: str, float_format: str) -> str:
    """The value of ``column`` in a one-value DataArray ``item``; a variant is shown with its label."""
    if column not in item.coords or item[column].ndim != 0:
        return ""
    text = _fmt(item[column].item(), float_format)
    if column == "variant" and "variant_label" in item.coords and item["variant_label"].ndim == 0:
        text += f": {_fmt(item['variant_label'].item(), float_format)}"
    return text


def format_table(results: Mapping[str, Result], max_rows: int = 40, float_format: str = ".6g") -> str:
    """A text table of the (small) results: one row per value, one column per dim (computes the results).

    Results with more than ``max_rows`` values are listed by their dims and sizes only. The ``time`` of a value
    without a time axis (e.g. after ``aggregate: last``) and a selected variant are shown in their own columns;
    variants are shown as ``index: label``.
    """
    arrays = {name: da.compute() for name, da in _arrays(results).items()}
    dims: list[str] = []
    for da in arrays.values():
        for d in _columns(da):
            if d not in dims:
                dims.append(d)
    dims = [d for d in _ORDER if d in dims] + [d for d in dims if d not in _ORDER]
    header = ["query", "metric", *dims, "value", "units"]
    rows: list[list[str]] = []
    notes: list[str] = []
    for name, da in arrays.items():
        metric = str(da.attrs.get("metric", da.name))
        units = str(da.attrs.get("units", ""))
        if da.size > max_rows:
            shape = ", ".join(f"{d}: {n}" for d, n in da.sizes.items())
            notes.append(f"{name} ({metric}): {da.size} values ({shape}), not tabulated; save it instead")
            continue
        flat = da.stack(_row=list(da.dims)) if da.dims else da.expand_dims("_row")
        for i in range(flat.sizes["_row"]):
            item = flat.isel(_row=i)
            shown = _columns(da)  # a dim selected away elsewhere (e.g. layer: 1) stays blank, as before sweeps
            cells = [_cell(item, d, float_format) if d in shown else "" for d in dims]
            rows.append([name, metric, *cells, _fmt(item.item(), float_format), units])
    lines: list[str] = []
    if rows:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
        lines.append("  ".join("-" * w for w in widths))
        lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
    if notes:
        if lines:
            lines.append("")
        lines.extend(notes)
    return "\n".join(lines) if lines else "(no results)"


_ROW_COORDS = ("time", "step", "epoch", "phase", "layer", "neuron", "pre", "seed", "model", "variant",
               "variant_label", "quantile")
"""Coordinates that label a value, kept as columns (or as coordinates in .nc/.zarr) also when they are not dims:
the time of a value after ``aggregate: last``, a selected model or layer, a variant's label."""
_STRUCTURAL = ("layer", "neuron", "pre")
"""Dims along which a store pads (layers where a variable does not exist, neurons beyond a layer's width)."""


def _label_coords(da: xr.DataArray) -> list[str]:
    """The coordinates of ``da`` that are not dims but label its values (along its dims, or scalars)."""
    return [c for c in _ROW_COORDS if c in da.coords and c not in da.dims and set(da[c].dims) <= set(da.dims)]


def _without_padding(frame: pd.DataFrame, dims: tuple[str, ...]) -> pd.DataFrame:
    """Drop the rows of padding: positions along the structural dims (and a variant's times outside its own time
    course) whose value is NaN in every row, i.e. for every seed, model and time. A run's own NaN (a diverged run)
    stays, as long as one other row at that position has a value."""
    variant_times = ["time", "variant"] if {"time", "variant"} <= set(dims) else []
    for group in ([d for d in _STRUCTURAL if d in dims], variant_times):
        if group:
            keep = frame["value"].notna().groupby([frame[c] for c in group]).transform("any")
            frame = frame[keep.to_numpy(dtype=bool)]
    return frame.reset_index(drop=True)


def to_frame(results: Mapping[str, Result]) -> pd.DataFrame:
    """Long table of all results (computes them): columns ``query``, ``metric``, one column per dim and per
    labelling coordinate (the time of ``aggregate: last``, a selected model or layer), ``value`` and ``units``.

    Integer coordinates stay integers (nullable ``Int64`` where another query has no such column); padding rows
    (see :func:`_without_padding`) are left out.
    """
    frames = []
    integers: set[str] = set()
    for name, da in _arrays(results).items():
        da = da.compute()
        labels = _label_coords(da)
        da = da.drop_vars([c for c in da.coords if c not in da.dims and c not in labels])
        if da.dims:
            frame = da.to_dataframe(name="value").reset_index()
        else:
            frame = pd.DataFrame({"value": [da.item()], **{c: [da[c].item()] for c in labels}})
        frame = _without_padding(frame, da.dims)
        integers |= {c for c in frame.columns if c != "value" and pd.api.types.is_integer_dtype(frame[c])}
        frame.insert(0, "metric", str(da.attrs.get("metric", da.name)))
        frame.insert(0, "query", name)
        frame["units"] = str(da.attrs.get("units", ""))
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["query", "metric", "value", "units"])
    table = pd.concat(frames, ignore_index=True, sort=False)
    for column in integers:
        table[column] = table[column].astype("Int64")
    ordered = [c for c in _ORDER + _ROW_COORDS if c in table.columns]
    columns = ["query", "metric", *dict.fromkeys(ordered), *[c for c in table.columns if c not in
               ("query", "metric", "value", "units", *ordered)], "value", "units"]
    return table[columns]


def _combine(results: Mapping[str, Result]) -> xr.Dataset:
    """One Dataset with one variable per result; conflicting dims are renamed ``<dim>__<query>``."""
    indexes: dict[str, xr.DataArray] = {}
    variables: dict[str, xr.DataArray] = {}
    for name, da in _arrays(results).items():
        da = da.compute()
        renames: dict[str, str] = {}
        for d in da.dims:
            coord = da[d] if d in da.coords else xr.DataArray(np.arange(da.sizes[d]), dims=d)
            known = indexes.get(d)
            if known is None:
                indexes[d] = coord
            elif not (known.shape == coord.shape and np.array_equal(known.values, coord.values)):
                renames[d] = f"{d}__{name}"
        # coordinates that label the values (the time of `last`, a selected layer) are kept under the name
        # <coord>__<query>, as they would clash between results; the others (conductances, ...) are dropped
        labels = _label_coords(da)
        da = da.drop_vars([c for c in da.coords if c not in da.dims and c not in labels])
        attrs = {k: v for k, v in da.attrs.items() if isinstance(v, (str, int, float))}
        attrs["query_dims"] = ",".join(map(str, da.dims))
        attrs["query_coords"] = ",".join(labels)
        da = da.rename({**renames, **{c: f"{c}__{name}" for c in labels}})
        da.attrs = attrs
        variables[name] = da.rename(name)
    return xr.Dataset(variables, attrs={"queries": ",".join(variables)})


def save_results(results: Mapping[str, Result], out_path: str | Path) -> Path:
    """Compute and write the results; the format follows the suffix: ``.zarr``, ``.nc`` (netCDF) or ``.csv``."""
    path = Path(out_path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".zarr", ".nc"):
        raise QueryError(f"cannot save results to {path.name!r}: use one of the suffixes .zarr, .nc, .csv")
    if suffix == ".zarr":
        # a variable's name is a folder of the Zarr store: '/' would nest it, and xarray refuses it
        bad = [name for name in results if "/" in name or name.startswith(".")]
        if bad:
            raise QueryError(f"cannot save query {bad[0]!r} to {path}: a query written to .zarr needs a name "
                             "without '/' and not starting with '.' (rename it, or write .nc or .csv)")
        if path.exists() and not (path / "zarr.json").is_file():
            raise QueryError(f"{path} exists and is not a Zarr store; refusing to replace it")
    try:
        if suffix == ".csv":
            to_frame(results).to_csv(path, index=False)
        elif suffix == ".zarr":
            combined = _combine(results)
            for variable in combined.variables.values():
                variable.encoding = {}  # the source store's chunks and shards do not fit the results' shapes
            combined.to_zarr(path, mode="w", consolidated=False)
        else:
            _combine(results).to_netcdf(path)
    except OSError as err:
        raise QueryError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def load_results(path: str | Path) -> dict[str, xr.DataArray]:
    """Read results written by :func:`save_results` (.zarr or .nc) back into ``{query: DataArray}``."""
    p = Path(path)
    if p.suffix.lower() == ".zarr":
        ds = xr.open_zarr(p, consolidated=False).load()
    elif p.suffix.lower() == ".nc":
        with xr.open_dataset(p) as opened:
            ds = opened.load()
    else:
        raise QueryError(f"cannot load results from {p.name!r}: use .zarr or .nc (read .csv with pandas)")
    order = [q for q in str(ds.attrs.get("queries", "")).split(",") if q in ds.data_vars]
    out: dict[str, xr.DataArray] = {}
    for name in order + [v for v in ds.data_vars if v not in order]:
        da = ds[name]
        original = [d for d in str(da.attrs.pop("query_dims", "")).split(",") if d]
        labels = [c for c in str(da.attrs.pop("query_coords", "")).split(",") if c]
        own = {f"{c}__{name}": c for c in labels if f"{c}__{name}" in da.coords}
        da = da.drop_vars([c for c in da.coords if c not in da.dims and c not in own])
        if len(original) == da.ndim:
            da = da.rename({cur: orig for cur, orig in zip(da.dims, original) if cur != orig})
        out[str(name)] = da.rename(own) if own else da
    return out
