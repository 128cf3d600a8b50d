"""Every reference params file converts and its experiment starts (shortened to a few presentations)."""

from __future__ import annotations

from pathlib import Path

import pytest

import palmc
from palmc.schema import convert_legacy, validate_experiment

LEGACY = sorted((Path(__file__).parent / "data" / "legacy").glob("*.json"))


@pytest.mark.parametrize("params", LEGACY, ids=[p.stem for p in LEGACY])
def test_converted_reference_experiment_runs(params: Path, tmp_path: Path) -> None:
    task = "fw_bw" if "Fig4ab" in params.name or params.stem == "template" else "bw_only"
    experiment, _notes = convert_legacy(params, task)
    short = experiment.to_dict()
    dt = short["dynamics"]["dt"]
    short["dynamics"]["Tpres"] = 10 * dt
    short["dynamics"]["settling_time"] = 10 * dt
    short["input"].update(dataset_size=2, epochs=1)
    short["seeds"] = short["seeds"][:2]
    short["recording"]["every"] = 5
    store = palmc.simulate(validate_experiment(short), tmp_path / "s.zarr", workers=1, progress=False)
    ds = palmc.open(store)
    assert ds.attrs["status"] == "complete" and (ds.palmc.run_status().values == "complete").all()
