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


def test_a_swept_field_named_like_a_store_coordinate_keeps_its_whole_path(tmp_path: Path) -> None:
    """The plan names swept fields as their labels do (``gl``); the store, which has a conductance coordinate of
    that name, names that field's coordinate by its whole path, and the other one by its short name."""
    from palmc.store.writer import template

    path = _swept(tmp_path, "sweep: {grid: {dynamics.gl: [0.03, 0.05], noise.tauxi: [0.1, 1.0]}}\n")
    plan = make_plan(load_experiment(path), workers=1, engine="numpy")
    assert plan.swept_names == {"dynamics.gl": "gl", "noise.tauxi": "tauxi"}
    assert plan.variants[0].label.startswith("gl=0.03, tauxi=0.1")
    coords = template(plan).coords
    assert list(coords["dynamics_gl"].values) == [0.03, 0.03, 0.05, 0.05]
    assert list(coords["tauxi"].values) == [0.1, 1.0, 0.1, 1.0]
    assert coords["gl"].dims == ("model", "variant")  # the conductance, per model and variant


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


# -- sweeps at scale (issue #20) ---------------------------------------------------------------------------------
FW_BW_SWEEP = """sweep:
  grid: {plasticity.eta_fw: [[1.0, 1.0], [0.5, 0.5], [2.0, 0.1]], dynamics.gl: [0.03, 0.05], noise.tauxi: [0.1, 0.3]}
"""


def _fw_bw_swept(tmp_path: Path, sweep: str = FW_BW_SWEEP, **kwargs) -> Path:
    models = "  - {kind: BP}\n  - {kind: FA}\n  - {kind: PAL}"
    path = write_experiment(tmp_path, "fb", task="fw_bw", layers=(2, 3, 2), models=models, seeds=(11, 12),
                            **kwargs)
    path.write_text(path.read_text() + sweep)
    return path


def test_teachers_are_computed_once_per_distinct_teacher(tmp_path: Path) -> None:
    """Every batch of a sweep shares its process's teachers: one per model type and teacher-shaping value (gl
    here), not one per batch (the learning rates and the noise time scale do not reach a teacher)."""
    from palmc.engine.tasks import Simulation, Teachers

    plan = make_plan(load_experiment(_fw_bw_swept(tmp_path)), variants_per_batch=1, engine="numpy")
    assert len(plan.batches) == 12
    teachers = Teachers()
    sims = [Simulation(plan.runs(b), plan.batch_variant(b).protocol, teachers) for b in plan.batches]
    assert teachers.computed == 3 * 2
    # and each run's targets are those its own single-variant run computes
    for batch, sim in zip(plan.batches, sims):
        alone = Simulation(plan.runs(batch), plan.batch_variant(batch).protocol)
        np.testing.assert_array_equal(sim.targets, alone.targets)


def _changed(value: object) -> object:
    """Another valid value of a ModelParams field."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, float):
        return value * 1.5 + 0.01
    if isinstance(value, tuple) and value and isinstance(value[0], float):
        return tuple(x * 1.5 + 0.01 for x in value)
    return None


def test_the_keys_of_shared_teachers_and_initial_networks_cover_what_shapes_them() -> None:
    """Changing any parameter that leaves ``teacher_key`` (``init_key``) alone leaves the teacher's targets (the
    initial network) bit for bit alone: sharing them between runs of different variants is exact."""
    from dataclasses import fields, replace

    from palmc.engine.init import init_key, init_network
    from palmc.engine.params import ModelParams, Protocol, RunSpec
    from palmc.engine.tasks import Teachers, teacher_key

    protocol = Protocol("fw_bw", dataset_size=3, epochs=1, steps_per_presentation=4, settling_steps=7)
    for kind in ("BP", "FA", "PAL"):
        base = ModelParams(model=kind, layers=(2, 3, 2), activations=("logistic", "tanh"), eta_fw=(0.3, 0.2),
                           eta_bw=(0.1,), eta_IP=(0.2,), eta_PI=(0.1,), alpha=(1e-3,), noise_scale=(0.1,))
        reference = Teachers().for_runs([RunSpec(1, kind, base, 5, 5)], protocol)[0]
        init = init_network(base, 1)
        checked = 0
        for field in fields(ModelParams):
            new = _changed(getattr(base, field.name))
            if new is None:
                continue
            other = replace(base, **{field.name: new})
            if teacher_key(other, 5, protocol) == teacher_key(base, 5, protocol):
                teacher = Teachers().for_runs([RunSpec(1, kind, other, 5, 5)], protocol)[0]
                np.testing.assert_array_equal(teacher.targets, reference.targets, err_msg=field.name)
                checked += 1
            if init_key(other, 1) == init_key(base, 1):
                for name in ("uP", "uI", "WPP", "WIP", "BPP", "BPI"):
                    for mine, theirs in zip(getattr(init_network(other, 1), name), getattr(init, name)):
                        np.testing.assert_array_equal(mine, theirs, err_msg=f"{field.name}: {name}")
        assert checked >= 20  # the learning rates, noise and plasticity filters at least


def test_compiled_teachers_equal_numpy_teachers() -> None:
    from palmc.engine.params import ModelParams, Protocol, RunSpec
    from palmc.engine.tasks import Teachers
    from palmc.runner import advance

    protocol = Protocol("fw_bw", dataset_size=4, epochs=1, steps_per_presentation=3, settling_steps=11)
    runs = [RunSpec(1, kind, ModelParams(model=kind, layers=layers, activations=("logistic", "tanh"),
                                         eta_fw=(0.3, 0.2), eta_bw=(0.1,), eta_IP=(0.2,), eta_PI=(0.1,),
                                         alpha=(1e-3,), noise_scale=(0.1,), inter_low_pass=True), 5, 5)
            for kind in ("BP", "FA", "PAL") for layers in ((2, 3, 2), (1, 1, 1))]
    compiled = Teachers(lambda sim, n_steps: advance(sim, n_steps, None, "compiled")).for_runs(runs, protocol)
    for teacher, alone in zip(compiled, Teachers().for_runs(runs, protocol)):
        np.testing.assert_array_equal(teacher.targets, alone.targets)


def test_batches_span_variants_and_each_variant_equals_its_own_run(tmp_path: Path) -> None:
    path = _fw_bw_swept(tmp_path, variables="WPP, BPP, uP, MSE, target")
    experiment = load_experiment(path)
    plan = make_plan(experiment, engine="compiled", workers=1)
    assert len(plan.variants) == 12 and len(plan.batches) == 1  # tiny runs: one batch carries them all
    store = palmc.simulate(path, tmp_path / "sweep.zarr", workers=1, progress=False, engine="compiled")
    ds = palmc.open(store)
    assert ds.attrs["variants_per_batch"] == 12 and (ds.palmc.run_status().values == "complete").all()
    for index, (_, variant) in enumerate(experiment.variants()):
        single = palmc.open(palmc.simulate(variant, tmp_path / f"v{index}.zarr", workers=1, progress=False,
                                           engine="compiled"))
        for name in ("WPP", "BPP", "uP", "MSE", "target"):
            np.testing.assert_array_equal(ds[name].isel(variant=index).values, single[name].values)


def test_the_plan_sizes_batches_from_the_work_of_their_runs(tmp_path: Path) -> None:
    """Batches hold as many variants of one time course as their work is worth: long runs make more, smaller
    batches (at least a few per worker), short ones fewer; a batch never mixes time courses."""
    short = make_plan(load_experiment(_fw_bw_swept(tmp_path)), workers=2)
    assert len(short.batches) == 1 and short.batches[0].n_runs == 2 * 3 * 12
    long = make_plan(load_experiment(_fw_bw_swept(tmp_path, epochs=20000)), workers=2)
    assert 2 * 2 <= len(long.batches) <= 12
    mixed = "sweep: {zip: {dynamics.Tpres: [0.1, 0.1, 0.2, 0.2]}, grid: {noise.tauxi: [0.1, 0.2, 0.3]}}\n"
    plan = make_plan(load_experiment(_fw_bw_swept(tmp_path, sweep=mixed)), workers=2)
    covered = np.zeros((2, 3, 12), dtype=int)
    for batch in plan.batches:
        covered[batch.seeds, batch.models, batch.variants] += 1
        assert len({v.protocol for v in plan.variants[batch.variants]}) == 1
    assert (covered == 1).all()


def test_a_store_has_a_bounded_number_of_files_and_batches_write_whole_shards(tmp_path: Path) -> None:
    sweep = "sweep: {grid: {plasticity.eta_fw: [[1.0, 1.0], [0.5, 0.5], [0.2, 0.2], [0.1, 0.1]], " \
            "noise.tauxi: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]}}\n"
    path = _fw_bw_swept(tmp_path, sweep=sweep, variables="WPP, BPP, uP, MSE")
    plan = make_plan(load_experiment(path), engine="numpy", workers=2, variants_per_batch=8)
    store = palmc.simulate(path, tmp_path / "many.zarr", workers=1, progress=False, engine="numpy")
    # files: ~ variables x time chunks x batches (and metadata), not a chunk per (model, variant) as before
    files = sum(1 for p in (tmp_path / "many.zarr").rglob("*") if p.is_file())
    assert files < len(plan.variants) * 3
    # each batch's region is whole shards, so that no shard is written by two batches
    plan = make_plan(load_experiment(path), engine="numpy", workers=1)
    ds = xr.open_zarr(store, consolidated=False)
    import zarr

    shards = zarr.open_array(f"{store}/WPP", mode="r").shards or zarr.open_array(f"{store}/WPP", mode="r").chunks
    for batch in plan.batches:
        for region, extent, size in zip((batch.seeds, batch.models, batch.variants), shards[-3:],
                                        (ds.sizes["seed"], ds.sizes["model"], ds.sizes["variant"])):
            assert region.start % extent == 0 and (region.stop % extent == 0 or region.stop == size)


def test_info_and_validate_summarise_a_large_sweep(tmp_path: Path) -> None:
    sweep = "sweep: {grid: {plasticity.eta_fw: " + str([[0.1 * i, 0.2] for i in range(1, 21)]) + \
            ", noise.tauxi: " + str([round(0.05 * i, 2) for i in range(1, 11)]) + "}}\n"
    path = _fw_bw_swept(tmp_path, sweep=sweep, epochs=1, dataset_size=2, settling=0.02)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) < 200
    assert "tauxi: 10 values from 0.05 to 0.5" in result.output and "eta_fw: 20 values" in result.output
    store = palmc.simulate(path, tmp_path / "large.zarr", workers=1, progress=False, engine="numpy")
    result = runner.invoke(app, ["info", str(store)])
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) < 200
    assert "variants     200, e.g. eta_fw=[0.1, 0.2], tauxi=0.05;" in result.output
    assert "tauxi: 10 values from 0.05 to 0.5" in result.output


def test_a_sweep_on_two_workers_ends_quietly(tmp_path: Path) -> None:
    """No ERROR lines or tracebacks from Dask when a run on a local cluster ends normally (its workers used to
    log failed heartbeats while the cluster shut down)."""
    import os
    import subprocess
    import sys

    path = _fw_bw_swept(tmp_path, epochs=20)
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "palmc", "simulate", str(path), "-o", str(tmp_path / "two.zarr"),
                           "--workers", "2", "--seeds-per-batch", "1", "--no-progress"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(root)), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "ERROR" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    one = palmc.open(palmc.simulate(path, tmp_path / "one.zarr", workers=1, progress=False))
    two = palmc.open(tmp_path / "two.zarr")
    for name in ("WPP", "BPP", "uP", "run_status"):
        xr.testing.assert_identical(one[name], two[name])
