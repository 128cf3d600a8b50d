"""Re-create this folder from the full golden set (../shared/golden), keeping fewer rows of long series.

Usage: python tests/golden/vendor.py /path/to/shared/golden

Per-step series are indexed by the `steps` key (1-based call numbers), so dropping rows keeps every remaining
row meaningful; series over all calls (angles, MSE, teacher data, final RNG state) are kept whole.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def keep_rows(steps: np.ndarray, total: int) -> np.ndarray:
    """Rows to keep: the first and last steps, a window around every epoch boundary, and a regular grid."""
    stride = 5 if total <= 100 else 50
    wanted = (steps <= 12) | (steps > total - 6) | (steps % stride == 0)
    return np.flatnonzero(wanted)


def vendor(source: Path) -> None:
    for json_file in sorted(source.glob("*.json")):
        name = json_file.stem
        shutil.copy(json_file, HERE / json_file.name)
        with np.load(source / f"{name}.npz") as data:
            arrays = {k: data[k] for k in data.files}
        steps = arrays["steps"]
        total = int(arrays["n_settling_steps"] + arrays["epochs"] * arrays["n_steps_per_epoch"])
        rows = keep_rows(steps, total)
        out = {}
        for key, value in arrays.items():
            per_step = (key.startswith("s") and "__" in key and "__init__" not in key
                        and not key.split("__", 1)[1].startswith(("angle_", "MSE", "error", "target", "final_rng",
                                                                    "lat_mismatch", "epsilon")))
            out[key] = value[rows] if per_step and value.ndim >= 1 and len(value) == len(steps) else value
        out["steps"] = steps[rows]
        np.savez_compressed(HERE / f"{name}.npz", **out)


if __name__ == "__main__":
    vendor(Path(sys.argv[1]))
