"""Streamed recording: peak memory does not grow with run length, and recording costs little.

Prints (1) peak RSS of `simulate` for the same experiment at 1x and 10x the epochs, recording every 100 steps,
each in a fresh process; (2) wall time with the Fig3abc default variables recorded every 1000 steps vs
recording nothing, alternated and best of ``--repeat`` (the machine is shared: single runs vary by 10 %).
Usage: python benchmarks/bench_store.py [--repeat N]
"""

from __future__ import annotations

import argparse

from common import simulate_fresh as measure


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3, help="timed pairs (recorded, nothing); best of each")
    args = parser.parse_args()
    # warm the compiled kernel's cache so neither measurement pays the compile
    measure(epochs=1, seeds=2, every=100, dataset_size=5)
    small = measure(epochs=2, seeds=10, every=100, dataset_size=20)
    large = measure(epochs=20, seeds=10, every=100, dataset_size=20)
    growth = large["max_rss_mib"] / small["max_rss_mib"] - 1
    print(f"peak RSS, 1x epochs (2):   {small['max_rss_mib']:.0f} MiB  ({small['wall']:.1f} s)")
    print(f"peak RSS, 10x epochs (20): {large['max_rss_mib']:.0f} MiB  ({large['wall']:.1f} s)")
    print(f"growth: {100 * growth:+.1f} %  (target < 20 %)")

    # CPU time (user + sys of the run's process, imports and start-up included) is printed beside the wall
    # time: it is far less disturbed by other processes on a shared machine
    times: dict[str, list[dict]] = {"recorded": [], "nothing": []}
    for _ in range(args.repeat):  # alternate, so that both see the same machine load
        times["recorded"].append(measure(epochs=30, seeds=10, every=1000))
        times["nothing"].append(measure(epochs=30, seeds=10, every=1000, variables=[]))
    for key in ("wall", "cpu"):
        recorded = min(t[key] for t in times["recorded"])
        nothing = min(t[key] for t in times["nothing"])
        runs = " ".join(f"{r[key]:.2f}/{n[key]:.2f}" for r, n in zip(times["recorded"], times["nothing"]))
        print(f"{key:4s} Fig3abc 10 seeds x 30 epochs, default variables every 1000 steps vs nothing: "
              f"{recorded:.2f} / {nothing:.2f} s, best of {args.repeat} (all: {runs})")
        print(f"     recording overhead: {100 * (recorded / nothing - 1):+.1f} %  (target < 10 %)")


if __name__ == "__main__":
    main()
