"""Speed-up of a 2-worker local Dask cluster over 1 worker on 10 seeds of Fig3abc (shortened).

Usage: python benchmarks/bench_distributed.py [--epochs N]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import fig3abc

import palmc


def timed(workers: int, epochs: int) -> float:
    exp = fig3abc(epochs=epochs, seeds=10)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        palmc.simulate(exp, f"{tmp}/s.zarr", workers=workers, seeds_per_batch=5, progress=False)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    timed(1, 1)  # warm the kernel cache
    one = timed(1, args.epochs)
    two = timed(2, args.epochs)
    steps = 10 * (10_000 + args.epochs * 10_000)
    print(f"10 seeds x {args.epochs} epochs of Fig3abc ({steps:.2e} seed-steps), 2 batches of 5 seeds")
    print(f"1 worker:  {one:.2f} s")
    print(f"2 workers: {two:.2f} s")
    print(f"speed-up:  {one / two:.2f}x  (target >= 1.8x)")


if __name__ == "__main__":
    main()
