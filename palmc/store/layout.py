"""The dataset contract (docs/dataset-contract.md): variables, their dims, layers, units and symbols.

The engine keeps per-layer lists in the reference's indexing; this module maps them to network layers
(input 0 .. output L) and pads ragged layers with NaN to the widest layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

Kind = Literal["pyramidal", "apical", "interneuron", "forward", "feedback", "lateral", "input", "output", "scalar"]

VECTOR_DIMS = ("time", "layer", "neuron", "seed", "model")
WEIGHT_DIMS = ("time", "layer", "neuron", "pre", "seed", "model")
IO_DIMS = ("time", "neuron", "seed", "model")
SCALAR_DIMS = ("time", "seed", "model")


@dataclass(frozen=True)
class Variable:
    name: str
    kind: Kind
    long_name: str
    units: str
    symbol: str
    pal_only: bool = False
    fw_bw_only: bool = False

    @property
    def dims(self) -> tuple[str, ...]:
        if self.kind in ("forward", "feedback", "lateral"):
            return WEIGHT_DIMS
        if self.kind in ("input", "output"):
            return IO_DIMS
        if self.kind == "scalar":
            return SCALAR_DIMS
        return VECTOR_DIMS

    def first_layer(self) -> int:
        """Network layer of the engine's list entry 0."""
        return 2 if self.kind in ("interneuron", "lateral") else 1


_V = Variable
VARIABLES: dict[str, Variable] = {v.name: v for v in [
    _V("uP", "pyramidal", "somatic voltage of pyramidal cells", "a.u.", "u^P"),
    _V("uP_breve", "pyramidal", "prospective (lookahead) somatic voltage of pyramidal cells", "a.u.", "u-breve^P"),
    _V("rP_breve", "pyramidal", "rate of pyramidal cells, phi(u-breve^P)", "a.u.", "r-breve^P"),
    _V("rP_breve_HI", "pyramidal", "high-pass filtered pyramidal rate", "a.u.", "r-breve^P_HI", pal_only=True),
    _V("vbas", "pyramidal", "basal dendritic potential", "a.u.", "v^bas"),
    _V("noise", "pyramidal", "apical noise (zero in the output layer)", "a.u.", "xi", pal_only=True),
    _V("vapi", "apical", "apical dendritic potential (without noise)", "a.u.", "v^api"),
    _V("vapi_noise", "apical", "apical potential seen by the soma, v^api plus the previous step's noise", "a.u.",
       "v^api + xi", pal_only=True),
    _V("uI", "interneuron", "somatic voltage of interneurons", "a.u.", "u^I"),
    _V("uI_breve", "interneuron", "prospective somatic voltage of interneurons", "a.u.", "u-breve^I"),
    _V("rI_breve", "interneuron", "rate of interneurons, phi(u-breve^I)", "a.u.", "r-breve^I"),
    _V("WPP", "forward", "forward pyramid-to-pyramid weights, layer l-1 to l", "1", "W^PP"),
    _V("dWPP", "forward", "increment of W^PP computed in the step", "1", "dW^PP"),
    _V("BPP", "feedback", "feedback pyramid-to-pyramid weights, layer l+1 to apical dendrites of l", "1", "B^PP"),
    _V("dBPP", "feedback", "increment of B^PP computed in the step", "1", "dB^PP"),
    _V("BPI", "feedback", "interneuron-to-pyramid weights, interneurons of l+1 to apical dendrites of l", "1", "B^PI"),
    _V("dBPI", "feedback", "increment of B^PI computed in the step", "1", "dB^PI"),
    _V("WIP", "lateral", "pyramid-to-interneuron weights, pyramids of l-1 to interneurons of l", "1", "W^IP"),
    _V("dWIP", "lateral", "increment of W^IP computed in the step", "1", "dW^IP"),
    _V("input", "input", "input rates fed in the step (layer 0)", "a.u.", "r_0"),
    _V("target", "output", "teacher target of the output layer", "a.u.", "u^tgt", fw_bw_only=True),
    _V("error", "output", "output lookahead minus target, u-breve^P_L - u^tgt", "a.u.", "e", fw_bw_only=True),
    _V("MSE", "scalar", "squared error summed over output neurons, |u-breve^P_L - u^tgt|^2", "a.u.^2", "|e|^2",
       fw_bw_only=True),
]}

RECORDABLE: tuple[str, ...] = tuple(VARIABLES)


def layer_shapes(var: Variable, layers: tuple[int, ...]) -> list[tuple[int, tuple[int, ...]]]:
    """(network layer, shape) of each engine list entry of ``var``."""
    L = len(layers) - 1
    if var.kind == "pyramidal":
        return [(l, (layers[l],)) for l in range(1, L + 1)]
    if var.kind == "apical":
        return [(l, (layers[l],)) for l in range(1, L)]
    if var.kind == "interneuron":
        return [(l, (layers[l],)) for l in range(2, L + 1)]
    if var.kind == "forward":
        return [(l, (layers[l], layers[l - 1])) for l in range(1, L + 1)]
    if var.kind == "feedback":
        return [(l, (layers[l], layers[l + 1])) for l in range(1, L)]
    if var.kind == "lateral":
        return [(l, (layers[l], layers[l - 1])) for l in range(2, L + 1)]
    raise ValueError(f"{var.name} is not a per-layer variable")


def record_shape(var: Variable, layers: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of one record of ``var`` without the time and run axes."""
    width = max(layers)
    n_layers = len(layers)
    if var.kind in ("forward", "feedback", "lateral"):
        return (n_layers, width, width)
    if var.kind in ("input", "output"):
        return (width,)
    if var.kind == "scalar":
        return ()
    return (n_layers, width)


def variables_for(names: list[str] | tuple[str, ...], task: str, any_pal: bool) -> list[Variable]:
    """The recordable variables among ``names`` that exist for this task and set of models."""
    out = []
    for name in names:
        var = VARIABLES[name]
        if var.fw_bw_only and task != "fw_bw":
            continue
        if var.pal_only and not any_pal:
            continue
        out.append(var)
    return out


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
