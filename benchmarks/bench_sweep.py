"""A parameter sweep at scale: does its cost follow its seed-steps rather than its number of variants?

Usage: python benchmarks/bench_sweep.py [--sizes 400 4000] [--workers N] [--repeats K] [--keep DIR]

The sweep is the Fig. 4 teacher-student 1-1-1 network (experiments/fig4ab.yaml: BP, FA and PAL), 5 seeds, 2 epochs
of 20 samples after 10 ms of settling (5,000 steps per run), over a grid of ``plasticity.eta_fw`` x
``noise.tauxi``: 20 x 20 = 400 variants (6,000 runs, 3e7 seed-steps) and 200 x 20 = 4,000 variants (3e8). Its
baseline is one variant with the same seed-steps: the same 15 runs made long enough (1,000 epochs for the
400-variant size, 10,000 for the 4,000-variant one), recorded as often.

Each timed run is ``palmc simulate`` in a fresh process, as a user runs it. Printed per run: wall time, CPU time
of the palmc process and all its workers, peak RSS of the palmc process and of its largest worker, files in the
store, ERROR lines or tracebacks on stderr, seed-steps per second; per size, the ratio of the sweep's seed-steps
per second to its baseline's (best of the repeats; sweep and baseline alternate, so both see the same load).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from palmc.schema import load_experiment, validate_experiment  # noqa: E402

SEEDS = [123, 456, 789, 111, 222]
TAUXI_VALUES = 20

# Runs ``palmc simulate`` in this process (as the command does) and reports the process's own peak RSS beside
# that of its largest reaped descendant (a Dask worker).
_CHILD = textwrap.dedent("""
    import json, resource, sys
    from palmc.cli import app
    try:
        app(sys.argv[1:], standalone_mode=False)
    finally:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(json.dumps({"rss_mib": own, "worker_rss_mib": workers}), file=sys.stderr)
""")


def experiment(n_variants: int, baseline: bool) -> tuple[str, int]:
    """The sweep of ``n_variants`` (or, ``baseline``, its one-variant counterpart) as YAML, and its seed-steps."""
    base = load_experiment(ROOT / "experiments" / "fig4ab.yaml").to_dict()
    base["name"] = f"sweep{n_variants}" + ("_baseline" if baseline else "")
    base["seeds"] = SEEDS
    base["dynamics"]["settling_time"] = 10.0
    base["input"].update(dataset_size=20, epochs=2)
    n_eta = n_variants // TAUXI_VALUES
    if baseline:
        base["input"]["epochs"] = n_variants * 5 // 2  # 15 runs of 1,000 + 2,000 E steps ~ the sweep's seed-steps
    else:
        eta_fw = base["plasticity"]["eta_fw"]
        base["sweep"] = {"grid": {
            "plasticity.eta_fw": [[round(x * f, 6) for x in eta_fw] for f in np.geomspace(0.1, 2.0, n_eta)],
            "noise.tauxi": [round(float(t), 6) for t in np.geomspace(0.05, 1.0, TAUXI_VALUES)],
        }}
    exp = validate_experiment(base, source="bench_sweep")
    steps = sum(v.protocol().total_steps for _, v in exp.variants()) * len(exp.seeds) * len(exp.model_names())
    return exp.to_yaml(), steps


def files_in(path: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def timed(yaml_text: str, seed_steps: int, workdir: Path, workers: int | None) -> dict:
    spec = workdir / "experiment.yaml"
    spec.write_text(yaml_text)
    store = workdir / "store.zarr"
    args = [sys.executable, "-c", _CHILD, "simulate", str(spec), "-o", str(store), "--overwrite", "--no-progress"]
    if workers:
        args += ["--workers", str(workers)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"palmc simulate failed:\n{done.stderr[-3000:]}")
    lines = done.stderr.strip().splitlines()
    rss = json.loads(lines[-1])
    noise = [line for line in lines[:-1] if "ERROR" in line or "Traceback" in line]
    return {
        "wall": wall,
        "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime),
        "rss_mib": rss["rss_mib"],
        "worker_rss_mib": rss["worker_rss_mib"],
        "files": files_in(store),
        "error_lines": len(noise),
        "first_error": noise[0] if noise else "",
        "rate": seed_steps / wall,
    }


def show(label: str, seed_steps: int, result: dict) -> None:
    print(f"  {label:<22} wall {result['wall']:7.1f} s  cpu {result['cpu']:7.1f} s  "
          f"rss {result['rss_mib']:6.0f} MiB (worker {result['worker_rss_mib']:5.0f} MiB)  "
          f"files {result['files']:6d}  errors {result['error_lines']}  "
          f"{result['rate'] / 1e6:6.2f} M seed-steps/s ({seed_steps:.2e} seed-steps)", flush=True)
    if result["first_error"]:
        print(f"    first error line: {result['first_error'][:200]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[400, 4000], help="numbers of variants")
    parser.add_argument("--workers", type=int, default=None, help="palmc simulate --workers (default: its own)")
    parser.add_argument("--repeats", type=int, default=1)
    options = parser.parse_args()
    print(f"bench_sweep: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    for n_variants in options.sizes:
        sweep, sweep_steps = experiment(n_variants, baseline=False)
        single, single_steps = experiment(n_variants, baseline=True)
        print(f"{n_variants} variants x 3 models x {len(SEEDS)} seeds", flush=True)
        results: dict[str, list[dict]] = {"sweep": [], "single": []}
        for _ in range(options.repeats):
            for kind, text, steps in (("sweep", sweep, sweep_steps), ("single", single, single_steps)):
                with tempfile.TemporaryDirectory() as tmp:
                    result = timed(text, steps, Path(tmp), options.workers)
                results[kind].append(result)
                show(f"{kind} ({n_variants if kind == 'sweep' else 1} variant{'s' * (kind == 'sweep')})",
                     steps, result)
        best = {kind: max(r["rate"] for r in runs) for kind, runs in results.items()}
        ratios = [s["rate"] / b["rate"] for s, b in zip(results["sweep"], results["single"])]
        print(f"  seed-steps/s, sweep / single variant: {best['sweep'] / best['single']:.2f} best to best, "
              f"{statistics.median(ratios):.2f} median of pairs; load average now {os.getloadavg()[0]:.1f}",
              flush=True)


if __name__ == "__main__":
    main()
