"""Hostile and huge inputs are answered quickly and in little memory (issue #19).

Prints, for each case, the wall time of ``palmc validate`` in a fresh process (palmc imported first, not
timed; best and median of ``--repeat``), the process's peak RSS (imports included) and its exit status: a
324-byte YAML alias bomb (9**9 values once expanded), a self-referencing alias, 5,000 nested brackets, an
experiment of 100,000 seeds, one of 1e9 epochs recorded every step. Targets: the bomb refused in < 2 s and
< 200 MB; the others linear (no per-step or quadratic work).
Usage: python benchmarks/bench_hostile.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.experiments import write_experiment  # noqa: E402

BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))

MEASURE = """
import json, resource, sys, time
from typer.testing import CliRunner
from palmc.cli import app
import palmc.plan, palmc.schema, yaml  # what validate imports, so that only its own work is timed
start = time.perf_counter()
result = CliRunner().invoke(app, ["validate", sys.argv[1]])
wall = time.perf_counter() - start
print(json.dumps({"wall": wall, "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "exit": result.exit_code, "first": result.output.strip().splitlines()[0][:110]}))
"""


def measure(path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", MEASURE, str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cases = {
            f"alias bomb ({len(BOMB)} bytes)": BOMB,
            "self-referencing alias": "a: &a [*a]\n",
            "5,000 nested brackets": "[" * 5000 + "]" * 5000,
        }
        files = {}
        for name, text in cases.items():
            files[name] = folder / f"{len(files)}.yaml"
            files[name].write_text(text)
        files["100,000 seeds"] = write_experiment(folder, name="seeds", seeds=tuple(range(100_000)))
        files["1e9 epochs, every step"] = write_experiment(folder, name="long", epochs=10**9, every=1)
        files["baseline: a small experiment"] = write_experiment(folder, name="small")
        print(f"{'case':<32} {'best s':>7} {'median s':>9} {'peak MiB':>9}  exit  first line")
        for name, path in files.items():
            runs = [measure(path) for _ in range(args.repeat)]
            walls = [r["wall"] for r in runs]
            print(f"{name:<32} {min(walls):7.2f} {statistics.median(walls):9.2f} "
                  f"{max(r['rss_mib'] for r in runs):9.0f}  {runs[0]['exit']:>4}  {runs[0]['first']}")


if __name__ == "__main__":
    main()
