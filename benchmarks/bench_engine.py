"""Microseconds per seed-step of the NumPy engine and the compiled kernel, on the paper's networks.

    python benchmarks/bench_engine.py          # ~1-2 minutes: the table below
    python benchmarks/bench_engine.py --full   # plus a whole Fig. 3abc run (10 seeds, 1.01e6 steps) compiled

Cases (training phase, after settling, recording every 1000 steps as the paper's runs do):
  * Fig3abc: layers 5-20-10-20-5, PAL, OU noise ("const"), logistic, bw_only, 10 seeds in one batch,
    dataset_size 100, Tpres 1 ms, dt 0.01 ms;
  * Fig4ab 1-1-1 networks, BP / FA / PAL, fw_bw, 10 seeds each (batches of this length, 5e8 run-steps, get the
    lanes kernel compiled for their network; the generic lanes kernel is timed alongside).
Times are wall-clock; each figure is the best of several chunks (this machine is shared, and the best chunk is
the one least disturbed), with the median in brackets. A script, not a test: nothing is asserted.

For scale, the published reference code (its own ``run_exp.run`` loop, one seed, recording every 1000 steps)
took on this machine, in µs per step: Fig3abc 455-538; 1-1-1 fw_bw BP 165-179, FA 164-181, PAL 222-247 (three
runs each, 2026-11-28; the driver runs the published code, so it is not part of this repository).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from palmc.engine.compiled import driver, lanes, neurons  # noqa: E402
from palmc.engine.params import ModelParams, Protocol, RunSpec  # noqa: E402
from palmc.engine.tasks import Simulation  # noqa: E402
from palmc.engine.variables import variables_for  # noqa: E402
from palmc.store.recorder import ChunkRecorder  # noqa: E402

SEEDS = (123, 456, 789, 111, 222, 1, 3, 5, 7, 9)
RECORDED = ("MSE", "error", "input", "WPP", "WIP", "BPP", "BPI", "dWPP", "vbas")  # Fig3abc's rec_* flags
EVERY = 1000


def fig3abc(epochs: int = 100) -> Simulation:
    """experiments/Fig3abc/params.json (the reference's values)."""
    p = ModelParams(model="PAL", layers=(5, 20, 10, 20, 5), activations=("logistic",) * 4, dt=0.01, Tpres=1.0,
                    settling_time=100.0, eta_fw=(1.0,) * 4, eta_bw=(50.0,) * 3, eta_IP=(0.0,) * 3,
                    eta_PI=(5.0,) * 3, alpha=(1e-5,) * 3, noise_type="OU", noise_mode="const",
                    noise_scale=(0.05,) * 3, tauxi=0.1, dtxi=0.01, tauHP=0.1, tauLO=100.0)
    proto = Protocol(task="bw_only", dataset_size=100, epochs=epochs, steps_per_presentation=100,
                     settling_steps=10000)
    return Simulation([RunSpec(s, "PAL", p, SEEDS[0], SEEDS[0]) for s in SEEDS], proto)


def fig4ab(model: str) -> Simulation:
    """experiments/Fig4ab/<model>/params.json, fw_bw with a 1-1-1 teacher."""
    pal = model == "PAL"
    p = ModelParams(model=model, layers=(1, 1, 1), activations=("logistic",) * 2, dt=0.01, Tpres=1.0,  # type: ignore[arg-type]
                    settling_time=100.0, eta_fw=(2.0, 0.5), eta_bw=(20.0 if pal else 0.0,), eta_IP=(10.0,),
                    eta_PI=(0.5 if pal else 0.0,), alpha=(1e-6,), noise_scale=(0.01,),
                    init_WPP_range=(-1.0, 0.0), init_BPP_range=(-1.0, 0.0), init_teacher_WPP_range=(2.0, 2.0))
    proto = Protocol(task="fw_bw", dataset_size=100, epochs=5000, steps_per_presentation=100, settling_steps=10000)
    return Simulation([RunSpec(s, model, p, SEEDS[0], SEEDS[0]) for s in SEEDS], proto)


def recorder_for(sim: Simulation, n_steps: int) -> ChunkRecorder:
    variables = variables_for(RECORDED, sim.protocol.task, {run.params.model for run in sim.runs})
    return ChunkRecorder(sim, variables, EVERY, chunk_records=n_steps // EVERY + 2)


def chunk_time(sim: Simulation, advance: Callable[[Simulation, int, ChunkRecorder], None], steps: int) -> float:
    """Microseconds per seed-step of one chunk of ``steps`` steps."""
    rec = recorder_for(sim, steps)
    t0 = time.perf_counter()
    advance(sim, steps, rec)
    elapsed = time.perf_counter() - t0
    rec.take()
    return elapsed / (steps * len(sim.runs)) * 1e6


def numpy_advance(sim: Simulation, n: int, rec: ChunkRecorder) -> None:
    sim.advance(n, on_step=rec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--full", action="store_true", help="also time a whole Fig3abc run with the kernel")
    parser.add_argument("--numpy-steps", type=int, default=200, help="steps per timed chunk, NumPy engine")
    # the runner's own chunk for Fig3abc (65 records of 1000 steps; Fig4ab's are 2000 records): each advance
    # call packs the state and the generators once, which shorter chunks would overcharge
    parser.add_argument("--kernel-steps", type=int, default=65_000, help="steps per timed chunk, kernel")
    parser.add_argument("--chunks", type=int, default=5, help="timed chunks per engine and case")
    args = parser.parse_args()

    first_call = driver.load()  # loads the cached kernels (or compiles them once for this machine)
    hits = neurons.advance_segment.stats.cache_hits and lanes.advance_segment.stats.cache_hits
    source = "loaded from cache" if hits else "compiled (not cached yet)"
    print(f"kernels (both layouts) first call: {first_call:.2f} s, {source}")
    sim = fig4ab("BP")
    start = time.perf_counter()
    driver.advance(sim, 2)  # a Fig4ab batch is long enough for the lanes kernel specialised to its network
    first_call = time.perf_counter() - start
    (fixed,) = lanes.specialised.values()
    source = "loaded from cache" if fixed.stats.cache_hits else "compiled (not cached yet)"
    print(f"lanes kernel specialised to the 1-1-1 network, first call: {first_call:.2f} s, {source}")
    print("compiled = what driver.advance picks for a run of this size; the other layout (and for lanes, the")
    print("generic kernel, not specialised to the network) are timed alongside")
    print()
    print(f"{'case':10s} {'numpy us/seed-step':>24s} {'compiled us/seed-step':>24s} {'speed-up':>9s}"
          f"   {'layout':8s} {'other layout':>22s} {'generic lanes':>17s}")
    cases: list[tuple[str, Callable[[], Simulation]]] = [
        ("Fig3abc", fig3abc), ("1-1-1 BP", lambda: fig4ab("BP")), ("1-1-1 FA", lambda: fig4ab("FA")),
        ("1-1-1 PAL", lambda: fig4ab("PAL")),
    ]
    for name, build in cases:
        chosen = driver.layout_for(build())
        other = "lanes" if chosen == "neurons" else "neurons"
        variants: dict[str, Callable[[Simulation, int, ChunkRecorder], None]] = {
            "numpy": numpy_advance, "compiled": driver.advance,
            "other": functools.partial(driver.advance, layout=other, specialise=False)}
        if chosen == "lanes":
            variants["generic"] = functools.partial(driver.advance, layout="lanes", specialise=False)
        sims = []
        for _ in variants:  # one simulation per variant
            sim = build()
            driver.advance(sim, sim.protocol.settling_steps + 50, None)  # into training, quickly
            sims.append(sim)
        times: dict[str, list[float]] = {key: [] for key in variants}
        for _ in range(args.chunks):  # alternate, so that all variants see the same machine load
            for sim, (key, advance) in zip(sims, variants.items()):
                times[key].append(chunk_time(sim, advance, args.numpy_steps if key == "numpy" else args.kernel_steps))
        best = {key: (min(t), statistics.median(t)) for key, t in times.items()}
        (np_best, np_med), (k_best, k_med), (o_best, o_med) = best["numpy"], best["compiled"], best["other"]
        generic = f"{best['generic'][0]:6.3f} [{best['generic'][1]:6.3f}]" if "generic" in best else ""
        print(f"{name:10s} {np_best:11.2f} [{np_med:8.2f}]    {k_best:11.3f} [{k_med:8.3f}]    {np_best / k_best:7.0f}x"
              f"   {chosen:8s} {other:>7s} {o_best:6.3f} [{o_med:6.3f}] {generic:>17s}")

    if args.full:
        sim = fig3abc()
        total = sim.protocol.total_steps
        rec = recorder_for(sim, 100 * EVERY)
        t0 = time.perf_counter()
        while not sim.done:  # chunks of 100 records, as the runner writes them
            driver.advance(sim, 100 * EVERY, rec)
            rec.take()
        wall = time.perf_counter() - t0
        print()
        print(f"full Fig3abc, compiled: {total} steps x {len(sim.runs)} seeds in {wall:.1f} s "
              f"({wall / (total * len(sim.runs)) * 1e6:.3f} us per seed-step, recording every {EVERY} steps)")


if __name__ == "__main__":
    main()
