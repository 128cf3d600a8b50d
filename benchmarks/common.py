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
            dataset_size: int | None = None, engine: str = "compiled", first_seed: int = 0):
    """The Fig3abc experiment (5-20-10-20-5 PAL, bw_only), with fewer epochs, ``seeds`` of its seeds from the
    ``first_seed``-th on, and a chosen recording."""
    base = load_experiment(ROOT / "experiments" / "fig3abc.yaml").to_dict()
    base["input"]["epochs"] = epochs
    if dataset_size is not None:
        base["input"]["dataset_size"] = dataset_size
    base["seeds"] = base["seeds"][first_seed:first_seed + seeds]
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
    return simulate_fresh_together([dict(experiment, workers=workers, seeds_per_batch=seeds_per_batch)])[0]


def simulate_fresh_together(runs: list[dict]) -> list[dict]:
    """``simulate_fresh(**run)`` for every run of ``runs``, all at the same time, each in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for i, run in enumerate(runs):
            experiment = dict(run)
            options = {"workers": experiment.pop("workers", 1),
                       "seeds_per_batch": experiment.pop("seeds_per_batch", None), "experiment": experiment}
            children.append(subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(options), f"{tmp}/s{i}.zarr"],
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outputs = [child.communicate() for child in children]
    for child, (_, err) in zip(children, outputs):
        if child.returncode:
            raise subprocess.CalledProcessError(child.returncode, child.args, stderr=err)
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
