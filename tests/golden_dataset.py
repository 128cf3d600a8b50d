"""Test helper: build a contract Dataset (docs/dataset-contract.md) from a golden reference case (.npz + .json).

Mapping of the reference's 0-based list indices to contract layers:

* pyramidal vectors (``uP``, ``uP_breve``, ``rP_breve``, ``vbas``, ``rP_breve_HI``, ``noise``, ``vapi``,
  ``vapi_noise``): list index i -> layer i+1;
* interneuron vectors (``uI``, ``uI_breve``, ``rI_breve``): i -> layer i+2;
* ``WPP``/``dWPP`` l -> layer l+1; ``WIP``/``dWIP`` l -> layer l+2; ``BPP``/``BPI``/``dBPP``/``dBPI`` l -> layer l+1;
  weights keep the reference's [post, pre] layout as [neuron, pre];
* ``r0`` -> ``input``; ``MSE``/``error``/``target`` (training calls only, row j = call S+1+j) are NaN in settling.

Everything is padded with NaN to the widest layer. ``time = steps * dt``; ``model`` is the json's ``model_type``
(or ``model_name``); conductances and ``activation`` (a string or one entry per pyramidal layer) come from the json.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr

GOLDEN_DIR = Path(__file__).parent / "golden"

PYRAMIDAL = ("uP", "uP_breve", "rP_breve", "vbas", "rP_breve_HI", "noise", "vapi", "vapi_noise")
INTERNEURON = ("uI", "uI_breve", "rI_breve")
WEIGHT_OFFSET = {"WPP": 1, "dWPP": 1, "WIP": 2, "dWIP": 2, "BPP": 1, "BPI": 1, "dBPP": 1, "dBPI": 1}
CONDUCTANCES = ("gl", "gbas", "gapi", "gden", "gnI", "gntgt")
ANGLE_KEYS = ("angle_WPPT_BPP", "angle_jacobians_BP", "angle_BPP_RHS")


def load_case(case: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of ``<case>.npz`` and the parameters of ``<case>.json`` (``case``: a name or a path)."""
    path = Path(case)
    if path.suffix not in (".npz", ".json"):
        path = GOLDEN_DIR / f"{case}.npz"
    with np.load(path.with_suffix(".npz")) as z:
        arrays = {k: z[k] for k in z.files}
    params = json.loads(path.with_suffix(".json").read_text())
    return arrays, params


def _layer_series(arrays: dict[str, np.ndarray], seed: int, var: str) -> dict[int, np.ndarray]:
    """{reference list index: array} for the per-layer series ``s<seed>__<var>__layer<i>``."""
    prefix = f"s{seed}__{var}__layer"
    return {int(k[len(prefix):]): v for k, v in arrays.items() if k.startswith(prefix)}


def golden_dataset(case: str | Path, model_name: str | None = None) -> xr.Dataset:
    """The golden case as a contract Dataset with dims (time, layer, neuron, pre, seed, model)."""
    arrays, params = load_case(case)
    layers = [int(n) for n in arrays["layers"]]
    n_layers = len(layers)  # L + 1
    width = max(layers)
    seeds = [int(s) for s in arrays["seeds"]]
    steps = np.asarray(arrays["steps"], dtype=np.int64)
    n_rows = steps.size
    settling = int(arrays["n_settling_steps"])
    per_epoch = int(arrays["n_steps_per_epoch"])
    dt = float(params["dt"])
    model = model_name or str(params["model_type"])

    def empty(*shape: int) -> np.ndarray:
        return np.full(shape, np.nan)

    data: dict[str, np.ndarray] = {}
    probe = seeds[0]
    vector_vars = [v for v in PYRAMIDAL + INTERNEURON if _layer_series(arrays, probe, v)]
    weight_vars = [v for v in WEIGHT_OFFSET if _layer_series(arrays, probe, v)]
    for var in vector_vars:
        offset = 1 if var in PYRAMIDAL else 2
        out = empty(n_rows, n_layers, width, len(seeds))
        for s_i, seed in enumerate(seeds):
            for i, series in _layer_series(arrays, seed, var).items():
                out[:, i + offset, : series.shape[1], s_i] = series
        data[var] = out
    for var in weight_vars:
        offset = WEIGHT_OFFSET[var]
        out = empty(n_rows, n_layers, width, width, len(seeds))
        for s_i, seed in enumerate(seeds):
            for i, series in _layer_series(arrays, seed, var).items():
                out[:, i + offset, : series.shape[1], : series.shape[2], s_i] = series
        data[var] = out

    inp = empty(n_rows, width, len(seeds))
    for s_i, seed in enumerate(seeds):
        inp[:, : layers[0], s_i] = arrays[f"s{seed}__r0"]
    data["input"] = inp

    training_rows = steps > settling
    if f"s{probe}__MSE" in arrays:
        data["target"] = empty(n_rows, width, len(seeds))
        data["error"] = empty(n_rows, width, len(seeds))
        data["MSE"] = empty(n_rows, len(seeds))
        j = steps[training_rows] - settling - 1
        for s_i, seed in enumerate(seeds):
            for var in ("target", "error"):
                data[var][training_rows, : layers[-1], s_i] = arrays[f"s{seed}__{var}"][j]
            data["MSE"][training_rows, s_i] = arrays[f"s{seed}__MSE"][j]

    dims_vec = ("time", "layer", "neuron", "seed", "model")
    dims_w = ("time", "layer", "neuron", "pre", "seed", "model")
    variables = {}
    for var, arr in data.items():
        arr = arr[..., np.newaxis]
        if var in weight_vars:
            dims = dims_w
        elif var in vector_vars:
            dims = dims_vec
        elif var == "MSE":
            dims = ("time", "seed", "model")
        else:
            dims = ("time", "neuron", "seed", "model")
        variables[var] = xr.Variable(dims, arr, attrs={"long_name": var, "units": "", "symbol": var})

    activation = params["activation"]
    acts = [activation] * (n_layers - 1) if isinstance(activation, str) else list(activation)
    assert len(acts) == n_layers - 1
    epoch = np.where(steps <= settling, 0, (steps - settling - 1) // per_epoch + 1).astype(np.int64)
    coords = {
        "time": ("time", steps * dt),
        "step": ("time", steps),
        "epoch": ("time", epoch),
        "phase": ("time", np.where(epoch == 0, "settling", "training").astype(object)),
        "layer": ("layer", np.arange(n_layers, dtype=np.int64)),
        "layer_size": ("layer", np.asarray(layers, dtype=np.int64)),
        "neuron": ("neuron", np.arange(width, dtype=np.int64)),
        "pre": ("pre", np.arange(width, dtype=np.int64)),
        "seed": ("seed", np.asarray(seeds, dtype=np.int64)),
        "model": ("model", np.array([model], dtype=object)),
        "model_kind": ("model", np.array([str(params["model_type"])], dtype=object)),
        "activation": (("layer", "model"), np.array([[""]] + [[a] for a in acts], dtype=object)),
    }
    for g in CONDUCTANCES:
        coords[g] = ("model", [float(params[g])])
    attrs = {
        "dt": dt,
        "Tpres": float(params["Tpres"]),
        "task": "fw_bw" if "MSE" in data else "bw_only",
        "golden_case": Path(case).stem,
    }
    return xr.Dataset(variables, coords=coords, attrs=attrs)


def golden_angles(case: str | Path) -> dict[str, np.ndarray]:
    """The reference's comparison angles at the stored rows (``steps``), as arrays [time, hidden layer, seed].

    The angle series cover every call (row i = call i+1); they are picked at the calls whose states are stored, so
    they line up with the ``time`` dim of :func:`golden_dataset`.
    """
    arrays, _ = load_case(case)
    seeds = [int(s) for s in arrays["seeds"]]
    rows = np.asarray(arrays["steps"], dtype=np.int64) - 1
    return {key: np.stack([arrays[f"s{s}__{key}"][rows] for s in seeds], axis=-1) for key in ANGLE_KEYS}
