"""Derive the small published-data files that `palmc reproduce fig3abc|fig3def` compares against.

Input: the angle arrays recorded by the reference code for Fig. 3 (shape (seed, record, hidden layer), one record
every 1000 integration steps, the first 10 records being the 10^4 settling steps; `lin` = Fig. 3a-c,
`nonlin` = Fig. 3d-f) and the matching reference parameter files (for the seed order).

Output, per figure, in this directory (CSV, angles in degrees, `layer` = palmc's hidden layer index 1..3):

* `<figure>_angles_per_seed.csv`: metric, epoch, step, seed, layer, angle_deg -- every seed's value at the end of
  a few epochs (1, 2, 5, 10, ... and the last one): the last epoch is the published final value, the early ones let
  a shortened run (`palmc reproduce --short`) be compared seed by seed;
* `<figure>_angle_curves.csv`: metric, step, layer, mean_deg, std_deg -- mean and std (ddof=0) over seeds of
  about 200 records (every k-th record, ending on the last), for overlaying on the plots.

Usage: python experiments/published/extract_fig3.py [REFERENCE_DIR]   (default: ../shared/reference)
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
EVERY = 1000  # integration steps between records in the reference files
SETTLING_STEPS = 10_000
STEPS_PER_EPOCH = 100 * 100  # dataset_size x Tpres/dt
CURVE_POINTS = 200
# reference file stem -> palmc metric name
METRICS = {"WPPT_BPP": "angle_BPP_WPPT", "BPP_RHS": "angle_BPP_RHS"}
FIGURES = {"fig3abc": ("lin", "Fig3abc.json"), "fig3def": ("nonlin", "Fig3def.json")}


def epochs_to_keep(n_epochs: int) -> list[int]:
    marks = [e for e in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if e < n_epochs]
    return [*marks, n_epochs]


def extract(reference: Path, figure: str) -> None:
    suffix, params_file = FIGURES[figure]
    seeds = json.loads((reference / "params" / params_file).read_text())["random_seed"]
    per_seed_rows: list[list[object]] = []
    curve_rows: list[list[object]] = []
    for stem, metric in METRICS.items():
        data = np.load(reference / "fig3" / f"data_angle_{stem}_{suffix}.npy")  # (seed, record, layer)
        n_seeds, n_records, n_layers = data.shape
        assert n_seeds == len(seeds), (figure, data.shape, seeds)
        steps = (np.arange(n_records) + 1) * EVERY
        n_epochs = (n_records * EVERY - SETTLING_STEPS) // STEPS_PER_EPOCH
        for epoch in epochs_to_keep(n_epochs):
            step = SETTLING_STEPS + epoch * STEPS_PER_EPOCH
            record = int(np.flatnonzero(steps == step)[0])
            for s, seed in enumerate(seeds):
                for layer in range(n_layers):
                    per_seed_rows.append([metric, epoch, step, seed, layer + 1, f"{data[s, record, layer]:.12g}"])
        k = max(1, int(np.ceil(n_records / CURVE_POINTS)))
        for record in range((n_records - 1) % k, n_records, k):  # every k-th record, ending on the last
            for layer in range(n_layers):
                values = data[:, record, layer]
                curve_rows.append([metric, int(steps[record]), layer + 1,
                                   f"{values.mean():.8g}", f"{values.std():.8g}"])
    write(HERE / f"{figure}_angles_per_seed.csv", ["metric", "epoch", "step", "seed", "layer", "angle_deg"], per_seed_rows)
    write(HERE / f"{figure}_angle_curves.csv", ["metric", "step", "layer", "mean_deg", "std_deg"], curve_rows)


def write(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    print(f"wrote {path} ({len(rows)} rows)")


if __name__ == "__main__":
    ref = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE.parents[2] / "shared" / "reference"
    for name in FIGURES:
        extract(ref, name)
