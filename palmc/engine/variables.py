"""Every state field and recorded variable of the model, declared once.

A declaration says where a quantity lives in the network (its *place*: which cells or synapses, hence its dims,
the network layers where it exists and the shape of each entry), its units, long name and paper symbol, and which
models and tasks have it. The engine's ``State`` fields, the compiled kernels' packed field tuples, the store's
data variables (store/layout.py), the recorder, the plan's record sizes and the schema's allowed
``recording.variables`` are all generated from, or checked against, these tables (tests/test_variables.py).

Network layers are numbered input 0 .. output L. The engine keeps per-layer lists in the reference's indexing:
entry 0 of a list is the place's ``first`` network layer (see state.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from palmc.engine.params import ModelKind, Task

MODEL_KINDS: frozenset[str] = frozenset(get_args(ModelKind))
TASKS: frozenset[str] = frozenset(get_args(Task))

RUN_DIMS = ("seed", "model")  # a run's position in a store (a sweep adds 'variant' after them)

PlaceName = Literal["pyramidal", "apical", "interneuron", "forward", "feedback", "lateral", "input", "output",
                    "scalar", "run"]


@dataclass(frozen=True)
class Place:
    """Where a quantity lives: its record dims (time and run dims aside) and, for per-layer quantities, the
    network layers of the engine's list entries and the presynaptic layer of a weight."""

    name: PlaceName
    dims: tuple[str, ...]
    first: int = 0  # network layer of list entry 0
    below_output: int = 0  # the last entry is network layer L - below_output
    pre: int | None = None  # presynaptic layer of a weight, relative to its postsynaptic layer

    @property
    def per_layer(self) -> bool:
        return "layer" in self.dims

    def layers(self, n_layers: int) -> range:
        """Network layers where the quantity exists, in list order (``n_layers`` = L + 1, input included)."""
        if not self.per_layer:
            raise ValueError(f"a {self.name} quantity is not kept per layer")
        return range(self.first, n_layers - self.below_output)

    def entry_shapes(self, layers: tuple[int, ...]) -> list[tuple[int, tuple[int, ...]]]:
        """(network layer, shape) of each engine list entry, for a network of widths ``layers``."""
        return [(layer, (layers[layer],) if self.pre is None else (layers[layer], layers[layer + self.pre]))
                for layer in self.layers(len(layers))]

    def layers_text(self) -> str:
        """The layers where the quantity exists, as the dataset contract writes them (``1..L-1``)."""
        if not self.per_layer:
            return {"input": "0", "output": "L"}.get(self.name, "-")
        return f"{self.first}..L" + (f"-{self.below_output}" if self.below_output else "")


VECTOR = ("layer", "neuron")
WEIGHT = ("layer", "neuron", "pre")

PLACES: dict[str, Place] = {p.name: p for p in [
    Place("pyramidal", VECTOR, first=1),  # every pyramidal population, hidden and output
    Place("apical", VECTOR, first=1, below_output=1),  # apical dendrites: hidden pyramidal cells only
    Place("interneuron", VECTOR, first=2),  # interneurons of layer l mirror the pyramidal cells of layer l
    Place("forward", WEIGHT, first=1, pre=-1),  # pyramids of l-1 to pyramids of l
    Place("feedback", WEIGHT, first=1, below_output=1, pre=+1),  # layer l+1 to apical dendrites of l
    Place("lateral", WEIGHT, first=2, pre=-1),  # pyramids of l-1 to interneurons of l
    Place("input", ("neuron",)),  # the input layer 0
    Place("output", ("neuron",)),  # the output layer L
    Place("scalar", ()),  # one value per run and record
    Place("run", ()),  # engine bookkeeping, one value per run (never recorded)
]}


@dataclass(frozen=True)
class Variable:
    """One quantity of the model: a state field, a recordable variable, or both."""

    name: str
    place: Place
    long_name: str
    units: str
    symbol: str
    models: frozenset[str] = MODEL_KINDS  # model kinds that have it (recorded as NaN for the others)
    tasks: frozenset[str] = TASKS  # tasks where it exists
    state: bool = True  # a field of the engine's State
    recordable: bool = True  # a data variable a store may hold
    reads: tuple[str, ...] | None = None  # state fields a record of it reads (default: its own field, if any)

    @property
    def kind(self) -> PlaceName:
        return self.place.name

    @property
    def dims(self) -> tuple[str, ...]:
        """Dims of the variable in a store without a sweep."""
        return ("time", *self.place.dims, *RUN_DIMS)

    @property
    def fields_read(self) -> tuple[str, ...]:
        """The State fields a record of this variable reads."""
        if self.reads is not None:
            return self.reads
        return (self.name,) if self.state else ()

    def exists_for(self, task: str, model_kinds: set[str] | frozenset[str]) -> bool:
        """Whether the variable exists in ``task`` for at least one of ``model_kinds``."""
        return task in self.tasks and bool(self.models & set(model_kinds))

    def record_shape(self, layers: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one record without the time and run axes: layers, and neurons padded to the widest layer."""
        sizes = {"layer": len(layers), "neuron": max(layers), "pre": max(layers)}
        return tuple(sizes[dim] for dim in self.place.dims)


_P = PLACES
PAL = frozenset({"PAL"})
TARGETED = frozenset({"fw_bw", "supervised"})  # tasks whose output layer has a target
_A = "a.u."


def _internal(name: str, place: str, long_name: str, symbol: str, units: str = _A, **kw: object) -> Variable:
    """A state field that no store records (previous values, filters, bookkeeping)."""
    return Variable(name, _P[place], long_name, units, symbol, recordable=False, **kw)  # type: ignore[arg-type]


# In the order of the engine's State fields (a test holds them against each other).
_DECLARED = [
    Variable("uP", _P["pyramidal"], "somatic voltage of pyramidal cells", _A, "u^P"),
    _internal("uP_old", "pyramidal", "somatic voltage of pyramidal cells one step earlier", "u^P(t-dt)"),
    Variable("uP_breve", _P["pyramidal"], "prospective (lookahead) somatic voltage of pyramidal cells", _A,
             "u-breve^P"),
    Variable("rP_breve", _P["pyramidal"], "rate of pyramidal cells, phi(u-breve^P)", _A, "r-breve^P"),
    Variable("rP_breve_HI", _P["pyramidal"], "high-pass filtered pyramidal rate", _A, "r-breve^P_HI", models=PAL),
    Variable("uI", _P["interneuron"], "somatic voltage of interneurons", _A, "u^I"),
    _internal("uI_old", "interneuron", "somatic voltage of interneurons one step earlier", "u^I(t-dt)"),
    Variable("uI_breve", _P["interneuron"], "prospective somatic voltage of interneurons", _A, "u-breve^I"),
    Variable("rI_breve", _P["interneuron"], "rate of interneurons, phi(u-breve^I)", _A, "r-breve^I"),
    Variable("vbas", _P["pyramidal"], "basal dendritic potential", _A, "v^bas"),
    Variable("vapi", _P["apical"], "apical dendritic potential (without noise)", _A, "v^api"),
    Variable("vapi_noise", _P["apical"],
             "apical potential seen by the soma, v^api plus the previous step's noise", _A, "v^api + xi", models=PAL),
    _internal("vden", "interneuron", "dendritic potential of interneurons", "v^den"),
    Variable("noise", _P["pyramidal"], "apical noise (zero in the output layer)", _A, "xi", models=PAL),
    _internal("noise_counter", "run", "steps since the last noise draw, shared by all hidden layers", "-",
              units="1"),
    _internal("r0", "input", "input rates of the last step", "r_0"),
    Variable("WPP", _P["forward"], "forward pyramid-to-pyramid weights, layer l-1 to l", "1", "W^PP"),
    Variable("WIP", _P["lateral"], "pyramid-to-interneuron weights, pyramids of l-1 to interneurons of l", "1",
             "W^IP"),
    Variable("BPP", _P["feedback"], "feedback pyramid-to-pyramid weights, layer l+1 to apical dendrites of l", "1",
             "B^PP"),
    Variable("BPI", _P["feedback"],
             "interneuron-to-pyramid weights, interneurons of l+1 to apical dendrites of l", "1", "B^PI"),
    Variable("dWPP", _P["forward"], "increment of W^PP computed in the step", "1", "dW^PP"),
    Variable("dWIP", _P["lateral"], "increment of W^IP computed in the step", "1", "dW^IP"),
    Variable("dBPP", _P["feedback"], "increment of B^PP computed in the step", "1", "dB^PP"),
    Variable("dBPI", _P["feedback"], "increment of B^PI computed in the step", "1", "dB^PI"),
    _internal("dWPP_LO", "forward", "low-pass filtered increment of W^PP", "dW^PP_LO", units="1", models=PAL),
    _internal("r0_LO", "input", "low-pass filtered input rates", "r_0,LO", models=PAL),
    _internal("r_LO", "pyramidal", "low-pass filtered pyramidal rates", "r-breve^P_LO", models=PAL),
    _internal("post_LO", "pyramidal", "low-pass filtered postsynaptic factor of dW^PP", "post_LO", models=PAL),
    # recorded from the step's input and target (Simulation.current_input / current_target), not from State
    Variable("input", _P["input"], "input rates fed in the step (layer 0)", _A, "r_0", state=False),
    Variable("target", _P["output"], "target of the output layer (the teacher's in fw_bw, the label's in supervised)",
             _A, "u^tgt", tasks=TARGETED, state=False),
    Variable("error", _P["output"], "output lookahead minus target, u-breve^P_L - u^tgt", _A, "e", tasks=TARGETED,
             state=False, reads=("uP_breve",)),
    Variable("MSE", _P["scalar"], "squared error summed over output neurons, |u-breve^P_L - u^tgt|^2", "a.u.^2",
             "|e|^2", tasks=TARGETED, state=False, reads=("uP_breve",)),
]

STATE_FIELDS: dict[str, Variable] = {v.name: v for v in _DECLARED if v.state}
"""Every field of the engine's State (``step`` aside), in the State's order."""

# The dataset contract's order: cells, dendrites, weights, then the task's inputs and outputs.
_RECORD_ORDER = ("uP", "uP_breve", "rP_breve", "rP_breve_HI", "vbas", "noise", "vapi", "vapi_noise", "uI",
                 "uI_breve", "rI_breve", "WPP", "dWPP", "BPP", "dBPP", "BPI", "dBPI", "WIP", "dWIP", "input",
                 "target", "error", "MSE")
VARIABLES: dict[str, Variable] = {name: next(v for v in _DECLARED if v.name == name) for name in _RECORD_ORDER}
"""Every variable a store may hold, in the dataset contract's order."""
if {v.name for v in _DECLARED if v.recordable} != set(VARIABLES):  # pragma: no cover - a declaration slip
    raise RuntimeError("palmc.engine.variables: _RECORD_ORDER must list every recordable variable once")

RECORDABLE: tuple[str, ...] = tuple(VARIABLES)
FW_BW_ONLY: tuple[str, ...] = tuple(v.name for v in VARIABLES.values() if v.tasks == TARGETED)
"""Variables that only exist when the output layer has targets (tasks ``fw_bw`` and ``supervised``)."""
PAL_ONLY: tuple[str, ...] = tuple(v.name for v in VARIABLES.values() if v.models == PAL)
"""Variables that only PAL models have (recorded as NaN for BP and FA)."""


def fields_of(place: str) -> tuple[str, ...]:
    """The State fields kept at ``place``, in the State's order."""
    return tuple(name for name, v in STATE_FIELDS.items() if v.kind == place)


def variables_for(names: list[str] | tuple[str, ...], task: str, model_kinds: set[str] | frozenset[str],
                  ) -> list[Variable]:
    """The recordable variables among ``names`` that exist in ``task`` for at least one of ``model_kinds``."""
    return [VARIABLES[name] for name in names if VARIABLES[name].exists_for(task, model_kinds)]


def fields_read(variables: list[Variable]) -> tuple[str, ...]:
    """The State fields that records of ``variables`` read, each once, in the order of first use."""
    return tuple(dict.fromkeys(name for v in variables for name in v.fields_read))


def markdown_table() -> str:
    """The variables table of docs/dataset-contract.md (written by ``python -m palmc.schema.generate``)."""
    rows = ["| name | dims | exists at layers | units | symbol | only in | meaning |", "|---|---|---|---|---|---|---|"]
    for var in VARIABLES.values():
        only = [*(sorted(var.models) if var.models != MODEL_KINDS else []),
                *(sorted(var.tasks) if var.tasks != TASKS else [])]
        cells = [f"`{var.name}`", f"({', '.join(var.dims)})", var.place.layers_text(), var.units, f"`{var.symbol}`",
                 ", ".join(only) or "all", var.long_name]
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"


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
