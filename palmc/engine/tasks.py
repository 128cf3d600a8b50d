"""Drivers of the three tasks: settling, epochs of shuffled step inputs, the fw_bw teacher, evaluation.

* ``bw_only``: the student learns its lateral and feedback weights (W^IP, B^PI, B^PP) on random inputs.
* ``fw_bw``: a teacher network with fixed weights turns the same inputs into targets; the student learns all
  weights (W^PP too) while its output layer is nudged towards the teacher's output.
* ``supervised``: as ``fw_bw``, with a dataset's training inputs as patterns and its labels, mapped to output
  voltages, as targets; after settling and every few epochs, a frozen copy of the network classifies the test
  set (and part of the training set) without disturbing the training run (:func:`evaluate`).

Time course of every run: S settling steps (no learning, no target, no noise) on the unshuffled inputs, then
E epochs; each epoch reshuffles the order of the previous epoch with the run's own ``RandomState(seed)`` and
presents every sample for Tp steps.
"""

from __future__ import annotations

import copy
from typing import Callable

import numpy as np

from palmc.engine.datasets import target_voltages
from palmc.engine.dynamics import SETTLING, Learning, step
from palmc.engine.init import NetworkInit, init_network, input_patterns, teacher_seed
from palmc.engine.params import ModelParams, Protocol, RunSpec
from palmc.engine.state import BatchParams, State

TASK_LEARNING = {
    "bw_only": Learning(forward=False, lateral=True, feedback=True),
    "fw_bw": Learning(forward=True, lateral=True, feedback=True),
    "supervised": Learning(forward=True, lateral=True, feedback=True),
}

RecordHook = Callable[["Simulation"], None]


def run_teacher(params: ModelParams, seed: int, patterns: np.ndarray, protocol: Protocol) -> np.ndarray:
    """Targets of one fw_bw teacher, one per input pattern, shape (dataset_size, n_out).

    The teacher settles for S steps and then sees each pattern once, in order, for Tp steps; the target of a
    pattern is the output lookahead u-breve^P_L at the start of the pattern's last step (as in the reference).
    """
    batch_params = BatchParams.from_models([params], teacher=True)
    state = State.initial([init_network(params, seed, teacher=True)], batch_params)
    Tp, S = protocol.steps_per_presentation, protocol.settling_steps
    targets = np.empty((protocol.dataset_size, params.layers[-1]))
    sequence = np.repeat(patterns, Tp, axis=0)
    for k in range(S):
        step(state, batch_params, sequence[k % len(sequence)][None, :], None, SETTLING, [])
    for j in range(protocol.dataset_size):
        for t in range(Tp):
            if t == Tp - 1:
                targets[j] = state.uP_breve[-1][0]
            step(state, batch_params, patterns[j][None, :], None, SETTLING, [])
    return targets


class Simulation:
    """A batch of runs advanced together, one time step for all of them at once."""

    def __init__(self, runs: list[RunSpec], protocol: Protocol) -> None:
        self.runs = runs
        self.protocol = protocol
        self.params = BatchParams.from_models([r.params for r in runs])
        self.learning = TASK_LEARNING[protocol.task]
        n_in = runs[0].params.layers[0]

        inits: list[NetworkInit] = [init_network(r.params, r.seed) for r in runs]
        lookahead_from: list[NetworkInit | None] = [None] * len(runs)
        self.targets: np.ndarray | None = None
        if protocol.task == "fw_bw":
            patterns, self.targets = [], []
            teachers: dict[tuple, tuple[NetworkInit, np.ndarray, np.ndarray]] = {}
            for r_index, run in enumerate(runs):
                key = (run.model_name, run.teacher_seed_source)
                if key not in teachers:
                    t_seed = teacher_seed(run.teacher_seed_source)
                    t_patterns = input_patterns(t_seed, protocol.dataset_size, n_in)
                    teachers[key] = (
                        init_network(run.params, t_seed, teacher=True),
                        t_patterns,
                        run_teacher(run.params, t_seed, t_patterns, protocol),
                    )
                t_init, t_patterns, t_targets = teachers[key]
                patterns.append(t_patterns)
                self.targets.append(t_targets)
                if run.params.copy_teacher_weights:
                    inits[r_index] = NetworkInit(uP=inits[r_index].uP, uI=inits[r_index].uI, WPP=t_init.WPP,
                                                 WIP=t_init.WIP, BPP=t_init.BPP, BPI=t_init.BPI)
                if run.params.copy_teacher_voltages:
                    lookahead_from[r_index] = t_init
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

    # -- time course -----------------------------------------------------------------------------------
    @property
    def step_count(self) -> int:
        return self.state.step

    def epoch_of(self, k: int) -> int:
        """Epoch of (1-based) step k: 0 while settling, then 1..E."""
        S, N = self.protocol.settling_steps, self.protocol.steps_per_epoch
        return 0 if k <= S else (k - S - 1) // N + 1

    def _prepare_step(self, k: int) -> tuple[np.ndarray, np.ndarray | None, Learning]:
        """Input, target and learning flags of (1-based) step k; shuffles at the first step of an epoch."""
        proto = self.protocol
        S, N, Tp = proto.settling_steps, proto.steps_per_epoch, proto.steps_per_presentation
        runs = np.arange(len(self.runs))
        if k <= S:
            sample = ((k - 1) % N) // Tp  # the unshuffled sequence (wrapping if settling outlasts an epoch)
            return self.patterns[:, sample], None, SETTLING
        within = (k - S - 1) % N
        if within == 0:
            for r, rng in enumerate(self.rngs):
                rng.shuffle(self.order[r])
        sample = self.order[:, within // Tp]
        target = None if self.targets is None else self.targets[runs, sample]
        return self.patterns[runs, sample], target, self.learning

    def advance(self, n_steps: int, on_step: RecordHook | None = None) -> None:
        """Advance all runs by ``n_steps`` steps (never past the end of the protocol)."""
        end = min(self.state.step + n_steps, self.protocol.total_steps)
        while self.state.step < end:
            r0, target, learning = self._prepare_step(self.state.step + 1)
            self.current_input, self.current_target = r0, target
            step(self.state, self.params, r0, target, learning, self.rngs,
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
        for r, rng in enumerate(self.rngs):
            _, key, pos, has_gauss, cached = rng.get_state()
            payload[f"rng/{r}/key"] = key
            payload[f"rng/{r}/meta"] = np.array([pos, has_gauss, cached], dtype=np.float64)
        return payload

    def restore(self, payload: dict[str, np.ndarray]) -> None:
        prefix = "state/"
        arrays = {k[len(prefix):]: v for k, v in payload.items() if k.startswith(prefix)}
        self.state = State.from_arrays(int(payload["step"]), arrays)
        self.order = np.array(payload["order"])
        self.current_input = np.array(payload["current_input"])
        self.current_target = np.array(payload["current_target"]) if "current_target" in payload else None
        for r, rng in enumerate(self.rngs):
            pos, has_gauss, cached = payload[f"rng/{r}/meta"]
            rng.set_state(("MT19937", payload[f"rng/{r}/key"], int(pos), int(has_gauss), float(cached)))


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
    frozen = object.__new__(Simulation)
    frozen.runs, frozen.params, frozen.learning = sim.runs, sim.params, SETTLING
    frozen.protocol = Protocol(task=proto.task, dataset_size=n, epochs=0, steps_per_presentation=Tp,
                               settling_steps=n * Tp)
    frozen.targets = None
    frozen.patterns = np.ascontiguousarray(np.broadcast_to(inputs, (R, *inputs.shape)), dtype=np.float64)
    frozen.state = State.from_arrays(0, {name: values.copy() for name, values in sim.state.arrays().items()})
    frozen.rngs = [copy.deepcopy(rng) for rng in sim.rngs]  # never drawn from while settling
    frozen.order = np.tile(np.arange(n), (R, 1))
    frozen.current_input = np.zeros((R, inputs.shape[1]))
    frozen.current_target = None
    return frozen


class _OutputClasses:
    """Hook that reads the class of every run at the end of each presentation: argmax of the output rates."""

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
