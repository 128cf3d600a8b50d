"""Two `palmc simulate` processes on one store, started a moment apart: how often both succeed (goal: never) and
whether the surviving store equals a lone run (goal: always).

Each race starts the first writer, waits a delay (0 to 0.6 s, cycling), starts the second, with the flags of
the round (neither/second/both with --overwrite; "both" races replace a complete store). Prints every race and
the totals. Usage: python benchmarks/bench_race.py [--races N]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import xarray as xr  # noqa: E402

import palmc  # noqa: E402
from tests.experiments import write_experiment  # noqa: E402

FLAGS = [((), ()), ((), ("--overwrite",)), (("--overwrite",), ("--overwrite",))]
DELAYS = [0.0, 0.2, 0.4, 0.6]


def data(store: Path) -> xr.Dataset:
    ds = palmc.open(store).drop_vars(["run_status", "diverged_step"]).load()
    ds.attrs = {}
    return ds


def start(exp: Path, store: Path, flags: tuple[str, ...]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "palmc", "simulate", str(exp), "-o", str(store), "--workers", "1",
                             "--engine", "numpy", "--no-progress", *flags], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--races", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        exp = write_experiment(folder, name="race", layers=(3, 5, 4, 2), epochs=4, dataset_size=4, Tpres=1.0,
                               settling=1.0, every=10, chunk_records=5, models="  - {kind: FA}\n  - {kind: PAL}")
        lone = data(palmc.simulate(exp, folder / "lone.zarr", workers=1, engine="numpy", progress=False))
        both_ok = identical = 0
        for race in range(args.races):
            flags, delay = FLAGS[race % len(FLAGS)], DELAYS[race % len(DELAYS)]
            store = folder / f"race{race}.zarr"
            if flags[0]:
                palmc.simulate(exp, store, workers=1, engine="numpy", progress=False)
            first = start(exp, store, flags[0])
            time.sleep(delay)
            second = start(exp, store, flags[1])
            codes = [p.wait() for p in (first, second)]
            same = codes.count(0) == 1 and data(store).identical(lone)
            both_ok += codes == [0, 0]
            identical += same
            print(f"race {race}: flags {flags}, delay {delay:.1f} s: exit {codes}, survivor identical: {same}")
        print(f"{args.races} races: both exited 0 in {both_ok}; survivor identical to a lone run in {identical}")


if __name__ == "__main__":
    main()
