"""Every experiment shipped in experiments/ validates, and a shortened copy of it runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import palmc
from palmc.schema import load_experiment, validate_experiment

EXPERIMENTS = sorted((Path(__file__).parent.parent / "experiments").glob("*.yaml"))


@pytest.mark.parametrize("path", EXPERIMENTS, ids=[p.stem for p in EXPERIMENTS])
def test_shipped_experiment_runs_shortened(path: Path, tmp_path: Path) -> None:
    short = load_experiment(path).to_dict()
    dt = short["dynamics"]["dt"]
    short["dynamics"].update(Tpres=10 * dt, settling_time=10 * dt)
    short["input"].update(dataset_size=2, epochs=2)
    if short["input"].get("dataset", {}).get("source") == "yinyang":  # task supervised: a few generated samples
        short["input"]["dataset"].update(train_size=20, test_size=10)
    short["seeds"] = short["seeds"][:2]
    short["recording"]["every"] = 5
    for axis in (short.get("sweep") or {}).values():  # swept time courses: short ones, still different
        for field, short_values in (("dynamics.Tpres", lambda i: 10 * (i + 1) * dt), ("recording.every", lambda i: 5 * (i + 1))):
            if field in axis:
                axis[field] = [short_values(i) for i in range(len(axis[field]))]
    store = palmc.simulate(validate_experiment(short, source=str(path)), tmp_path / "s.zarr", workers=1, progress=False)
    ds = palmc.open(store)
    assert (ds.palmc.run_status().values == "complete").all()
    assert list(ds["model"].values) == [m["name"] for m in short["models"]]
    if "sweep" in short:
        assert ds.sizes["variant"] == len(load_experiment(path).variants())
