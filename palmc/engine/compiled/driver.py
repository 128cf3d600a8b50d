"""Drives the compiled kernels: ``advance`` runs a Simulation's steps in segments of compiled steps.

Python is entered only at segment ends: record steps, epoch starts (to shuffle with each run's RandomState exactly
as ``Simulation.step_inputs`` does) and every ``MAX_SEGMENT`` steps. The packed state, the generators' states and
their tempered words live in arrays for the whole ``advance`` call; the kernel picks each step's pattern from the
presentation order itself; at a record step the recorder is shown only the fields it reads, as views of the
packed arrays made once per call (``NeuronPacked.show``), and the full state is unpacked once, at the end.

Threads: every compiled function releases the GIL (``nogil``), so threads advancing different batches run in
parallel (thread workers, ``PALMC_LOCAL_PROCESSES=0``); only the short Python parts between segments take turns.

Random numbers: the generator states are copied into the kernel at the start of ``advance`` and back before
Python uses them (the shuffle at an epoch start) and at the end (mt19937.py).
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import fields
from typing import Iterable, Iterator, Protocol

import numba
import numpy as np

from palmc.engine.compiled import lanes, neurons
from palmc.engine.compiled.activations import ACTIVATION_CODES
from palmc.engine.compiled.packing import (
    KNOWN_FIELDS, MAT_FIELDS, NOISE_MODES, PLAIN, VEC_FIELDS, LanePacked, Lanes, NeuronPacked, tables,
)
from palmc.engine.params import ModelParams, RunSpec
from palmc.engine.params import Protocol as TimeCourse
from palmc.engine.state import State
from palmc.engine.tasks import Simulation

MAX_SEGMENT = 8192  # steps per kernel call at most: Python (Ctrl-C, other threads' Python parts) gets a turn


class Recorder(Protocol):
    """What ``advance`` needs of a recorder: it is called with the Simulation at every step that is a multiple
    of ``every``. It may say which state fields it reads (``fields_read``): only those are shown to it."""

    every: int

    def __call__(self, sim: Simulation) -> None: ...


def supports(sim: Simulation) -> bool:
    """True when the kernel reproduces ``sim.advance`` for this batch (every option of the NumPy engine)."""
    p = sim.params
    if {f.name for f in fields(State)} != KNOWN_FIELDS:
        return False  # the state grew a field this kernel does not know
    if len(p.layers) < 2 or any(a not in ACTIVATION_CODES for a in p.activations):
        return False
    if len(p.activations) != len(p.layers) - 1:
        return False
    return all(p.noise_mode[r] in NOISE_MODES for r in np.flatnonzero(p.is_pal))


def recorded_fields(recorder: Recorder) -> tuple[str, ...]:
    """The state fields the recorder reads: its ``fields_read`` if it says (and knows them all), else all."""
    declared = getattr(recorder, "fields_read", None)
    if declared is None or set(declared) - set(VEC_FIELDS + MAT_FIELDS + PLAIN):
        return VEC_FIELDS + MAT_FIELDS + PLAIN
    return tuple(declared)


def sample_indices(sim: Simulation, k: int) -> np.ndarray:
    """Pattern index of every run in step k, as ``Simulation.step_inputs`` picks it (the kernel's rule)."""
    proto = sim.protocol
    S, N, Tp = proto.settling_steps, proto.steps_per_epoch, proto.steps_per_presentation
    if k <= S:
        return np.full(len(sim.runs), ((k - 1) % N) // Tp)
    return sim.order[:, ((k - S - 1) % N) // Tp]


def segment_end(sim: Simulation, k: int, end: int, every: int | None) -> int:
    """Last step of the segment that starts with step k+1: before the next epoch start, at the next record."""
    proto = sim.protocol
    S, N = proto.settling_steps, proto.steps_per_epoch
    stop = min(end, k + MAX_SEGMENT)
    first = k + 1
    next_epoch = S + 1 if first <= S else S + 1 + ((first - S - 1) // N + 1) * N
    stop = min(stop, next_epoch - 1)
    if every:
        stop = min(stop, (first + every - 1) // every * every)
    return stop


def advance(sim: Simulation, n_steps: int, recorder: Recorder | None = None,
            layout: str | None = None, specialise: bool | None = None) -> None:
    """Exactly ``sim.advance(n_steps, on_step=recorder)``, with the steps run by the compiled kernel.

    ``layout`` picks the kernel: ``"neurons"`` (neurons.py), ``"lanes"`` (lanes.py) or None, the one
    ``layout_for`` finds faster for the network. ``specialise`` (lanes only): use the lanes kernel compiled for
    this network (True), the generic one (False), or let the batch's size decide (None,
    ``lanes.segment_for``); all give the same bits.

    Same final state, generators, presentation order, current input/target and recorder contents; the recorder
    is called at its record steps only (``step % recorder.every == 0``), which is the only time it records.
    While it runs, ``sim.state`` shows only the fields it records (see ``NeuronPacked.show``).
    """
    end = min(sim.state.step + n_steps, sim.protocol.total_steps)
    k = sim.state.step
    if k >= end:
        return
    rp, lp, fl, layers, acts = tables(sim.params)
    lane_of: Lanes | None = None
    if (layout or layout_for(sim)) == "lanes":
        lane_of = Lanes(fl)
        packed: NeuronPacked = LanePacked(sim, lane_of)
        segment, lane_args = lanes.segment_for(sim, layers, acts, specialise), (lane_of.run_of, lane_of.real)
    elif layout in (None, "neurons"):
        packed, segment, lane_args = NeuronPacked(sim), neurons.advance_segment, ()
    else:
        raise ValueError(f"kernel layout {layout!r}: expected 'neurons' or 'lanes'")

    def in_layout(*per_run: np.ndarray) -> tuple[np.ndarray, ...]:
        """Parameter tables (rp, lp, fl) as the kernel's layout reads them."""
        return per_run if lane_of is None else tuple(lane_of.pack(table) for table in per_run)

    rp, lp, fl = in_layout(rp, lp, fl)
    tabled = sim.params  # the parameters rp, lp, fl hold: each epoch's learning rates (Simulation.params_at)
    patterns = np.ascontiguousarray(sim.patterns, dtype=np.float64)
    targets = np.zeros((len(sim.runs), 1 if sim.targets is None else sim.targets.shape[1], packed.width))
    if sim.targets is not None:
        targets[:, :, : sim.targets.shape[2]] = sim.targets
    every = getattr(recorder, "every", None) if recorder is not None else None
    shown = recorded_fields(recorder) if recorder is not None else ()
    runs = np.arange(len(sim.runs))
    any_pal = bool(sim.params.is_pal.any())
    proto = sim.protocol
    S, N, Tp, dt = proto.settling_steps, proto.steps_per_epoch, proto.steps_per_presentation, float(sim.params.dt)
    # The generators are copied in once and back only when they are about to be used in Python (the shuffle
    # of an epoch start) or at the end, and only if the kernel drew from them (each copy costs time per run).
    packed.load_rngs(sim.rngs)
    drawn = False
    while k < end:
        stop = segment_end(sim, k, end, every)
        epoch_start = k + 1 > S and (k - S) % N == 0
        if epoch_start and drawn:
            packed.store_rngs(sim.rngs)
            drawn = False
        # Simulation's own step preparation: it shuffles at an epoch start (only then) and gives the phase's
        # flags and input, which must be those of the kernel's schedule
        r0, target, learning = sim.step_inputs(k + 1)
        if epoch_start:
            packed.load_rngs(sim.rngs)
        if not np.array_equal(r0, patterns[runs, sample_indices(sim, k + 1)]):
            raise RuntimeError("kernel: input schedule disagrees with Simulation.step_inputs")
        order = np.ascontiguousarray(sim.order, dtype=np.int64)
        params = sim.params_at(k + 1)
        if params is not tabled:  # a segment never spans an epoch start: one set of rates each
            tabled = params
            rp, lp, fl = in_layout(*tables(params)[:3])
        with compiling():
            segment(*packed.vecs, *packed.mats, packed.r0, packed.r0_LO, packed.hi_rec, packed.counter,
                    packed.mt_key, packed.mt_out, packed.mt_pos, packed.mt_has_gauss, packed.mt_cached,
                    patterns, targets, order, *lane_args, k + 1, stop - k, S, Tp, layers, acts, dt, rp, lp, fl,
                    bool(learning.forward), bool(learning.lateral), bool(learning.feedback), target is not None)
        drawn = drawn or (bool(learning.feedback) and any_pal)
        if stop > k + 1:
            r0, target, _ = sim.step_inputs(stop)  # not an epoch start: no side effect
        sim.current_input, sim.current_target = r0, target
        k = stop
        if recorder is not None and k % every == 0:
            packed.show(sim.state, shown, k)
            recorder(sim)
    if drawn:
        packed.store_rngs(sim.rngs)
    packed.unpack_into(sim.state, k)


# -- loading and compiling -----------------------------------------------------------------------------------
_SLP_LOCK = threading.Lock()
_slp_users = [0, 0]  # threads inside compiling, numba's setting before the first entered


@contextmanager
def compiling() -> Iterator[None]:
    """Let LLVM's SLP vectoriser (off by default in numba) work on the kernel if this call compiles it.

    The blocks of four in the kernel rely on it for AVX2 code; it does not change any result (no fast-math).
    The setting is read when a function is compiled, so it is restored right after; threads may run the kernel
    at the same time, so the setting is restored when the last of them leaves.
    """
    with _SLP_LOCK:
        if _slp_users[0] == 0:
            _slp_users[1] = numba.config.SLP_VECTORIZE
            numba.config.SLP_VECTORIZE = 1
        _slp_users[0] += 1
    try:
        yield
    finally:
        with _SLP_LOCK:
            _slp_users[0] -= 1
            if _slp_users[0] == 0:
                numba.config.SLP_VECTORIZE = _slp_users[1]


LAYOUTS = ("neurons", "lanes")


def load(layouts: Iterable[str] = LAYOUTS) -> float:
    """Load the kernels of ``layouts`` into this process (from numba's on-disk cache, or compile them once);
    returns the seconds.

    Before a run, so that its first batch does not spend this time (mostly numba's own start-up)
    holding the GIL: the in-process run and a local cluster whose workers share or inherit this process load it
    here (``palmc.kernel.load_kernel``), workers that start afresh as they start (``palmc.worker_preload``).
    """
    start = time.perf_counter()
    params = ModelParams(model="PAL", layers=(1, 1, 1), activations=("logistic",) * 2, eta_fw=(0.0,) * 2,
                         eta_bw=(0.0,), eta_IP=(0.0,), eta_PI=(0.0,), alpha=(0.0,), noise_scale=(0.0,))
    protocol = TimeCourse(task="bw_only", dataset_size=1, epochs=1, steps_per_presentation=1, settling_steps=1)
    for layout in layouts:
        advance(Simulation([RunSpec(0, "PAL", params, 0, 0)], protocol), 2, layout=layout)
    return time.perf_counter() - start


SEGMENTS = {"neurons": neurons.advance_segment, "lanes": lanes.advance_segment}


def loaded(layouts: Iterable[str] = LAYOUTS) -> bool:
    """Whether the kernels of ``layouts`` are loaded in this process already."""
    return all(SEGMENTS[layout].signatures for layout in layouts)


def cached(layouts: Iterable[str] = LAYOUTS) -> bool:
    """Whether numba's on-disk cache holds a current compilation of the kernels of ``layouts`` (so ``load`` reads
    them in about a second rather than compiling them for a minute). Reads numba's cache index (numba internals:
    any surprise there answers False)."""
    try:
        return all(bool(SEGMENTS[layout]._cache._cache_file._load_index()) for layout in layouts)
    except Exception:  # noqa: BLE001 - only a hint for the first-run message
        return False


# The neuron layout vectorises over blocks of four neurons; in a network whose layers have fewer, most of each
# block is padding and the lane layout does better. From a few neurons per layer on, the neuron layout is as fast
# or faster: four runs' weights no longer fit the L1 cache together (figures: docs/performance.md).
LANES_MAX_WIDTH = 4


def layout_for(sim: Simulation) -> str:
    """The faster kernel layout for this batch's network: "lanes" if no layer is wider than four, else "neurons"."""
    return layout_for_layers(sim.params.layers)


def layout_for_layers(layers: Iterable[int]) -> str:
    """``layout_for`` of a network with these layer sizes."""
    return "lanes" if max(layers) <= LANES_MAX_WIDTH else "neurons"


