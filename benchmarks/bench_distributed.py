"""Speed-up of a 2-worker local Dask cluster over 1 worker on 10 seeds of Fig3abc (shortened).

Usage: python benchmarks/bench_distributed.py [--epochs N] [--repeats K]

Each timed run is one ``palmc.simulate`` call in a fresh Python process (palmc imported, nothing else warm, as
in ``palmc simulate``), so the 2-worker figure includes everything a user waits for: importing Dask, starting
the cluster and its dashboard, the tasks, the store. "1 worker" is palmc's own one-worker path (in-process, no
cluster). The runs alternate (1, 2, 1, 2, ...) so that both see the same machine load; the best run of each is
the least disturbed one, and the median is printed too. The default, 50 epochs, is half of Fig3abc
(5.1e6 seed-steps in 2 batches of 5 seeds); ``--epochs 100`` is the whole experiment.

What keeps the figure under 2x is start-up that does not shrink with the run: importing Dask and starting the
cluster (~0.3-0.4 s), then loading the compiled kernel (~0.6 s, numba's own start-up), which palmc does once,
before forking the workers (they inherit it), while a forked helper lays out the store. The one-worker path
overlaps its load with the layout the same way. On this machine (two virtual cores of a shared host) the same
run's wall time also varies by up to ~30 % from one minute to the next, so a few repeats can move the figure by
0.1-0.2x; the median of the paired ratios is the steadiest of the three. Measured here on 2026-11-28 (8 repeats):
1.80x best to best, 1.75x median to median, 1.73x paired; before the kernel was loaded once and the layout moved
aside (each worker loaded its own: tasks started ~1.4-1.9 s after the call instead of ~1.1 s), 1.59x / 1.77x /
1.68x. The whole experiment (``--epochs 100``, 3 repeats): 1.96x best to best, 1.97x median (1.85x / 1.89x
before that change).
"""

from __future__ import annotations

import argparse
import statistics

from common import simulate_fresh


def timed(workers: int, epochs: int) -> float:
    """Wall time of one simulate call in a fresh process."""
    return simulate_fresh(workers=workers, seeds_per_batch=5, epochs=epochs, seeds=10)["wall"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    timed(1, 1)  # the kernel's on-disk cache, compiled once for this machine
    times: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            times[workers].append(timed(workers, args.epochs))
    steps = 10 * (10_000 + args.epochs * 10_000)
    print(f"10 seeds x {args.epochs} epochs of Fig3abc ({steps:.2e} seed-steps), 2 batches of 5 seeds, "
          f"{args.repeats} alternating runs each")
    for workers in (1, 2):
        runs = ", ".join(f"{t:.2f}" for t in times[workers])
        print(f"{workers} worker{'s' if workers > 1 else ' '}: best {min(times[workers]):6.2f} s, "
              f"median {statistics.median(times[workers]):6.2f} s   ({runs})")
    best = min(times[1]) / min(times[2])
    median = statistics.median(times[1]) / statistics.median(times[2])
    paired = statistics.median(one / two for one, two in zip(times[1], times[2]))
    print(f"speed-up:  {best:.2f}x best to best, {median:.2f}x median to median, {paired:.2f}x median of the "
          f"paired runs  (target >= 1.8x)")


if __name__ == "__main__":
    main()
