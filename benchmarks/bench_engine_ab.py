"""bench_engine.py in two source trees, alternating: is one tree's compiled engine slower than the other's?

    python benchmarks/bench_engine_ab.py /path/to/tree-A /path/to/tree-B --repeats 4

Each repeat runs ``benchmarks/bench_engine.py`` of tree A, then of tree B (each in a fresh process with its own
tree first on PYTHONPATH, so both use their own numba cache), and reads the compiled engine's microseconds per
seed-step of every case. Printed per case: best and median over all chunks of all repeats for A and B, and B/A.
A script, not a test: nothing is asserted. (Compile both trees' kernels once before timing them: the first run
of a tree may compile.)
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROW = re.compile(r"^(Fig3abc|1-1-1 BP|1-1-1 FA|1-1-1 PAL)\s+[\d.]+\s+\[\s*[\d.]+\]\s+([\d.]+)\s+\[\s*([\d.]+)\]")


def run(tree: Path, args: list[str]) -> dict[str, tuple[float, float]]:
    """Compiled (best, median) us per seed-step of every case, from one run of the tree's bench_engine.py."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, str(tree / "benchmarks" / "bench_engine.py"), *args], cwd=tree, env=env,
                         check=True, capture_output=True, text=True).stdout
    return {m.group(1): (float(m.group(2)), float(m.group(3))) for m in map(ROW.match, out.splitlines()) if m}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=3, help="chunks per case in each run of bench_engine.py")
    args = parser.parse_args()
    bench_args = ["--chunks", str(args.chunks), "--numpy-steps", "20"]
    bests: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    medians: dict[str, dict[str, list[float]]] = {"A": {}, "B": {}}
    for repeat in range(args.repeats):
        for label, tree in (("A", args.a), ("B", args.b)):
            for case, (best, median) in run(tree.resolve(), bench_args).items():
                bests[label].setdefault(case, []).append(best)
                medians[label].setdefault(case, []).append(median)
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    print(f"A = {args.a}\nB = {args.b}\ncompiled engine, us per seed-step: best [median of the runs' medians]")
    print(f"{'case':10s} {'A':>18s} {'B':>18s} {'B/A best':>9s} {'B/A median':>11s}")
    for case in bests["A"]:
        a_best, b_best = min(bests["A"][case]), min(bests["B"][case])
        a_med, b_med = statistics.median(medians["A"][case]), statistics.median(medians["B"][case])
        print(f"{case:10s} {a_best:8.3f} [{a_med:7.3f}] {b_best:8.3f} [{b_med:7.3f}] {b_best / a_best:9.3f} "
              f"{b_med / a_med:11.3f}")


if __name__ == "__main__":
    main()
