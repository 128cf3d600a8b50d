"""Drivers of the three tasks: settling, epochs of shuffled step inputs, the fw_bw teacher, evaluation.

* ``bw_only``: the student learns its lateral and feedback weights (W^IP, B^PI, B^PP) on random inputs.
* ``fw_bw``: a teacher network with fixed weights turns the same inputs into targets; the student learns all
  weights (W^PP too) while its output layer is nudged towards the teacher's output.
* ``supervised``: as ``fw_bw``, with a dataset's training inputs as patterns and its labels, mapped to output
  voltages, as targets; after settling and every few epochs, a frozen copy of the network classifies the test
  set (and part of the training set) without disturbing the training run (:func:`evaluate`).

Time course of every run: S settling steps (no learning, no target, no noise) on the unshuffled inputs, then
E epochs; each epoch reshuffles the order of the previous epoch with the run's own ``RandomState(seed)`` and
presents every sample for Tp steps, with the learning rates of the epoch (the optional learning-rate schedule,
``Simulation.params_at``).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass, fields, replace
from typing import Callable

import numpy as np

from palmc.engine.datasets import target_voltages
from palmc.engine.dynamics import SETTLING, Learning, step
from palmc.engine.init import NetworkInit, init_key, init_network, input_patterns, teacher_seed
from palmc.engine.params import ModelParams, Protocol, RunSpec
from palmc.engine.state import BatchParams, State

TASK_LEARNING = {
    "bw_only": Learning(forward=False, lateral=True, feedback=True),
    "fw_bw": Learning(forward=True, lateral=True, feedback=True),
    "supervised": Learning(forward=True, lateral=True, feedback=True),
}

RecordHook = Callable[["Simulation"], None]


# ModelParams fields that cannot change a teacher's targets: a teacher never learns (no learning rates, no
# plasticity filters, and no noise, which is only injected while feedback weights learn), always looks ahead fully
# (taur), always starts in the self-predicting state and is drawn from its own init ranges
TEACHER_INDEPENDENT: tuple[str, ...] = (
    "eta_fw", "eta_bw", "eta_IP", "eta_PI", "alpha", "dWPP_use_activation", "eta_decay", "eta_decay_after",
    "eta_decay_rates",
    "noise_type", "noise_mode", "noise_scale", "tauxi", "dtxi",
    "tauHP", "pyr_hi_pass", "dWPP_low_pass", "dWPP_r_low_pass", "dWPP_post_low_pass", "gate_regularizer",
    "varphi_regularizer", "taur", "init_WPP_range", "init_WIP_range", "init_BPP_range", "init_BPI_range",
    "init_in_SPS", "copy_teacher_weights", "copy_teacher_voltages",
)
_TEACHER_DEFAULTS = {f.name: f.default for f in fields(ModelParams) if f.name in TEACHER_INDEPENDENT}

TeacherKey = tuple[ModelParams, int, int, int, int]  # teacher's params, seed source, dataset size, Tp, S


def teacher_key(params: ModelParams, seed_source: int, protocol: Protocol) -> TeacherKey:
    """What defines the teacher of a run of ``params``: its model type and the parameters that shape its output,
    the seed its own seed is drawn from, and the time course it settles and answers in. Runs with equal keys
    share one teacher."""
    return (replace(params, **_TEACHER_DEFAULTS), seed_source, protocol.dataset_size,
            protocol.steps_per_presentation, protocol.settling_steps)


@dataclass(frozen=True)
class Teacher:
    """One fw_bw teacher: its initial network, the input patterns it answers and its targets (dataset, n_out)."""

    init: NetworkInit
    patterns: np.ndarray
    targets: np.ndarray


TeacherAdvance = Callable[["Simulation", int], None]


class Teachers:
    """fw_bw teachers by :func:`teacher_key`, computed together when first asked for and then kept (the
    ``keep`` last used), so that every batch of runs in a process shares each distinct teacher.

    ``advance`` steps a batch of teachers (default: the NumPy engine, ``Simulation.advance``); the target of a
    pattern is the teacher's output lookahead u-breve^P_L at the start of the pattern's last step (as in the
    reference): the teacher settles for S steps, then sees each pattern once, in order, for Tp steps.
    """

    def __init__(self, advance: TeacherAdvance | None = None, keep: int = 4096) -> None:
        self._advance: TeacherAdvance = advance or (lambda sim, n_steps: sim.advance(n_steps))
        self._keep = keep
        self._kept: OrderedDict[TeacherKey, Teacher] = OrderedDict()
        self.computed = 0  # teachers computed so far (each distinct key once while it is kept)

    def for_runs(self, runs: list[RunSpec], protocol: Protocol) -> list[Teacher]:
        """The teacher of each run (computing the missing ones in batches of one network structure)."""
        # runs of one variant and model share their params object: each is keyed once (a key costs ~100 us)
        by_params: dict[tuple[int, int], TeacherKey] = {}
        keys = []
        for run in runs:
            ref = (id(run.params), run.teacher_seed_source)
            if ref not in by_params:
                by_params[ref] = teacher_key(run.params, run.teacher_seed_source, protocol)
            keys.append(by_params[ref])
        found = {key: self._kept[key] for key in dict.fromkeys(keys) if key in self._kept}
        missing = [key for key in dict.fromkeys(keys) if key not in found]
        by_structure: dict[tuple, list[TeacherKey]] = {}
        for key in missing:
            by_structure.setdefault((key[0].layers, key[0].activations, key[0].dt), []).append(key)
        for group in by_structure.values():
            found.update(zip(group, self._compute(group)))
        for key in dict.fromkeys(keys):
            self._kept[key] = found[key]
            self._kept.move_to_end(key)
        while len(self._kept) > self._keep:
            self._kept.popitem(last=False)
        return [found[key] for key in keys]

    def _compute(self, keys: list[TeacherKey]) -> list[Teacher]:
        params = [key[0] for key in keys]
        _, _, dataset_size, Tp, S = keys[0]
        seeds = [teacher_seed(key[1]) for key in keys]
        inits = [init_network(p, seed, teacher=True) for p, seed in zip(params, seeds)]
        patterns = np.stack([input_patterns(seed, dataset_size, params[0].layers[0]) for seed in seeds])
        sim = Simulation.of_teachers(params, seeds, inits, patterns, Protocol("fw_bw", dataset_size, 1, Tp, S))
        targets = np.empty((len(keys), dataset_size, params[0].layers[-1]))
        self._advance(sim, S)
        for j in range(dataset_size):
            self._advance(sim, Tp - 1)
            targets[:, j] = sim.state.uP_breve[-1]
            if j < dataset_size - 1:
                self._advance(sim, 1)
        self.computed += len(keys)
        return [Teacher(init, pats, tgt) for init, pats, tgt in zip(inits, patterns, targets)]


class Simulation:
    """A batch of runs advanced together, one time step for all of them at once."""

    def __init__(self, runs: list[RunSpec], protocol: Protocol, teachers: Teachers | None = None) -> None:
        """``teachers`` (fw_bw): where the runs' teachers come from; by default computed here with NumPy."""
        self.runs = runs
        self.protocol = protocol
        self.params = BatchParams.from_models([r.params for r in runs])
        self.learning = TASK_LEARNING[protocol.task]
        n_in = runs[0].params.layers[0]

        drawn: dict[tuple, NetworkInit] = {}  # runs that differ only in parameters the draws ignore share them
        inits: list[NetworkInit] = []
        for run in runs:
            key = init_key(run.params, run.seed)
            if key not in drawn:
                drawn[key] = init_network(run.params, run.seed)
            inits.append(drawn[key])
        lookahead_from: list[NetworkInit | None] = [None] * len(runs)
        self.targets: np.ndarray | None = None
        if protocol.task == "fw_bw":
            patterns, self.targets = [], []
            for r_index, (run, teacher) in enumerate(zip(runs, (teachers or Teachers()).for_runs(runs, protocol))):
                patterns.append(teacher.patterns)
                self.targets.append(teacher.targets)
                if run.params.copy_teacher_weights:
                    t_init = teacher.init
                    inits[r_index] = NetworkInit(uP=inits[r_index].uP, uI=inits[r_index].uI, WPP=t_init.WPP,
                                                 WIP=t_init.WIP, BPP=t_init.BPP, BPI=t_init.BPI)
                if run.params.copy_teacher_voltages:
                    lookahead_from[r_index] = teacher.init
            self.patterns = np.stack(patterns)
            self.targets = np.stack(self.targets)
        elif protocol.task == "supervised":
            data, target = protocol.data, protocol.target
            if data is None or target is None:
                raise ValueError("task supervised needs the protocol's data and target mapping")
            self.patterns = np.stack([data.x_train] * len(runs))
            self.targets = np.stack([target_voltages(data.y_train, data.n_classes, target.on, target.off, target.kind,
                                                     run.params.activations[-1]) for run in runs])
        else:
            cache: dict[int, np.ndarray] = {}
            for run in runs:
                if run.input_seed not in cache:
                    cache[run.input_seed] = input_patterns(run.input_seed, protocol.dataset_size, n_in)
            self.patterns = np.stack([cache[run.input_seed] for run in runs])

        self.state = State.initial(inits, self.params, lookahead_from if any(x is not None for x in lookahead_from) else None)
        self.rngs = [np.random.RandomState(run.seed) for run in runs]
        # current presentation order of the samples, per run; reshuffled in place at every epoch start
        self.order = np.tile(np.arange(protocol.dataset_size), (len(runs), 1))
        self.current_input: np.ndarray = np.zeros((len(runs), n_in))
        self.current_target: np.ndarray | None = None
        self.reshuffles = True  # whether each epoch reshuffles the presentation order (teachers keep theirs)

    @classmethod
    def of_teachers(cls, params: list[ModelParams], seeds: list[int], inits: list[NetworkInit],
                    patterns: np.ndarray, protocol: Protocol) -> "Simulation":
        """A batch of fw_bw teachers (one per params, seed and initial network; patterns (R, dataset, n_in)):
        no learning, no target, and after settling one epoch that presents the patterns in order."""
        batch_params = BatchParams.from_models(params, teacher=True)
        return cls.presenting([RunSpec(seed, "teacher", p, seed, seed) for p, seed in zip(params, seeds)],
                              batch_params, State.initial(inits, batch_params),
                              [np.random.RandomState(seed) for seed in seeds],  # never drawn from: no noise
                              patterns, protocol)

    @classmethod
    def presenting(cls, runs: list[RunSpec], params: BatchParams, state: State, rngs: list[np.random.RandomState],
                   patterns: np.ndarray, protocol: Protocol) -> "Simulation":
        """A batch that learns nothing and has no target, shown ``patterns`` (R, n, n_in) in order (its epochs
        keep that order): fw_bw teachers, and the frozen copies that evaluations classify with."""
        sim = cls.__new__(cls)
        sim.runs, sim.params, sim.protocol = runs, params, protocol
        sim.learning = SETTLING
        sim.targets = None
        sim.patterns = patterns
        sim.state = state
        sim.rngs = rngs
        sim.order = np.tile(np.arange(protocol.dataset_size), (len(runs), 1))
        sim.current_input = np.zeros((len(runs), patterns.shape[2]))
        sim.current_target = None
        sim.reshuffles = False
        return sim

    # -- time course -----------------------------------------------------------------------------------
    def step_inputs(self, k: int) -> tuple[np.ndarray, np.ndarray | None, Learning]:
        """Input, target and learning flags of (1-based) step k; shuffles at the first step of an epoch."""
        proto = self.protocol
        S, N, Tp = proto.settling_steps, proto.steps_per_epoch, proto.steps_per_presentation
        runs = np.arange(len(self.runs))
        if k <= S:
            sample = ((k - 1) % N) // Tp  # the unshuffled sequence (wrapping if settling outlasts an epoch)
            return self.patterns[:, sample], None, SETTLING
        within = (k - S - 1) % N
        if within == 0 and self.reshuffles:
            for r, rng in enumerate(self.rngs):
                rng.shuffle(self.order[r])
        sample = self.order[:, within // Tp]
        target = None if self.targets is None else self.targets[runs, sample]
        return self.patterns[runs, sample], target, self.learning

    def params_at(self, k: int) -> BatchParams:
        """The parameters (1-based) step k runs with: the learning rates of its epoch (``BatchParams.for_epoch``);
        settling steps learn nothing and use ``params`` as they are."""
        proto = self.protocol
        if k <= proto.settling_steps:
            return self.params
        return self.params.for_epoch((k - proto.settling_steps - 1) // proto.steps_per_epoch)

    def advance(self, n_steps: int, on_step: RecordHook | None = None) -> None:
        """Advance all runs by ``n_steps`` steps (never past the end of the protocol)."""
        end = min(self.state.step + n_steps, self.protocol.total_steps)
        while self.state.step < end:
            r0, target, learning = self.step_inputs(self.state.step + 1)
            self.current_input, self.current_target = r0, target
            step(self.state, self.params_at(self.state.step + 1), r0, target, learning, self.rngs,
                 record=(lambda _s: on_step(self)) if on_step is not None else None)

    @property
    def done(self) -> bool:
        return self.state.step >= self.protocol.total_steps

    # -- checkpoints -------------------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, np.ndarray]:
        """Everything needed to continue bit-exactly: state, presentation order, random generators."""
        payload = {f"state/{k}": v for k, v in self.state.arrays().items()}
        payload["step"] = np.array(self.state.step)
        payload["order"] = self.order.copy()
        payload["current_input"] = self.current_input
        if self.current_target is not None:
            payload["current_target"] = self.current_target
        # one array for all generators (an entry per run made a batch of thousands of runs slow to save)
        states = [rng.get_state() for rng in self.rngs]
        payload["rng/keys"] = np.array([key for _, key, _, _, _ in states], dtype=np.uint32).reshape(len(states), -1)
        payload["rng/meta"] = np.array([[pos, has_gauss, cached] for _, _, pos, has_gauss, cached in states],
                                       dtype=np.float64).reshape(len(states), 3)
        return payload

    def restore(self, payload: dict[str, np.ndarray]) -> None:
        prefix = "state/"
        arrays = {k[len(prefix):]: v for k, v in payload.items() if k.startswith(prefix)}
        self.state = State.from_arrays(int(payload["step"]), arrays)
        self.order = np.array(payload["order"])
        self.current_input = np.array(payload["current_input"])
        self.current_target = np.array(payload["current_target"]) if "current_target" in payload else None
        for rng, key, (pos, has_gauss, cached) in zip(self.rngs, payload["rng/keys"], payload["rng/meta"]):
            rng.set_state(("MT19937", key, int(pos), int(has_gauss), float(cached)))


# -- evaluation (task supervised) ----------------------------------------------------------------------

AdvanceFn = Callable[[Simulation, int, Callable[[Simulation], None]], None]
"""Advances a simulation by n steps, calling the hook at least at every step that is a multiple of
``hook.every`` (``Simulation.advance`` calls it at every step; the compiled kernel only at those)."""


def frozen_copy(sim: Simulation, inputs: np.ndarray) -> Simulation:
    """A copy of ``sim``'s networks that is shown ``inputs`` (n, n_in) once each, in order, for Tp steps apiece,
    with plasticity, target nudging and noise off; ``sim`` itself (state, generators, order) is not touched.

    The copy's protocol is settling only (settling is exactly that phase), so either engine runs it.
    """
    proto = sim.protocol
    n, Tp, R = len(inputs), proto.steps_per_presentation, len(sim.runs)
    state = State.from_arrays(0, {name: values.copy() for name, values in sim.state.arrays().items()})
    return Simulation.presenting(
        sim.runs, sim.params, state, [copy.deepcopy(rng) for rng in sim.rngs],  # never drawn from while settling
        np.ascontiguousarray(np.broadcast_to(inputs, (R, *inputs.shape)), dtype=np.float64),
        Protocol(task=proto.task, dataset_size=n, epochs=0, steps_per_presentation=Tp, settling_steps=n * Tp))


class _OutputClasses:
    """Hook that reads the class of every run at the end of each presentation: argmax of the output rates."""

    fields_read = ("rP_breve",)  # the compiled engine shows it only these

    def __init__(self, n_samples: int, n_runs: int, every: int) -> None:
        self.every = every
        self.classes = np.full((n_runs, n_samples), -1, dtype=np.int64)
        self.finite = np.ones(n_runs, dtype=bool)

    def __call__(self, sim: Simulation) -> None:
        k = sim.state.step
        if k % self.every:
            return
        rates = sim.state.rP_breve[-1]
        self.finite &= np.isfinite(rates).all(axis=1)
        self.classes[:, k // self.every - 1] = np.argmax(rates, axis=1)


def classify(sim: Simulation, inputs: np.ndarray, advance: AdvanceFn) -> tuple[np.ndarray, np.ndarray]:
    """Classes (R, n) a frozen copy of ``sim`` gives ``inputs``, and which runs stayed finite (R,)."""
    frozen = frozen_copy(sim, inputs)
    reader = _OutputClasses(len(inputs), len(sim.runs), sim.protocol.steps_per_presentation)
    advance(frozen, frozen.protocol.total_steps, reader)
    return reader.classes, reader.finite


def evaluate(sim: Simulation, advance: AdvanceFn) -> dict[str, np.ndarray]:
    """Test and training accuracy (fraction of samples classified right) of every run, shape (R,) each; NaN for
    a run whose output stopped being finite. The training accuracy uses the first ``eval_train_samples``."""
    data = sim.protocol.data
    if data is None:
        raise ValueError("evaluation needs a supervised simulation")
    n_train = min(sim.protocol.eval_train_samples, data.n_train)
    inputs = np.concatenate([data.x_test, data.x_train[:n_train]])
    labels = np.concatenate([data.y_test, data.y_train[:n_train]])
    classes, finite = classify(sim, inputs, advance)
    right = classes == labels[None, :]
    n_test = data.n_test
    out = {"test_accuracy": right[:, :n_test].mean(axis=1),
           "train_accuracy": right[:, n_test:].mean(axis=1) if n_train else np.full(len(sim.runs), np.nan)}
    for values in out.values():
        values[~finite] = np.nan
    return out
