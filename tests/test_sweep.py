"""Parameter sweeps: the schema's `sweep` section, the `variant` dim of the store and its agreement with
separate runs of each variant."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import palmc
from palmc.cli import app
from palmc.plan import make_plan
from palmc.runner import run_batch
from palmc.schema import ExperimentError, convert_legacy, load_experiment, validate_experiment
from palmc.schema.sweep import apply_values
from tests.experiments import write_experiment

runner = CliRunner()
LEGACY_DIR = Path(__file__).resolve().parent / "data" / "legacy"
EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"

# The NumPy engine keeps these small runs free of compilation; both engines share the store code under test.
# two time courses (Tpres and recording interval zipped) crossed with prospectivity
SWEEP = """sweep:
  zip: {dynamics.Tpres: [0.1, 0.2], recording.every: [2, 3], noise.tauxi: [0.1, 1]}
  grid: {dynamics.taur: [1, 0]}
"""


def _swept(tmp_path: Path, sweep: str = SWEEP, **kwargs) -> Path:
    path = write_experiment(tmp_path, "sw", models="  - {kind: PAL}\n  - {kind: FA}", seeds=(11, 12, 13), **kwargs)
    path.write_text(path.read_text() + sweep)
    return path


def test_variants_are_the_zip_axis_times_the_grid(tmp_path: Path) -> None:
    experiment = load_experiment(_swept(tmp_path))
    values = [v for v, _ in experiment.variants()]
    assert [(v["dynamics.Tpres"], v["dynamics.taur"]) for v in values] == [(0.1, 1.0), (0.1, 0.0), (0.2, 1.0), (0.2, 0.0)]
    assert all(isinstance(v["noise.tauxi"], float) for v in values)  # the schema's types, not YAML's
    variant = experiment.variants()[3][1]
    assert variant.sweep is None and variant.dynamics.Tpres == 0.2 and variant.recording.every == 3
    assert variant.noise.tauxi == 1.0 and variant.dynamics.taur == 0.0
    # the YAML round trip keeps the sweep
    assert validate_experiment(experiment.to_dict()) == experiment


@pytest.mark.parametrize("sweep, expected", [
    ("sweep: {zip: {dynamics.Tpres: [0.1, 0.2, 0.3], noise.tauxi: [0.1, 1]}}", "expected lists of one length"),
    ("sweep: {grid: {dynamics.dt: [0.01, 0.02]}}", "sweep.grid.dynamics.dt: cannot be swept: all variants share one time step"),
    ("sweep: {grid: {network.layers: [[3, 4, 2]]}}", "expected a field of one of the sections"),
    ("sweep: {grid: {noise.tau: [1.0]}}", "noise has no field 'tau'; its fields: dtxi, mode, scale, tauxi, type"),
    ("sweep: {grid: {noise: [1.0]}}", "is a section"),
    ("sweep: {grid: {}}", "expected at least one field"),
    ("sweep: {grid: {dynamics.Tpres: [0.1, 0.005]}}", "in variant Tpres=0.005: dynamics.Tpres: expected a whole multiple of dt"),
    ("sweep: {grid: {plasticity.eta_bw: [[1.0, 2.0]]}}", "sweep.grid.plasticity.eta_bw: in variant"),
    ("sweep: {grid: {dynamics.taur: []}}", "sweep.grid.dynamics.taur"),
    ("sweep: {mesh: {dynamics.taur: [1]}}", "sweep.mesh"),
])
def test_bad_sweeps_name_the_file_line_and_field(tmp_path: Path, sweep: str, expected: str) -> None:
    path = _swept(tmp_path, sweep + "\n")
    with pytest.raises(ExperimentError) as error:
        load_experiment(path)
    assert expected in str(error.value)
    assert f"{path}:" in str(error.value)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and expected in result.output


def test_sweep_store_equals_separate_runs_of_each_variant(tmp_path: Path) -> None:
    path = _swept(tmp_path)
    store = palmc.simulate(path, tmp_path / "sweep.zarr", workers=1, progress=False, engine="numpy")
    ds = palmc.open(store)
    assert ds["WPP"].dims == ("time", "layer", "neuron", "pre", "seed", "model", "variant")
    assert ds["run_status"].dims == ("seed", "model", "variant") and (ds.palmc.run_status().values == "complete").all()
    assert list(ds["Tpres"].values) == [0.1, 0.1, 0.2, 0.2] and list(ds["taur"].values) == [1.0, 0.0, 1.0, 0.0]
    assert ds["variant_label"].values[3] == "Tpres=0.2, every=3, tauxi=1.0, taur=0.0"
    assert ds["epoch"].dims == ("time", "variant")  # the variants' epochs differ (Tpres differs)
    experiment = load_experiment(path)
    for index, (values, variant) in enumerate(experiment.variants()):
        single = palmc.open(palmc.simulate(variant, tmp_path / f"v{index}.zarr", workers=1, progress=False, engine="numpy"))
        assert "variant" not in single.dims
        mine = ds.isel(variant=index).sel(time=single["time"])
        for name in ("WPP", "BPP", "uP", "vapi"):
            np.testing.assert_array_equal(mine[name].values, single[name].values)
        np.testing.assert_array_equal(mine["epoch"].values, single["epoch"].values)
        # records the variant does not make are NaN, and its last record is where the store says
        others = ~np.isin(ds["time"].values, single["time"].values)
        assert np.isnan(ds["uP"].isel(variant=index).values[others]).all()
        assert ds["time"].values[int(ds["last_record"].values[index])] == single["time"].values[-1]
    result = runner.invoke(app, ["info", str(store)])
    assert result.exit_code == 0 and "variants     Tpres=0.1, every=2, tauxi=0.1, taur=1.0;" in result.output


def test_sweep_results_do_not_depend_on_batching_or_resume(tmp_path: Path) -> None:
    path = _swept(tmp_path)
    whole = palmc.open(palmc.simulate(path, tmp_path / "whole.zarr", workers=1, progress=False, engine="numpy", seeds_per_batch=3))
    # an interrupted store: only the first batches ran, the rest resume from nothing, in batches of one seed
    experiment = load_experiment(path)
    plan = make_plan(experiment, seeds_per_batch=1, workers=1, engine="numpy")
    from palmc.store.writer import prepare_store

    prepare_store(plan, tmp_path / "parts.zarr", overwrite=False, resume=False)
    for batch in plan.batches[:3]:
        run_batch(tmp_path / "parts.zarr", plan, batch)
    parts = palmc.open(palmc.simulate(path, tmp_path / "parts.zarr", resume=True, workers=1, progress=False, engine="numpy"))
    assert parts.attrs["seeds_per_batch"] == 1
    for name in ("WPP", "BPP", "uP", "vapi"):
        xr.testing.assert_identical(whole[name], parts[name])


def test_a_model_override_wins_over_the_sweep(tmp_path: Path) -> None:
    models = "  - {kind: PAL}\n  - {kind: FA, name: FA0, overrides: {plasticity: {eta_bw: [0.0]}}}"
    path = write_experiment(tmp_path, "ov", models=models, layers=(3, 4, 2))
    path.write_text(path.read_text() + "sweep: {grid: {plasticity.eta_bw: [[1.0], [2.0]]}}\n")
    plan = make_plan(load_experiment(path))
    assert [v.model_params["PAL"].eta_bw for v in plan.variants] == [(1.0,), (2.0,)]
    assert [v.model_params["FA0"].eta_bw for v in plan.variants] == [(0.0,), (0.0,)]
    # list values become JSON text coordinates
    ds = palmc.open(palmc.simulate(path, tmp_path / "ov.zarr", workers=1, progress=False, engine="numpy"))
    assert list(ds["eta_bw"].values) == ["[1.0]", "[2.0]"]


def test_fig6_variants_are_the_reference_files(tmp_path: Path) -> None:
    """experiments/fig6.yaml's six variants have exactly the parameters of the reference's six Fig6 files."""
    experiment = load_experiment(EXPERIMENTS / "fig6.yaml")
    plan = make_plan(experiment)
    assert len(plan.variants) == 6
    for variant in plan.variants:
        tauxi_steps = round(variant.values["noise.tauxi"] / variant.model_params["PAL"].dt)
        kind = "prosp_u" if variant.values["dynamics.taur"] == 1.0 else "u"
        reference, _ = convert_legacy(LEGACY_DIR / f"Fig6_tauxi{tauxi_steps}_rescale_lr_{kind}.json", "bw_only")
        assert variant.model_params["PAL"] == reference.model_params("PAL")
        assert variant.protocol == reference.protocol()
        assert list(experiment.seeds) == list(reference.seeds)


def test_apply_values_does_not_touch_the_original() -> None:
    settings = {"noise": {"tauxi": 0.1}, "sweep": {"grid": {}}}
    out = apply_values(settings, {"noise.tauxi": 1.0})
    assert out == {"noise": {"tauxi": 1.0}} and settings["noise"]["tauxi"] == 0.1


def test_sweep_on_a_local_cluster_equals_one_process(tmp_path: Path) -> None:
    path = _swept(tmp_path)
    one = palmc.open(palmc.simulate(path, tmp_path / "one.zarr", workers=1, progress=False, engine="numpy"))
    two = palmc.open(palmc.simulate(path, tmp_path / "two.zarr", workers=2, progress=False, engine="numpy",
                                    seeds_per_batch=2))
    assert two.attrs["seeds_per_batch"] == 2
    for name in ("WPP", "BPP", "uP", "vapi", "run_status"):
        xr.testing.assert_identical(one[name], two[name])
