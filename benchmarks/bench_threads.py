"""Does the compiled kernel run in parallel in two threads of one process (it releases the GIL)?

Advances two Fig. 3abc batches (10 seeds each, recording every 1000 steps) one after the other, then both at
once in two threads. With the GIL released the two-thread wall time is close to one batch's time (given two
free cores: check ``uptime`` first, this machine is shared). Usage: python benchmarks/bench_threads.py [--steps N]
"""

from __future__ import annotations

import argparse
import threading
import time

from bench_engine import fig3abc, recorder_for

from palmc.engine.compiled import driver
from palmc.engine.tasks import Simulation


def run(sim: Simulation, steps: int) -> None:
    rec = recorder_for(sim, steps)
    driver.advance(sim, steps, rec)
    rec.take()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=20_000, help="training steps per batch and trial")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    # long enough for every trial (the first batch runs 3 times per trial): an ended run would time nothing
    epochs = 3 * args.trials * args.steps // 10_000 + 2
    sims = [fig3abc(epochs), fig3abc(epochs)]
    for sim in sims:  # load the kernel, get past settling
        driver.advance(sim, sim.protocol.settling_steps + 50, None)
    one, seq, par = [], [], []
    for _ in range(args.trials):
        t0 = time.perf_counter()
        run(sims[0], args.steps)
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for sim in sims:
            run(sim, args.steps)
        seq.append(time.perf_counter() - t0)
        threads = [threading.Thread(target=run, args=(sim, args.steps)) for sim in sims]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        par.append(time.perf_counter() - t0)
    print(f"one batch:                  {min(one):.2f} s  (best of {args.trials})")
    print(f"two batches, one thread:    {min(seq):.2f} s")
    print(f"two batches, two threads:   {min(par):.2f} s  -> speed-up {min(seq) / min(par):.2f}x (2.0x = fully parallel)")


if __name__ == "__main__":
    main()
