"""The ``variant`` dimension of a sweep store: which records each variant has, and selecting variants.

A store of an experiment with a ``sweep`` section has a last dim ``variant`` (0..V-1) with the coordinates
``variant_label`` (e.g. "tauxi=1.0, taur=0.0"), one coordinate per swept field (named by its leaf),
``last_record`` (index along ``time`` of the variant's last record), ``presentation_steps`` (Tpres/dt),
``record_every_steps`` and ``steps_total``. Variants may record at different times: ``time`` is the sorted union
of their record times, and a variant's data are NaN where it has no record; ``epoch`` is a (time, variant)
coordinate (-1 where the variant has no record) when the variants' epochs differ. The dataset attrs ``Tpres``,
``steps_total`` and ``record_every_steps`` are those of variant 0; the helpers here set them from the selected
variants.

The helpers keep one invariant: ``last_record`` indexes the ``time`` axis of the dataset it belongs to, so every
selection of records inside the query layer goes through :func:`isel_time`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

from palmc.query.model import QueryError, available_text

__all__ = [
    "VARIANT",
    "has_variants",
    "isel_last",
    "isel_time",
    "last_record_indices",
    "per_variant_protocols",
    "recorded",
    "select_variants",
    "trim_records",
    "variant_coords",
    "variant_labels",
]

VARIANT = "variant"


def _values(da: xr.DataArray) -> np.ndarray:
    return np.asarray(da.values)


def has_variants(obj: xr.Dataset | xr.DataArray) -> bool:
    """Whether ``obj`` has a ``variant`` dim or a scalar ``variant`` coordinate (one variant selected)."""
    return VARIANT in obj.dims or VARIANT in obj.coords


def variant_coords(obj: xr.Dataset | xr.DataArray) -> list[str]:
    """Names of the non-index coordinates along ``variant`` (label, swept fields, bookkeeping)."""
    return [str(c) for c in obj.coords if c != VARIANT and obj[c].dims == (VARIANT,)]


def variant_labels(obj: xr.Dataset | xr.DataArray) -> dict[int, str]:
    """``{variant index: label}`` (the label is ``variant_label``, else the index as text)."""
    if VARIANT not in obj.coords:
        return {}
    index = np.atleast_1d(_values(obj[VARIANT]))
    if "variant_label" in obj.coords:
        labels = np.atleast_1d(np.asarray(obj["variant_label"].values, dtype=object).astype(str))
    else:
        labels = index.astype(str)
    return {int(i): str(l) for i, l in zip(index, labels)}


def recorded(ds: xr.Dataset | xr.DataArray) -> xr.DataArray | None:
    """Boolean mask of the records each variant has: dims (time, variant), or (time,) for one selected variant.

    A variant has a record at index i if i <= ``last_record``, its ``step`` is a multiple of the variant's
    ``record_every_steps`` and (with a per-variant ``epoch``) epoch >= 0. None for data without variants or time.
    """
    if not has_variants(ds) or "time" not in ds.dims:
        return None
    index = xr.DataArray(np.arange(ds.sizes["time"]), dims="time")
    mask = xr.ones_like(index, dtype=bool)
    if "last_record" in ds.coords:
        mask = mask & (index <= xr.DataArray(_values(ds["last_record"]), dims=ds["last_record"].dims))
    if "record_every_steps" in ds.coords and "step" in ds.coords and ds["step"].dims == ("time",):
        every = xr.DataArray(_values(ds["record_every_steps"]), dims=ds["record_every_steps"].dims)
        mask = mask & (xr.DataArray(_values(ds["step"]), dims="time") % every == 0)
    if "epoch" in ds.coords and VARIANT in ds["epoch"].dims:
        mask = mask & xr.DataArray(_values(ds["epoch"]) >= 0, dims=ds["epoch"].dims)
    return mask.transpose("time", ...)


def isel_time(ds: xr.Dataset, index: Sequence[int] | np.ndarray) -> xr.Dataset:
    """``ds.isel(time=index)`` (sorted indices), keeping ``last_record`` an index into the new ``time`` axis."""
    index = np.asarray(index, dtype=np.int64)
    out = ds.isel(time=index)
    if "last_record" in ds.coords:
        old = _values(ds["last_record"])
        # new position of the last kept record at or before the old last record (-1: none kept)
        new = np.searchsorted(index, old, side="right") - 1
        out = out.assign_coords(last_record=(ds["last_record"].dims, new.astype(np.int64)))
    return out


def _uniform(ds: xr.Dataset, name: str) -> int | None:
    if name not in ds.coords:
        return None
    values = np.unique(_values(ds[name]))
    return int(values[0]) if values.size == 1 else None


def per_variant_protocols(ds: xr.Dataset) -> bool:
    """Whether the variants of ``ds`` differ in their time protocol (presentation length, record times or end),
    so that presentation ends, epochs and windows must be evaluated variant by variant."""
    if VARIANT not in ds.dims or ds.sizes[VARIANT] < 2:
        return False
    if "epoch" in ds.coords and VARIANT in ds["epoch"].dims:
        return True
    bookkeeping = ("presentation_steps", "record_every_steps", "last_record", "steps_total")
    return any(name in ds.coords and _uniform(ds, name) is None for name in bookkeeping)


def trim_records(ds: xr.Dataset) -> xr.Dataset:
    """Keep only the records that at least one variant of ``ds`` has; a per-variant ``epoch`` that agrees over the
    remaining variants becomes 1-D; attrs ``Tpres``/``steps_total`` follow the variants when they share them.

    After selecting one variant this drops its NaN padding (times it does not record, records past its end), so the
    code written for stores without sweeps (per_sample_end, windows, durations in Tpres) applies unchanged.
    """
    if not has_variants(ds):
        return ds
    mask = recorded(ds)
    if mask is not None:
        keep = _values(mask.any(VARIANT) if VARIANT in mask.dims else mask)
        if not keep.any():
            raise QueryError("the selected variants have no records")
        if not keep.all():
            ds = isel_time(ds, np.flatnonzero(keep))
    if "epoch" in ds.coords and VARIANT in ds["epoch"].dims:
        epoch = _values(ds["epoch"].transpose("time", VARIANT))
        if (epoch == epoch[:, :1]).all():
            ds = ds.assign_coords(epoch=("time", epoch[:, 0], ds["epoch"].attrs))
    ds = ds.copy(deep=False)  # never change the attrs of the caller's dataset
    attrs = dict(ds.attrs)
    steps = _uniform(ds, "presentation_steps")
    if steps is not None and "dt" in attrs:
        attrs["Tpres"] = steps * float(attrs["dt"])
    for name in ("steps_total", "record_every_steps"):
        value = _uniform(ds, name)
        if value is not None:
            attrs[name] = value
    ds.attrs = attrs
    return ds


def _match(values: np.ndarray, wanted: Any) -> np.ndarray:
    """Mask of ``values`` equal to ``wanted`` (numbers with a relative tolerance, anything else as text)."""
    if isinstance(wanted, (int, float)) and not isinstance(wanted, bool) and np.issubdtype(values.dtype, np.number):
        return np.isclose(values.astype(float), float(wanted), rtol=1e-12, atol=0.0)
    return np.asarray(values, dtype=object).astype(str) == str(wanted)


def _positions(ds: xr.Dataset, wanted: Any) -> list[int]:
    """Positions along ``variant`` of the variants given by index (int) or label (str)."""
    index = _values(ds[VARIANT])
    labels = np.asarray(ds["variant_label"].values, dtype=object).astype(str) if "variant_label" in ds.coords else None
    out: list[int] = []
    for value in wanted if isinstance(wanted, (list, tuple)) else [wanted]:
        if isinstance(value, str) and labels is not None and value in labels:
            out.append(int(np.flatnonzero(labels == value)[0]))
        elif isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value in index:
            out.append(int(np.flatnonzero(index == value)[0]))
        else:
            known = [f"{i} ({l})" for i, l in variant_labels(ds).items()]
            raise QueryError(f"variant {value!r} not in the store; variants (index (label)): {available_text(known)}")
    return out


def select_variants(ds: xr.Dataset, variant: Any = None, fields: dict[str, Any] | None = None) -> xr.Dataset:
    """Select variants by ``variant`` (an index or label drops the dim, a list keeps it) and by the values of
    swept fields (``fields``: coordinate along ``variant`` -> value or list; keeps the dim), then
    :func:`trim_records` to the selected variants' records."""
    fields = fields or {}
    if (variant is not None or fields) and VARIANT not in ds.dims:
        what = "variant" if variant is not None else ", ".join(fields)
        raise QueryError(
            f"cannot select {what}: the store has no 'variant' dim (no sweep); dims: {available_text(ds.dims)}"
        )
    keep = np.ones(ds.sizes.get(VARIANT, 0), dtype=bool)
    for name, wanted in fields.items():
        values = _values(ds[name])
        hit = np.zeros(values.shape, dtype=bool)
        for value in wanted if isinstance(wanted, (list, tuple)) else [wanted]:
            hit |= _match(values, value)
        if not hit.any():
            raise QueryError(f"{name} {wanted!r} matches no variant; values of {name}: {available_text(np.unique(values))}")
        keep &= hit
    if not keep.all():
        if not keep.any():
            raise QueryError(f"no variant matches {fields}")
        ds = ds.isel({VARIANT: np.flatnonzero(keep)})
    if variant is not None:
        positions = _positions(ds, variant)
        ds = ds.isel({VARIANT: positions if isinstance(variant, (list, tuple)) else positions[0]})
    return trim_records(ds)


def last_record_indices(ds: xr.Dataset) -> xr.DataArray:
    """Per variant, the index along ``time`` of its last record in ``ds`` (-1 if it has none); dims (variant,)."""
    mask = recorded(ds)
    assert mask is not None and VARIANT in mask.dims
    values = _values(mask.transpose("time", VARIANT))
    n = values.shape[0]
    last = np.where(values.any(axis=0), n - 1 - np.argmax(values[::-1], axis=0), -1)
    return xr.DataArray(last.astype(np.int64), dims=VARIANT)


def isel_last(ds: xr.Dataset) -> xr.Dataset:
    """Each variant's last record (vectorised ``isel`` over ``variant``): ``time``/``step``/... become coordinates
    along ``variant``; a variant without records gives NaN."""
    last = last_record_indices(ds)
    if (last >= 0).all() and (last == last[0]).all():  # a shared end: a scalar time, as without sweeps
        return ds.isel(time=int(last[0])).drop_vars("last_record", errors="ignore")
    out = ds.isel(time=last.clip(min=0))
    if (last < 0).any():
        has = last >= 0
        out = out.assign({v: out[v].where(has) for v in out.data_vars if VARIANT in out[v].dims})
    return out.drop_vars("last_record", errors="ignore")
