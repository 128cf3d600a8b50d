"""The dataset contract (docs/dataset-contract.md): variables, their dims, layers, units and symbols.

The engine keeps per-layer lists in the reference's indexing; this module maps them to network layers
(input 0 .. output L) and pads ragged layers with NaN to the widest layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

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
        if var.fw_bw_only and task == "bw_only":
            continue
        if var.pal_only and not any_pal:
            continue
        out.append(var)
    return out


EVALUATION_DIMS = ("eval_epoch", "seed", "model")
"""Dims of the evaluation results (task supervised); a swept store adds 'variant'."""


@dataclass(frozen=True)
class EvaluationVariable:
    """A result of the evaluations of task supervised, one value per evaluation and run."""

    name: str
    long_name: str
    units: str


EVALUATION_VARIABLES: dict[str, EvaluationVariable] = {v.name: v for v in [
    EvaluationVariable("test_accuracy", "fraction of the test samples classified right (argmax of the output rates "
                       "at the end of each presentation; plasticity, nudging and noise off)", "1"),
    EvaluationVariable("train_accuracy", "fraction of the evaluated training samples classified right (as "
                       "test_accuracy)", "1"),
]}

