"""Compare a palmc store (or a live simulation) with a golden trajectory recorded from the reference code.

The golden files index populations like the reference's lists; the contract uses network layers. Mapping:
pyramidal list i -> layer i+1, interneuron list i -> layer i+2, W^PP i -> layer i+1, W^IP i -> layer i+2,
B^PP/B^PI i -> layer i+1. See tests/golden/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))
RTOL, ATOL = 1e-9, 1e-12

FIRST_LAYER = {"uP": 1, "uP_breve": 1, "rP_breve": 1, "rP_breve_HI": 1, "vbas": 1, "noise": 1, "vapi": 1,
               "vapi_noise": 1, "uI": 2, "uI_breve": 2, "rI_breve": 2, "WPP": 1, "dWPP": 1, "BPP": 1, "dBPP": 1,
               "BPI": 1, "dBPI": 1, "WIP": 2, "dWIP": 2}


def load_case(name: str) -> tuple[dict, dict[str, np.ndarray]]:
    params = json.loads((GOLDEN / f"{name}.json").read_text())
    with np.load(GOLDEN / f"{name}.npz") as data:
        arrays = {k: data[k] for k in data.files}
    return params, arrays


def task_of(arrays: dict[str, np.ndarray]) -> str:
    return "fw_bw" if "teacher__seed" in arrays else "bw_only"


def compare_store(ds: xr.Dataset, arrays: dict[str, np.ndarray], model: str) -> int:
    """Assert every recorded golden series equals the store's; returns the number of values compared.

    The store must record every step (record index = step - 1).
    """
    steps = arrays["steps"]
    S = int(arrays["n_settling_steps"])
    compared = 0
    for seed in arrays["seeds"].tolist():
        run = ds.sel(seed=seed, model=model)
        prefix = f"s{seed}__"
        for key, ref in arrays.items():
            if not key.startswith(prefix) or "__init__" in key or "final_rng" in key:
                continue
            name = key[len(prefix):]
            if "__layer" in name:
                var, index = name.split("__layer")
                if var not in FIRST_LAYER:
                    continue  # series the contract does not record (lat_mismatch, epsilon)
                layer = FIRST_LAYER[var] + int(index)
                values = run[var].sel(layer=layer).isel(time=steps - 1).values
                n = ref.shape[1]
                mine = values[:, :n, : ref.shape[2]] if ref.ndim == 3 else values[:, :n]
                rows = ref
            elif name == "r0":
                mine, rows = run["input"].isel(time=steps - 1).values[:, : ref.shape[1]], ref
            elif name in ("MSE", "error", "target"):
                # recorded in training calls only: row j belongs to call S + 1 + j
                values = run[name].isel(time=slice(S, S + len(ref))).values
                rows = ref if name == "MSE" else ref.reshape(len(ref), -1)
                mine = values if name == "MSE" else values[:, : rows.shape[1]]
            else:
                continue  # angles are checked by the query layer's tests
            np.testing.assert_allclose(mine, rows, rtol=RTOL, atol=ATOL, err_msg=f"{key} (seed {seed})")
            compared += rows.size
    return compared


def compare_final_rng(rng_key: np.ndarray, meta: np.ndarray, arrays: dict[str, np.ndarray], seed: int) -> None:
    """The run's generator after the run equals the reference's: same total consumption of random numbers."""
    prefix = f"s{seed}__final_rng_"
    np.testing.assert_array_equal(rng_key, arrays[prefix + "key"])
    assert int(meta[0]) == int(arrays[prefix + "pos"])
    assert int(meta[1]) == int(arrays[prefix + "has_gauss"])
    assert float(meta[2]) == float(arrays[prefix + "cached_gaussian"])
