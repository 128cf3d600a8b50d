"""Shared helpers of the benchmark scripts: shortened copies of the paper's experiments."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from palmc.schema import load_experiment, validate_experiment  # noqa: E402


def fig3abc(epochs: int = 1, seeds: int = 10, every: int = 1000, variables: list[str] | None = None,
            dataset_size: int | None = None, engine: str = "compiled"):
    """The Fig3abc experiment (5-20-10-20-5 PAL, bw_only), with fewer epochs/seeds and a chosen recording."""
    base = load_experiment(ROOT / "experiments" / "fig3abc.yaml").to_dict()
    base["input"]["epochs"] = epochs
    if dataset_size is not None:
        base["input"]["dataset_size"] = dataset_size
    base["seeds"] = base["seeds"][:seeds]
    base["recording"]["every"] = every
    if variables is not None:
        base["recording"]["variables"] = variables
    base.setdefault("compute", {})["engine"] = engine
    return validate_experiment(base, source="benchmark")


_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    sys.path.insert(0, {bench!r})
    from common import fig3abc
    import palmc
    simulate = palmc.simulate  # (imports the API, as the palmc command does before it starts)
    options = json.loads(sys.argv[1])
    exp = fig3abc(**options.pop("experiment"))
    start = time.perf_counter()
    simulate(exp, sys.argv[2], overwrite=True, progress=False, **options)
    wall = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({{"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "max_rss_mib": usage.ru_maxrss / 1024}}))
""").format(bench=str(ROOT / "benchmarks"))


def simulate_fresh(workers: int = 1, seeds_per_batch: int | None = None, **experiment: object) -> dict:
    """One ``palmc.simulate`` of ``fig3abc(**experiment)`` in a fresh Python process (palmc imported, nothing
    else warm, as in ``palmc simulate``): its wall time, the CPU time and peak RSS of that process (not of any
    worker processes it starts)."""
    options = {"experiment": experiment, "workers": workers, "seeds_per_batch": seeds_per_batch}
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(options), f"{tmp}/s.zarr"],
                             check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
