"""What a new user trips over (issue #21): one test (or a few) per point of the issue."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import palmc
from palmc.cli import app
from tests.experiments import write_experiment

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "experiments" / "quickstart.yaml"
runner = CliRunner()


# -- 3. the schema tells the truth about FA ---------------------------------------------------------------------

def test_schema_does_not_say_fa_needs_eta_bw_zero() -> None:
    schema = (ROOT / "schemas" / "experiment.schema.json").read_text()
    assert "when eta_bw = 0" not in schema and "keeps FA's random feedback fixed" not in schema
    assert "whatever eta_bw is" in schema
    assert "overrides" not in QUICKSTART.read_text().split("models:")[1]  # no useless FA override


def test_quickstart_fa_is_the_same_with_or_without_an_eta_bw_override(tmp_path: Path) -> None:
    text = QUICKSTART.read_text().replace("epochs: 60", "epochs: 1").replace("seeds: [123, 456, 789]", "seeds: [123]")
    head, _ = text.split("models:")
    tail = "\nseeds: [123]\nrecording:\n  variables: [WPP, BPP, vbas]\n  every: 10\noutput:\n  store: x.zarr\n"
    stores = []
    for name, models in (("plain", "  - kind: FA\n"),
                         ("override", "  - kind: FA\n    overrides: {plasticity: {eta_bw: [0.0, 0.0]}}\n")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(head + "models:\n" + models + tail)
        stores.append(palmc.open(palmc.simulate(path, tmp_path / f"{name}.zarr", engine="numpy", workers=1,
                                                progress=False)))
    plain, override = stores
    for var in ("WPP", "BPP", "vbas"):
        np.testing.assert_array_equal(plain[var].values, override[var].values)
    bpp = plain["BPP"].sel(layer=1).values
    np.testing.assert_array_equal(bpp[0], bpp[-1])  # FA's feedback never moves


# -- 7. clean exit-2 messages with hints ------------------------------------------------------------------------

@pytest.mark.parametrize("command", [["simulate", str(QUICKSTART), "-o", "s3://bucket/run.zarr"],
                                     ["info", "s3://bucket/run.zarr"], ["plot", "s3://bucket/run.zarr"]])
def test_s3_without_s3fs_names_the_package(command: list[str], tmp_path: Path) -> None:
    pytest.importorskip("fsspec")
    try:
        import s3fs  # noqa: F401
        pytest.skip("s3fs is installed")
    except ImportError:
        pass
    result = runner.invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "pip install s3fs" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 2


def test_validate_on_a_reference_params_json_hints_convert(tmp_path: Path) -> None:
    params = {"_comment": "reference", "layers": [5, 20, 5], "dt": 0.01, "Tpres": 10.0, "eta_fw": [0, 0],
              "eta_bw": [1.0], "model_type": "PAL", "seeds": [1], "_comment ": "x"}
    text = json.dumps(params)[:-1] + ', "dt": 0.01, "Tpres": 10.0}'  # the reference's files repeat keys
    path = tmp_path / "params.json"
    path.write_text(text)
    for command in ("validate", "simulate"):
        result = runner.invoke(app, [command, str(path)])
        assert result.exit_code == 2, result.output
        assert "palmc convert" in result.output and "duplicate" not in result.output
        assert not list(tmp_path.glob("*.zarr"))
    result = runner.invoke(app, ["validate", str(QUICKSTART)])  # a palmc experiment is not mistaken for one
    assert result.exit_code == 0, result.output


# -- 10. CLI habits ---------------------------------------------------------------------------------------------

def test_version_and_short_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"palmc {palmc.__version__}"
    for command in ([], ["simulate"], ["analyze"]):
        short, long = runner.invoke(app, [*command, "-h"]), runner.invoke(app, [*command, "--help"])
        assert short.exit_code == 0 and short.output == long.output


def test_help_has_no_typer_noise() -> None:
    result = runner.invoke(app, ["simulate", "--help"], terminal_width=120)
    assert "simulate [OPTIONS] EXPERIMENT" in " ".join(result.output.split())
    assert "{experiment}" not in result.output and "<bool>" not in result.output
    assert "--no-progress" in result.output and "<int" in result.output  # typed options keep their type (<int range> when bounded)
    result = runner.invoke(app, ["plot", "--help"], terminal_width=120)
    assert "STORE [QUERIES]" in result.output and "<bool>" not in result.output


# -- 2. analysis is discoverable --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("new_user")
    exp = write_experiment(directory, layers=(3, 4, 3, 2), models="  - {kind: BP}\n  - {kind: FA}\n  - {kind: PAL}",
                           seeds=(11, 12, 13), epochs=3, every=5, variables="WPP, BPP, vbas")
    return palmc.simulate(exp, workers=1, engine="numpy", progress=False)


def test_metrics_command_lists_every_metric_with_units_needs_and_arguments() -> None:
    from palmc.query import METRICS

    result = runner.invoke(app, ["metrics"])
    assert result.exit_code == 0, result.output
    for name, entry in METRICS.items():
        assert f"\n{name}\n" in f"\n{result.output}"
        assert f"needs      {', '.join(entry.requires)}" in result.output
    assert "arguments  forward='ann'" in result.output and "units      deg" in result.output
    one = runner.invoke(app, ["metrics", "angle_BPP_WPPT"])
    assert one.exit_code == 0 and "(W^PP_{l+1})^T" in one.output and "MSE" not in one.output.split("\n\n")[0]
    bad = runner.invoke(app, ["metrics", "angle_nope"])
    assert bad.exit_code == 2 and "angle_BPP_WPPT" in bad.output


def test_queries_doc_is_current() -> None:
    from palmc.query.reference import docs_path, queries_markdown

    assert docs_path().read_text(encoding="utf-8") == queries_markdown(), \
        "docs/queries.md is out of date: run python -m palmc.query.reference"
    text = queries_markdown()
    for key in ("per_sample_end", "moving_window", "quantile", "over", "phase", "epoch", "variant"):
        assert f"`{key}`" in text


def test_readme_lists_the_metrics_and_one_example_per_aggregation_and_reduction(small_store: Path,
                                                                                tmp_path: Path) -> None:
    from palmc.query import METRICS, run_query_file
    from palmc.query.reference import AGGREGATION_EXAMPLES, REDUCTION_EXAMPLES, example_file

    readme = (ROOT / "README.md").read_text()
    analysis = readme.split("### Analysis and plots")[1].split("\n### ")[0]
    for name in METRICS:
        assert f"| `{name}` |" in analysis
    ds = palmc.open(small_store)
    for examples in (AGGREGATION_EXAMPLES, REDUCTION_EXAMPLES):
        text = example_file(examples)
        assert text in analysis
        path = tmp_path / "q.yaml"
        path.write_text(text)
        results = run_query_file(ds, path)
        assert set(results) == set(examples)
        for name, result in results.items():
            assert np.isfinite(result.sel(model="PAL").values).any(), name


# -- 4. the store as xarray users expect ------------------------------------------------------------------------

def test_dataset_wide_operations_work_on_a_store(small_store: Path) -> None:
    import xarray as xr

    ds = palmc.open(small_store)
    assert ds["run_status"].dtype.kind == "i"
    assert ds["run_status"].attrs["flag_meanings"].split()[ds["run_status"].attrs["flag_values"].index(1)] == "complete"
    assert (ds.palmc.run_status().values == "complete").all()
    training = ds.where(ds.phase == "training")  # raised DTypePromotionError with a text run_status
    assert np.isnan(training["WPP"].isel(time=0)).all() and not np.isnan(training["WPP"].isel(time=-1)).all()
    filled = ds.fillna(0)
    assert not np.isnan(filled["WPP"].values).any()
    for plain in (xr.open_zarr(small_store, consolidated=False),):  # a plain open_zarr too: ints, not text
        assert plain["run_status"].dtype.kind == "i"
        plain.fillna(0)


def test_small_coordinates_are_in_memory_and_attrs_are_numbers(small_store: Path) -> None:
    ds = palmc.open(small_store)
    for name in ("phase", "epoch", "step", "layer_size", "model_kind", "gl"):
        assert isinstance(ds[name].variable._data, np.ndarray) or ds[name].variable._in_memory, name
        assert ds[name].chunks is None, name
    assert ds["WPP"].chunks is not None  # the data stay lazy
    mask = ds.epoch >= 2
    assert ds.sel(time=mask).sizes["time"] == int(mask.sum())
    assert ds.attrs["dt"] == 0.01 and ds.attrs["Tpres"] == 0.1 and isinstance(ds.attrs["steps_total"], int)


def test_accessor_queries_and_lists_metrics(small_store: Path) -> None:
    ds = palmc.open(small_store)
    direct = palmc.query(ds, "angle_BPP_WPPT", aggregate="last", reduce="mean")
    via = ds.palmc.query("angle_BPP_WPPT", aggregate="last", reduce="mean")
    np.testing.assert_array_equal(direct.values, via.values)
    table = ds.palmc.metrics()
    assert bool(table.loc["angle_BPP_WPPT", "available"]) and table.loc["angle_BPP_WPPT", "units"] == "deg"
    assert not bool(table.loc["MSE", "available"]) and "MSE" in table.loc["MSE", "missing"]
    assert table.loc["angle_dWPP_BP", "arguments"] == "forward='ann'"


def test_info_counts_the_runs(small_store: Path) -> None:
    result = runner.invoke(app, ["info", str(small_store)])
    assert result.exit_code == 0 and "runs         9 complete" in result.output


# -- 5. analyze -o keeps what the results say --------------------------------------------------------------------

ANALYZE_QUERIES = """\
queries:
  final: {metric: angle_BPP_WPPT, select: {layer: 1, model: PAL}, aggregate: last}
  band: {metric: angle_BPP_WPPT, aggregate: last, reduce: {quantile: [0.1, 0.9]}}
  weights: {variable: WPP, select: {model: PAL, seed: 11}, aggregate: last}
"""


def test_analyze_csv_keeps_integers_selected_dims_units_time_and_drops_padding(small_store: Path,
                                                                              tmp_path: Path) -> None:
    import pandas as pd

    queries = tmp_path / "q.yaml"
    queries.write_text(ANALYZE_QUERIES)
    out = tmp_path / "out.csv"
    result = runner.invoke(app, ["analyze", str(small_store), str(queries), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert ",11.0," not in text and "123.0" not in text
    table = pd.read_csv(out)
    last_time = float(palmc.open(small_store)["time"].values[-1])
    final = table[table["query"] == "final"]
    assert len(final) == 3 and (final["model"] == "PAL").all() and (final["layer"] == 1).all()
    assert sorted(final["seed"].astype(int)) == [11, 12, 13] and (final["units"] == "deg").all()
    assert (final["time"] == last_time).all()
    band = table[table["query"] == "band"]
    assert len(band) == 2 * 2 * 3 and (band["time"] == last_time).all()  # layers x quantiles x models
    weights = table[table["query"] == "weights"]
    assert len(weights) == 4 * 3 + 3 * 4 + 2 * 3  # the real weights of a 3-4-3-2 network, no padding
    assert weights["value"].notna().all() and (weights["seed"] == 11).all() and (weights["units"] == "1").all()


@pytest.mark.parametrize("suffix", [".nc", ".zarr"])
def test_analyze_nc_and_zarr_keep_the_labels(small_store: Path, tmp_path: Path, suffix: str) -> None:
    from palmc.query import load_results

    queries = tmp_path / "q.yaml"
    queries.write_text(ANALYZE_QUERIES)
    out = tmp_path / f"out{suffix}"
    assert runner.invoke(app, ["analyze", str(small_store), str(queries), "-o", str(out)]).exit_code == 0
    back = load_results(out)
    last_time = float(palmc.open(small_store)["time"].values[-1])
    assert float(back["final"]["time"]) == last_time and int(back["final"]["layer"]) == 1
    assert str(back["final"]["model"].values) == "PAL" and back["final"]["seed"].dtype.kind == "i"
    assert float(back["band"]["time"]) == last_time


# -- 9. time blocks anchored at epoch starts; `last` on a running store -------------------------------------------

def test_every_blocks_are_anchored_at_epoch_starts(small_store: Path) -> None:
    ds = palmc.open(small_store)  # settling 0.3 ms, epochs of 0.3 ms (3 samples of Tpres 0.1), 3 epochs: 1.2 ms
    last = float(ds["time"].values[-1])
    blocks = palmc.query(ds, "angle_BPP_WPPT", aggregate={"every": "5 Tpres"}, select={"model": "PAL", "seed": 11})
    np.testing.assert_allclose(blocks["time"].values, [0.3, 0.6, 0.9, 1.2])  # was 0.5, 1.0, 1.5 (after the end)
    assert blocks["time"].values.max() <= last + 1e-12
    blocks = palmc.query(ds, "angle_BPP_WPPT", aggregate={"every": "2 Tpres"}, select={"model": "PAL", "seed": 11})
    np.testing.assert_allclose(blocks["time"].values, [0.2, 0.3, 0.5, 0.6, 0.8, 0.9, 1.1, 1.2])
    raw = palmc.query(ds, "angle_BPP_WPPT", select={"model": "PAL", "seed": 11, "time": [0.30001, 0.5]})
    np.testing.assert_allclose(blocks.sel(time=0.5).values, raw.mean("time").values, rtol=1e-12)


def test_last_on_a_running_store_returns_each_runs_latest_record(small_store: Path, tmp_path: Path) -> None:
    import shutil

    import zarr

    from palmc.store.writer import update_attrs

    store = tmp_path / "running.zarr"
    shutil.copytree(small_store, store)
    group = zarr.open_group(str(store), mode="r+", zarr_format=3)
    written = {11: 9, 12: 14, 13: 23}  # records written so far per seed (the others are still NaN)
    for name in ("WPP", "BPP", "vbas"):
        array = group[name]
        for position, (seed, n) in enumerate(written.items()):
            index = (slice(n, None),) + (slice(None),) * (array.ndim - 3) + (position, slice(None))
            array[index] = np.nan
    update_attrs(store, status="running")
    ds = palmc.open(store)
    final = palmc.query(ds, "angle_BPP_WPPT", aggregate="last")
    assert np.isfinite(final.values).all()
    complete = palmc.open(small_store)
    for seed, n in written.items():
        expected = palmc.query(complete, "angle_BPP_WPPT").isel(time=n - 1).sel(seed=seed)
        np.testing.assert_allclose(final.sel(seed=seed).values, expected.values, rtol=1e-12, atol=1e-9)
        assert (final["time"].sel(seed=seed).values == complete["time"].values[n - 1]).all()
    mean = palmc.query(ds, "angle_BPP_WPPT", aggregate="last", reduce="mean")
    assert np.isfinite(mean.values).all()


# -- 6. Dask habits ----------------------------------------------------------------------------------------------

def test_simulate_uses_a_client_a_cluster_or_the_active_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    from dask.distributed import Client, LocalCluster

    import palmc.distributed

    def no_new_cluster(*args: object, **kwargs: object) -> None:
        raise AssertionError("palmc started its own LocalCluster")

    monkeypatch.setattr(palmc.distributed, "start_local_cluster", no_new_cluster)
    exp = write_experiment(tmp_path, models="  - {kind: FA}\n  - {kind: PAL}", seeds=(11, 12, 13, 14))
    reference = palmc.open(palmc.simulate(exp, tmp_path / "ref.zarr", workers=1, engine="numpy", progress=False))
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster:
        with Client(cluster) as client:
            for name, scheduler in (("active", None), ("client", client), ("cluster", cluster)):
                store = palmc.simulate(exp, tmp_path / f"{name}.zarr", scheduler=scheduler, engine="numpy",
                                       seeds_per_batch=1, progress=False)
                np.testing.assert_array_equal(palmc.open(store)["BPP"].values, reference["BPP"].values)
                err = capsys.readouterr().err
                assert "Dask dashboard: http" in err  # even without a progress bar
                assert {"active": "using the active Dask client", "client": "using the Dask client given",
                        "cluster": "using the Dask scheduler at"}[name] in err
            assert client.status == "running"  # palmc left the user's client open
        result = runner.invoke(app, ["simulate", str(exp), "-o", str(tmp_path / "cli.zarr"), "--engine", "numpy",
                                     "--scheduler", cluster.scheduler_address, "--no-progress"])
        assert result.exit_code == 0, result.output
        assert "Dask dashboard: http" in result.output


# -- 1. a visible first run --------------------------------------------------------------------------------------

@pytest.fixture()
def slow_first_load(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """A kernel that is not in numba's cache and takes 1.6 s to load (a stand-in for the one-minute compile)."""
    import time

    from palmc.engine.compiled import driver

    loaded: list[float] = []
    real_load = driver.load

    def slow_load(layouts: object) -> None:
        time.sleep(1.6)
        real_load(layouts)
        loaded.append(time.perf_counter())

    monkeypatch.setattr(driver, "loaded", lambda layouts: bool(loaded))
    monkeypatch.setattr(driver, "cached", lambda layouts: False)
    monkeypatch.setattr(driver, "load", slow_load)
    return loaded


def test_first_run_says_it_compiles_with_a_spinner_before_the_progress_bar(tmp_path: Path,
                                                                          slow_first_load: list[float]) -> None:
    exp = write_experiment(tmp_path, models="  - {kind: PAL}", seeds=(11,))
    result = runner.invoke(app, ["simulate", str(exp), "--engine", "compiled", "--workers", "1"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "compiling the simulation kernel, once per machine (~1 min" in out
    assert "00:01" in out and any(f"machine (~1 min; numba caches it on disk) {c}" in out for c in "/-")  # it spins
    assert re.search(r"compiled the kernel in \d+ s; later runs load it from the cache", out)
    assert out.index("compiled the kernel") < out.index("seed-steps")  # the bar starts after, at 0
    assert "seed-steps:   0%" in out
    assert slow_first_load  # the loader ran


def test_first_run_message_without_progress_and_none_for_a_cached_kernel(tmp_path: Path,
                                                                         slow_first_load: list[float],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from palmc.engine.compiled import driver

    exp = write_experiment(tmp_path, models="  - {kind: PAL}", seeds=(11,))
    result = runner.invoke(app, ["simulate", str(exp), "--engine", "compiled", "--workers", "1", "--no-progress",
                                 "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "compiling the simulation kernel" in result.output and "00:0" not in result.output
    slow_first_load.clear()
    monkeypatch.setattr(driver, "cached", lambda layouts: True)
    monkeypatch.setattr(driver, "load", lambda layouts: slow_first_load.append(0.0))  # a quick cached load
    result = runner.invoke(app, ["simulate", str(exp), "--engine", "compiled", "--workers", "1", "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "compiling" not in result.output and "compiled the kernel" not in result.output


# -- 12. the test extra and the quick start ---------------------------------------------------------------------

def test_test_extra_installs_what_the_notebook_tests_import() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=\[ ;]", spec, maxsplit=1)[0].lower()
             for spec in project["dependencies"] + project["optional-dependencies"]["test"]}
    notebook_test = (ROOT / "tests" / "test_notebooks.py").read_text()
    imported = set(re.findall(r'importorskip\("([\w.]+)"\)', notebook_test))
    provided_by = {"jupyter_client": "nbclient"}  # a dependency of nbclient
    for module in imported:
        assert provided_by.get(module, module).lower() in names, module
    assert "ipykernel" in names  # the notebooks' python3 kernel


def test_readme_quick_start_says_what_the_first_run_and_the_browser_tests_need() -> None:
    quick_start = (ROOT / "README.md").read_text().split("## Quick start")[1].split("\n## ")[0]
    assert "first run" in quick_start and "compiles the simulation kernel" in quick_start
    assert "Chromium" in quick_start and "apt-get install -y chromium" in quick_start
    assert "nbclient" in quick_start


# -- 11. experiments shipped with the package ------------------------------------------------------------------

def test_pyproject_ships_every_package_and_the_experiments() -> None:
    import tomllib

    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "palmc").rglob("__init__.py")}
    assert on_disk <= set(setuptools["packages"])  # a new subpackage must be listed (packages.find cannot be used)
    assert setuptools["package-dir"]["palmc.experiments"] == "experiments"
    patterns = setuptools["package-data"]["palmc.experiments"]
    shipped = {p.relative_to(ROOT / "experiments").as_posix() for pattern in patterns
               for p in (ROOT / "experiments").glob(pattern)}
    assert {"fig3abc.yaml", "fig3def.yaml", "fig4ab.yaml", "fig6.yaml", "quickstart.yaml",
            "published/fig3abc_angles_per_seed.csv"} <= shipped


def test_reproduce_finds_the_installed_experiments_outside_a_checkout(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Installed (not editable), palmc's folder has no experiments/ beside it: the package data are used."""
    import shutil
    import sys

    site = tmp_path / "site-packages"
    shutil.copytree(ROOT / "palmc", site / "palmc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "experiments", site / "palmc" / "experiments")  # what the wheel holds
    code = ("import palmc.reproduce as r; print(r.EXPERIMENTS); "
            "print(r.figure_experiment('fig3abc', short=True).name)")
    import subprocess

    monkeypatch.chdir(tmp_path)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**__import__("os").environ, "PYTHONPATH": str(site)}, timeout=120)
    assert done.returncode == 0, done.stderr
    folder, name = done.stdout.split()
    assert Path(folder) == site / "palmc" / "experiments" and name == "fig3abc-short"


@pytest.mark.slow
def test_pip_install_then_reproduce_from_another_folder(tmp_path: Path) -> None:
    import subprocess
    import sys

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(ROOT)], check=True, timeout=1800)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([str(venv / "bin" / "palmc"), "reproduce", "fig3abc", "--short", "--workers", "1",
                           "--no-progress"], cwd=elsewhere, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (elsewhere / "results" / "fig3abc-short" / "report.md").exists()


# -- 8. dashboard ------------------------------------------------------------------------------------------------

def test_plot_labels_use_unicode_not_caret_notation(small_store: Path) -> None:
    from palmc.plots import plot_query
    from palmc.plots.curves import METRIC_LABELS, unicode_math, weight_trajectories
    from palmc.reproduce import ANGLE_NAMES

    assert unicode_math("(W^PP_l+1)^T") == "(Wᴾᴾₗ₊₁)ᵀ" and unicode_math("J_g") == "J_g"
    for label in [*METRIC_LABELS.values(), *ANGLE_NAMES.values()]:
        assert "^" not in label and "_l" not in label, label
    ds = palmc.open(small_store)
    plot = plot_query(ds, "angle_BPP_WPPT")
    for panel in plot:
        assert "^" not in panel.opts.get().kwargs["title"]
        assert "^" not in panel.values()[0].vdims[0].label
    hmap = weight_trajectories(ds, "WPP", layers=[1, 2])
    assert hmap[("PAL", 11, 2)].label == "Wᴾᴾ₂ (layer 1 → 2)"


def test_legends_are_outside_the_axes(small_store: Path) -> None:
    from bokeh.models import Legend

    from palmc.plots import plot_query
    from palmc.plots.linked import render_bokeh

    ds = palmc.open(small_store)
    figure = render_bokeh(plot_query(ds, "angle_BPP_WPPT", select={"layer": 1}))
    legends = [item for item in figure.right if isinstance(item, Legend)]
    assert legends and not [item for item in figure.center if isinstance(item, Legend)]


def test_query_bars_have_the_models_colours(small_store: Path) -> None:
    from bokeh.models import GlyphRenderer

    from palmc.plots import plot_result
    from palmc.plots.curves import line_colors
    from palmc.plots.linked import render_bokeh

    ds = palmc.open(small_store)
    colors = line_colors(ds)
    result = palmc.query(ds, "angle_BPP_WPPT", aggregate="last", select={"model": ["PAL", "FA"]})
    layout = plot_result(result, colors=colors)
    bars = render_bokeh(layout.values()[0])
    (renderer,) = [r for r in bars.renderers if isinstance(r, GlyphRenderer)]
    data = renderer.data_source.data
    color_field = renderer.glyph.fill_color if isinstance(renderer.glyph.fill_color, str) else \
        renderer.glyph.fill_color["field"]
    pairs = {(str(m), str(c)) for m, c in zip(data["model"], data[color_field])}
    assert pairs == {("PAL", colors["PAL"]), ("FA", colors["FA"])}  # the curves' colours, not the first two


def test_one_run_section_opens_on_pal(small_store: Path) -> None:
    import panel as pn
    from bokeh.models import Select

    from palmc.plots import build_dashboard

    dashboard = build_dashboard(palmc.open(small_store))
    selects = [select for obj in dashboard.objects if isinstance(obj, pn.pane.Bokeh)
               for select in obj.object.select({"type": Select})]
    model = next(select for select in selects if select.title == "model")
    assert model.value == "PAL" and model.options[0] == "BP"


def test_published_overlay_reaches_the_end_of_a_short_run() -> None:
    import pandas as pd

    from palmc.reproduce import _published_to

    curve = pd.DataFrame({"metric": "angle_BPP_WPPT", "layer": 1, "step": [2000, 8000, 14000, 20000, 26000, 32000],
                          "mean_deg": [90.0, 80.0, 70.0, 60.0, 50.0, 40.0], "std_deg": 1.0})
    steps, means = _published_to(curve, "angle_BPP_WPPT", 1, 30000)  # a --short run of fig3abc ends at 30000
    assert steps[-1] == 30000 and means[-1] == pytest.approx(50.0 - 10.0 * 4000 / 6000)
    steps, means = _published_to(curve, "angle_BPP_WPPT", 1, 32000)
    assert steps[-1] == 32000 and len(steps) == 6 and means[-1] == 40.0


def test_dashboard_in_chromium_shows_unicode_titles(small_store: Path, tmp_path: Path) -> None:
    from palmc.plots import save_dashboard
    from palmc.plots.browser import find_chromium, open_in_chromium, screenshot_stats

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); the browser check needs it")
    html = save_dashboard(small_store, tmp_path / "dashboard.html")
    png = tmp_path / "dashboard.png"
    report = open_in_chromium(html, png, window_size=(1200, 1400), budget_ms=5000, chromium=chromium)
    assert report.errors == [], report.errors
    assert "∠(Bᴾᴾ, (Wᴾᴾ)ᵀ), layer 1" in report.titles, report.titles
    assert not [t for t in report.titles if "^" in t], report.titles
    assert "Wᴾᴾ₁ (layer 0 → 1)" in report.titles  # the One run section, opened on PAL
    stats = screenshot_stats(png)
    assert stats["colors"] > 100 and stats["non_white"] > 0.02, stats


def test_last_on_a_running_sweep_store_returns_each_runs_latest_record(tmp_path: Path) -> None:
    import zarr

    from palmc.store.writer import update_attrs

    path = write_experiment(tmp_path, "sw", models="  - {kind: PAL}\n  - {kind: FA}", seeds=(11, 12), every=2,
                            variables="WPP, BPP")
    path.write_text(path.read_text() + "sweep:\n  grid:\n    dynamics.Tpres: [0.1, 0.2]\n")
    complete = palmc.open(palmc.simulate(path, workers=1, engine="numpy", progress=False))
    expected = palmc.query(complete, "angle_BPP_WPPT", aggregate="last")
    assert np.isfinite(expected.values).all()
    group = zarr.open_group(str(tmp_path / "sw.zarr"), mode="r+", zarr_format=3)
    cut = int(complete["last_record"].values[0]) - 3  # variant 0 of seed 12 is 4 records short of its end
    for name in ("WPP", "BPP"):
        array = group[name]
        array[(slice(cut + 1, None),) + (slice(None),) * (array.ndim - 4) + (1, slice(None), 0)] = np.nan
    update_attrs(tmp_path / "sw.zarr", status="running")
    running = palmc.query(palmc.open(tmp_path / "sw.zarr"), "angle_BPP_WPPT", aggregate="last")
    assert np.isfinite(running.values).all()
    np.testing.assert_allclose(running.sel(seed=11).values, expected.sel(seed=11).values, rtol=1e-12, atol=1e-9)
    at_cut = palmc.query(complete, "angle_BPP_WPPT").isel(time=cut).sel(seed=12, variant=0)
    np.testing.assert_allclose(running.sel(seed=12, variant=0).values, at_cut.values, rtol=1e-12, atol=1e-9)
