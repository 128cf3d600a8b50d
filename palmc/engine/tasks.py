"""Drivers of the two tasks: settling, epochs of shuffled step inputs, and the fw_bw teacher.

* ``bw_only``: the student learns its lateral and feedback weights (W^IP, B^PI, B^PP) on random inputs.
* ``fw_bw``: a teacher network with fixed weights turns the same inputs into targets; the student learns all
  weights (W^PP too) while its output layer is nudged towards the teacher's output.

Time course of every run: S settling steps (no learning, no target, no noise) on the unshuffled inputs, then
E epochs; each epoch reshuffles the order of the previous epoch with the run's own ``RandomState(seed)`` and
presents every sample for Tp steps.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from palmc.engine.dynamics import SETTLING, Learning, step
from palmc.engine.init import NetworkInit, init_network, input_patterns, teacher_seed
from palmc.engine.params import ModelParams, Protocol, RunSpec
from palmc.engine.state import BatchParams, State

TASK_LEARNING = {
    "bw_only": Learning(forward=False, lateral=True, feedback=True),
    "fw_bw": Learning(forward=True, lateral=True, feedback=True),
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
    def step_inputs(self, k: int) -> tuple[np.ndarray, np.ndarray | None, Learning]:
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
            r0, target, learning = self.step_inputs(self.state.step + 1)
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
