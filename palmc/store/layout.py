"""The dataset contract (docs/dataset-contract.md): how the declared variables (palmc.engine.variables) are laid
out in a store.

The engine keeps per-layer lists in the reference's indexing; a store holds network layers (input 0 .. output L)
and pads ragged layers with NaN to the widest layer. This module says where each engine list entry goes in a
record, which entries of a record hold data, and the variables' dims and attributes in a store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from palmc.engine.variables import Variable

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

Placement = tuple[int, tuple[int | slice, ...], tuple[int, ...]]
"""(engine list entry, where it goes in a record, how its (R, ...) array turns into (..., R))."""


def store_dims(var: Variable, has_variants: bool) -> tuple[str, ...]:
    """Dims of ``var`` in a store: a sweep adds 'variant' after the run dims."""
    return var.dims + (("variant",) if has_variants else ())


def attributes(var: Variable) -> dict[str, str]:
    """The attributes every data variable carries."""
    return {"long_name": var.long_name, "units": var.units, "symbol": var.symbol}


def placements(var: Variable, layers: tuple[int, ...]) -> list[Placement]:
    """Where each engine list entry of a per-layer variable goes in one record (padded to the widest layer)."""
    return [(entry, (layer, *(slice(0, n) for n in shape)), (*range(1, len(shape) + 1), 0))
            for entry, (layer, shape) in enumerate(var.place.entry_shapes(layers))]


def valid_mask(var: Variable, layers: tuple[int, ...]) -> np.ndarray:
    """Where a record of ``var`` holds data (False on the NaN padding of ragged layers)."""
    mask = np.zeros(var.record_shape(layers), dtype=bool)
    if var.kind == "input":
        mask[: layers[0]] = True
    elif var.kind == "output":
        mask[: layers[-1]] = True
    elif not var.place.per_layer:
        mask[...] = True
    else:
        for _, where, _ in placements(var, layers):
            mask[where] = True
    return mask


# The outcome of each run, stored as a small integer code with a CF legend (flag_values / flag_meanings) rather
# than as text: a text variable breaks dataset-wide operations such as ds.where(...) and ds.fillna(0).
RUN_STATUSES: tuple[str, ...] = ("pending", "complete", "diverged", "failed")


def run_status_attrs() -> dict[str, object]:
    """Attributes of the ``run_status`` variable: its legend, CF style."""
    return {"long_name": "outcome of the run (see flag_meanings)",
            "flag_values": list(range(len(RUN_STATUSES))), "flag_meanings": " ".join(RUN_STATUSES)}


def encode_run_status(names: np.ndarray) -> np.ndarray:
    """Status names (any string array) as ``run_status`` codes (int8)."""
    text = np.asarray(names, dtype=object).astype(str)
    unknown = sorted(set(text.ravel()) - set(RUN_STATUSES))
    if unknown:
        raise ValueError(f"unknown run status {unknown}; known: {', '.join(RUN_STATUSES)}")
    codes = np.zeros(text.shape, dtype=np.int8)
    for code, name in enumerate(RUN_STATUSES):
        codes[text == name] = code
    return codes


def decode_run_status(values: np.ndarray, attrs: dict) -> np.ndarray:
    """``run_status`` values as status names (str array): codes through the variable's legend (``attrs``), and
    the text of stores written before the codes as it is."""
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        return values.astype(object).astype(str)
    meanings = str(attrs.get("flag_meanings", " ".join(RUN_STATUSES))).split()
    flags = list(attrs.get("flag_values", range(len(meanings))))
    names = np.full(values.shape, "unknown", dtype=object)
    for flag, meaning in zip(flags, meanings):
        names[values == int(flag)] = meaning
    return names.astype(str)


SMALL_COORDINATE = 10**6
"""Coordinates of at most this many values are read into memory when a store is opened (palmc.open)."""


def load_small_coords(ds: "xr.Dataset") -> "xr.Dataset":
    """``ds`` with its small non-index coordinates (phase, epoch, step, layer_size, conductances, ...) read into
    memory (numpy-backed), so that masks such as ``ds.where(ds.phase == "training")`` need no ``.compute()``.

    xarray opens a Zarr store's non-index coordinates as dask arrays whatever their size; data variables stay lazy.
    """
    small = {name: ds[name].variable.compute() for name in ds.coords
             if name not in ds.indexes and ds[name].size <= SMALL_COORDINATE}
    return ds.assign_coords(small) if small else ds
