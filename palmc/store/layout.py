"""The dataset contract (docs/dataset-contract.md): how the declared variables (palmc.engine.variables) are laid
out in a store.

The engine keeps per-layer lists in the reference's indexing; a store holds network layers (input 0 .. output L)
and pads ragged layers with NaN to the widest layer. This module says where each engine list entry goes in a
record, which entries of a record hold data, and the variables' dims and attributes in a store.
"""

from __future__ import annotations

import numpy as np

from palmc.engine.variables import Variable

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

