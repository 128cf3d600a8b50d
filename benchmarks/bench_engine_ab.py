"""The compiled engine of two source trees side by side, alternating: is one slower than the other?

    python benchmarks/bench_engine_ab.py /path/to/tree-A /path/to/tree-B --repeats 3

For every case of bench_engine.py (Fig3abc: 5-20-10-20-5 PAL bw_only; 1-1-1 fw_bw BP, FA, PAL, which get the
lanes kernel specialised to their network) and every repeat, a fresh process of tree A, then one of tree B (each
with its own tree first on PYTHONPATH, so each uses its own code and numba cache), advances the case into training
and times ``--chunks`` chunks with the compiler's choice of kernel, recording as bench_engine.py does. Both the
CPU time of the process and the wall-clock time are taken: on a shared machine the CPU time is the steadier
figure. Printed per case: best and median over all chunks, for A and B, and B/A. A script, not a test: nothing is
asserted. Run each tree once before (its first call may compile; that time is not in the figures).
The trees need bench_engine.py's ``fig3abc``/``fig4ab``/``recorder_for`` and either ``palmc.engine.compiled``
or (before issue #23) ``palmc.engine.kernel``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

CASES = {"Fig3abc": ("fig3abc", 65_000), "1-1-1 BP": ("BP", 400_000), "1-1-1 FA": ("FA", 400_000),
         "1-1-1 PAL": ("PAL", 400_000)}

# run inside the tree under test: prints one line "cpu wall" (us per seed-step) per chunk
CHUNKS = """
import sys, time
sys.path.insert(0, "benchmarks")
import bench_engine
try:
    from palmc.engine.compiled.driver import advance
except ImportError:  # the engine before issue #23
    from palmc.engine.kernel import advance
case, steps, chunks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sim = bench_engine.fig3abc() if case == "fig3abc" else bench_engine.fig4ab(case)
advance(sim, sim.protocol.settling_steps + 50, None)  # into training
for _ in range(chunks):
    rec = bench_engine.recorder_for(sim, steps)
    cpu, wall = time.process_time(), time.perf_counter()
    advance(sim, steps, rec)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rec.take()
    print(cpu / (steps * len(sim.runs)) * 1e6, wall / (steps * len(sim.runs)) * 1e6)
"""


def chunk_times(tree: Path, case: str, steps: int, chunks: int) -> list[tuple[float, float]]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", CHUNKS, case, str(steps), str(chunks)], cwd=tree, env=env,
                         check=True, capture_output=True, text=True).stdout
    return [(float(cpu), float(wall)) for cpu, wall in (line.split() for line in out.splitlines() if line.strip())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunks", type=int, default=4, help="timed chunks per case and process")
    args = parser.parse_args()
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for repeat in range(args.repeats):
        for name, (case, steps) in CASES.items():
            for label, tree in (("A", args.a), ("B", args.b)):
                times.setdefault((name, label), []).extend(chunk_times(tree.resolve(), case, steps, args.chunks))
        print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    print(f"A = {args.a}\nB = {args.b}")
    print(f"us per seed-step, best [median] of {args.repeats} x {args.chunks} chunks")
    print(f"{'case':10s} {'':5s} {'A':>17s} {'B':>17s} {'B/A best':>9s} {'B/A median':>11s}")
    for name in CASES:
        for column, kind in ((0, "cpu"), (1, "wall")):
            a = [t[column] for t in times[(name, "A")]]
            b = [t[column] for t in times[(name, "B")]]
            a_best, b_best, a_med, b_med = min(a), min(b), statistics.median(a), statistics.median(b)
            print(f"{name:10s} {kind:5s} {a_best:7.4f} [{a_med:7.4f}] {b_best:7.4f} [{b_med:7.4f}] "
                  f"{b_best / a_best:9.3f} {b_med / a_med:11.3f}")


if __name__ == "__main__":
    main()
