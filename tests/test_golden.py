"""Every golden case of the reference, run as a user would (convert + simulate), agrees to rtol 1e-9."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import palmc
from palmc.cli import app
from palmc.engine.compiled import lanes
from palmc.schema import convert_legacy
from palmc.store.writer import CHECKPOINT_DIR
from tests.golden_reference import CASES, GOLDEN, compare_final_rng, compare_store, load_case, task_of

ENGINES = ["compiled"]  # the CLI test above runs every case on the NumPy engine


def _final_checkpoint(store: Path) -> dict[str, np.ndarray]:
    files = sorted((store / CHECKPOINT_DIR).glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0]) as f:
        return {k: f[k] for k in f.files}


def test_golden_set_is_complete() -> None:
    assert len(CASES) == 36


@pytest.mark.parametrize("case", CASES)
def test_cli_convert_and_simulate(case: str, tmp_path: Path) -> None:
    params, arrays = load_case(case)
    runner = CliRunner()
    experiment = tmp_path / "experiment.yaml"
    store = tmp_path / "store.zarr"
    result = runner.invoke(app, ["convert", str(GOLDEN / f"{case}.json"), "--task", task_of(arrays), "-o", str(experiment)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["simulate", str(experiment), "-o", str(store), "--engine", "numpy", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    ds = palmc.open(store)
    assert ds.attrs["status"] == "complete"
    assert compare_store(ds, arrays, params["model_type"]) > 0
    checkpoint = _final_checkpoint(store)
    for r, seed in enumerate(arrays["seeds"].tolist()):
        compare_final_rng(checkpoint["rng/keys"][r], checkpoint["rng/meta"][r], arrays, seed)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", CASES)
def test_python_api(case: str, engine: str, tmp_path: Path) -> None:
    params, arrays = load_case(case)
    experiment, _notes = convert_legacy(GOLDEN / f"{case}.json", task_of(arrays))
    store = palmc.simulate(experiment, tmp_path / "store.zarr", engine=engine, workers=1, progress=False)
    assert compare_store(palmc.open(store), arrays, params["model_type"]) > 0


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("fw_bw_")])
def test_specialised_kernel_on_the_one_hidden_layer_cases(case: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The 1-1-1 cases through the lanes kernel compiled for their network, as Fig. 4's long runs use it."""
    monkeypatch.setattr(lanes, "SPECIALISE_MIN_RUN_STEPS", 0)
    monkeypatch.setattr(lanes, "specialised", {})
    params, arrays = load_case(case)
    experiment, _notes = convert_legacy(GOLDEN / f"{case}.json", task_of(arrays))
    store = palmc.simulate(experiment, tmp_path / "store.zarr", engine="compiled", workers=1, progress=False)
    assert compare_store(palmc.open(store), arrays, params["model_type"]) > 0
    (segment,) = lanes.specialised.values()
    assert segment.py_func.__name__ == "advance_segment_1x1x1_act0_0" and segment.signatures
