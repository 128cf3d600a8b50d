"""Runs one batch from start (or its last checkpoint) to the end, writing its region of the store.

This is the unit of work that the local loop and the Dask tasks both call; it needs only the store path, the
plan and the batch, so it can run in any process that can reach the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from palmc.engine.tasks import Simulation, Teachers, evaluate
from palmc.plan import BatchSpec, Plan
from palmc.store.integrity import Manifest, written_keys
from palmc.store.location import StoreLocation
from palmc.store.recorder import ChunkRecorder
from palmc.store.writer import ChunkWriter, load_checkpoint, save_checkpoint

ProgressHook = Callable[[int], None]  # called with the number of run-steps just completed


@dataclass
class BatchResult:
    batch: int
    steps_done: int
    records_written: int
    resumed_from: int
    diverged: dict[int, int]  # run index in the batch -> step at which its state stopped being finite
    seconds: float = 0.0  # wall time of the batch, set-up included


def _diverged_runs(sim: Simulation) -> np.ndarray:
    """Boolean (R,): runs whose state holds NaN or inf."""
    bad = np.zeros(len(sim.runs), dtype=bool)
    for name, values in sim.state.arrays().items():
        if values.ndim and values.dtype.kind == "f" and values.shape[0] == len(sim.runs):
            bad |= ~np.isfinite(values.reshape(len(sim.runs), -1)).all(axis=1)
    return bad


def advance(sim: Simulation, n_steps: int, recorder: ChunkRecorder, engine: str) -> None:
    """Advance ``sim`` by ``n_steps`` with the chosen engine, recording as it goes."""
    if engine == "compiled":
        from palmc.engine.compiled import driver

        if driver.supports(sim):
            driver.advance(sim, n_steps, recorder)
            return
    sim.advance(n_steps, on_step=recorder)


# This process's fw_bw teachers per engine: computed once per distinct teacher and shared by every batch it runs
_TEACHERS: dict[str, Teachers] = {}


def teachers_for(engine: str) -> Teachers:
    """The teachers of this process for ``engine`` (advanced by it, like the students)."""
    if engine not in _TEACHERS:
        _TEACHERS[engine] = Teachers(lambda sim, n_steps: advance(sim, n_steps, None, engine))
    return _TEACHERS[engine]


def run_batch(store: str | Path, plan: Plan, batch: BatchSpec, resume: bool = False,
              on_progress: ProgressHook | None = None) -> BatchResult:
    started = time.perf_counter()
    variant = plan.batch_variant(batch)
    sim = Simulation(plan.runs(batch), variant.protocol, teachers_for(plan.engine))
    records_done = 0
    resumed_from = 0
    payload = None
    location = StoreLocation(store)
    if resume:
        try:
            payload = load_checkpoint(store, batch)
            if payload is not None:
                Manifest.load(location, batch.label())  # readable, or the batch starts again
        except (ValueError, KeyError, TypeError):
            payload = None  # damaged checkpoint or manifest: the batch runs again from its start, deterministically
        if payload is not None:
            sim.restore(payload)
            records_done = int(payload["records_done"])
            resumed_from = sim.state.step
            if on_progress:
                on_progress(resumed_from * len(sim.runs))
    recorder = ChunkRecorder(sim, plan.variables, variant.every, plan.chunk_records)
    writer = ChunkWriter(store, plan, batch)
    manifest = Manifest.load(location, batch.label()) if payload is not None else Manifest(location, batch.label())
    total, n_records = variant.protocol.total_steps, variant.n_records
    diverged: dict[int, int] = {}
    if payload is not None:
        diverged = {int(run): int(step) for run, step in payload["diverged"]}
    # task supervised: evaluations at these steps; those at or before a resumed step were written before
    eval_steps = variant.protocol.eval_steps
    evals_done = sum(1 for k in eval_steps if k < sim.state.step or (payload is not None and k == sim.state.step))

    def evaluate_due() -> None:
        nonlocal evals_done
        while evals_done < len(eval_steps) and eval_steps[evals_done] == sim.state.step:
            with np.errstate(all="ignore"):
                results = evaluate(sim, lambda frozen, n, hook: advance(frozen, n, hook, plan.engine))
            written = writer.write_evaluation(evals_done, results)
            manifest.record([key for name, selection in written
                             for key in written_keys(writer.eval_arrays[name], selection)])
            evals_done += 1

    evaluate_due()
    while not sim.done:
        records_target = min(records_done + plan.chunk_records, n_records)
        end_step = records_target * variant.every if records_target < n_records else total
        before = sim.state.step
        while sim.state.step < end_step:
            stop = min([end_step] + [k for k in eval_steps[evals_done:] if k > sim.state.step])
            with np.errstate(all="ignore"):  # a diverging run must not stop the others; it is reported instead
                advance(sim, stop - sim.state.step, recorder, plan.engine)
            evaluate_due()
        for run in np.flatnonzero(_diverged_runs(sim)):
            diverged.setdefault(int(run), _first_bad_step(recorder, int(run), sim.state.step))
        steps, data = recorder.take()
        if steps and data:
            written = writer.write(records_done, data)
            manifest.record([key for name, selection in written
                             for key in written_keys(writer.arrays[name], selection)])
            manifest.save()  # before the checkpoint: a checkpoint never covers chunks the manifest lacks
        records_done += len(steps)
        payload = sim.checkpoint()
        payload["records_done"] = np.array(records_done)
        payload["diverged"] = np.array(sorted(diverged.items()), dtype=np.int64).reshape(-1, 2)
        save_checkpoint(store, batch, payload)
        if on_progress:
            on_progress((sim.state.step - before) * len(sim.runs))
    return BatchResult(batch.index, sim.state.step, records_done, resumed_from, diverged,
                       time.perf_counter() - started)


def _first_bad_step(recorder: ChunkRecorder, run: int, last: int) -> int:
    """The first recorded step of this chunk at which ``run`` holds a non-finite value (else the chunk's end)."""
    step = recorder.first_nonfinite_step(run)
    return last if step is None else step
