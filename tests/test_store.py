"""Streamed stores: readable while running or after a kill, exact resume, overwrite protection, bad paths."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from typer.testing import CliRunner

import palmc
from palmc.cli import app
from palmc.store.writer import CHECKPOINT_DIR
from tests.experiments import write_experiment

runner = CliRunner()


def _data_vars(ds: xr.Dataset) -> xr.Dataset:
    """The recorded data and coordinates, without run bookkeeping and provenance (start times differ)."""
    data = ds.drop_vars(["run_status", "diverged_step"])
    data.attrs = {}
    return data


def test_store_layout_and_info(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path, models="  - {kind: BP}\n  - {kind: PAL}", every=3, chunk_records=4)
    store = palmc.simulate(exp, workers=1, progress=False)
    ds = palmc.open(store)
    assert ds["WPP"].dims == ("time", "layer", "neuron", "pre", "seed", "model")
    assert ds["uP"].dims == ("time", "layer", "neuron", "seed", "model")
    assert ds["WPP"].chunks is not None  # dask-backed, lazily read
    assert ds["WPP"].encoding["chunks"][0] == 4
    assert list(ds["model"].values) == ["BP", "PAL"] and list(ds["seed"].values) == [11, 12]
    assert ds["step"].values[0] == 3 and ds["time"].values[0] == pytest.approx(0.03)
    assert set(ds["phase"].values) == {"settling", "training"}
    # ragged layers are NaN-padded; BP's feedback equals the transposed forward weights of the step before
    assert np.isnan(ds["uP"].sel(layer=2).values[:, 2:]).all()
    assert ds["uP"].attrs["symbol"] == "u^P" and ds["WPP"].attrs["units"] == "1"
    assert (ds.palmc.run_status().values == "complete").all()
    assert ds.attrs["status"] == "complete" and "palmc" in json.loads(ds.attrs["versions"])
    result = runner.invoke(app, ["info", str(store)])
    assert result.exit_code == 0, result.output
    for text in ("complete", "BP, PAL", "11, 12", "WPP", "MiB", "numpy"):
        assert text in result.output


def test_existing_store_is_not_overwritten(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    store = palmc.simulate(exp, workers=1, progress=False)
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["simulate", str(exp), "--workers", "1", "--no-progress"])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--overwrite" in result.output
    assert before == {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    result = runner.invoke(app, ["simulate", str(exp), "--workers", "1", "--no-progress", "--overwrite"])
    assert result.exit_code == 0, result.output


def test_bad_output_paths(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    result = runner.invoke(app, ["simulate", str(exp), "-o", str(blocker / "x.zarr"), "--no-progress"])
    assert result.exit_code == 2 and "cannot create the store" in result.output
    # resuming a store with another experiment is refused, and the store is left as it was
    store = palmc.simulate(exp, workers=1, progress=False)
    other = write_experiment(tmp_path, name="other", epochs=3)
    result = runner.invoke(app, ["simulate", str(other), "-o", str(store), "--resume", "--no-progress"])
    assert result.exit_code == 2 and "different experiment" in result.output
    assert palmc.open(store).attrs["status"] == "complete"


def test_bad_experiment_writes_nothing(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path)
    exp.write_text(exp.read_text().replace("Tpres: 0.1", "Tpres: 0.105"))
    result = runner.invoke(app, ["simulate", str(exp), "--no-progress"])
    assert result.exit_code == 2
    assert "Tpres" in result.output and str(exp) in result.output
    assert not (tmp_path / "exp.zarr").exists()


def test_killed_run_is_readable_and_resumes_exactly(tmp_path: Path) -> None:
    # long enough to be killed mid-way: 8 epochs of 4 samples x 100 steps, one record every 10 steps
    kwargs = dict(layers=(3, 5, 4, 2), epochs=8, dataset_size=4, Tpres=1.0, settling=1.0, every=10,
                  chunk_records=5, models="  - {kind: FA}\n  - {kind: PAL}")
    exp = write_experiment(tmp_path, name="killed", **kwargs)
    store = tmp_path / "killed.zarr"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "palmc", "simulate", str(exp), "--workers", "1", "--engine", "numpy",
                             "--no-progress"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    progress = store / CHECKPOINT_DIR / "batch0000.progress.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if progress.exists() and json.loads(progress.read_text())["run_steps"] > 1000:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = palmc.open(store)
    assert partial.attrs["status"] == "running"  # what the killed process left; info reports it interrupted
    written = np.isfinite(partial["WPP"].sel(layer=1, neuron=0, pre=0).values).all(axis=(1, 2))
    assert 0 < written.sum() < partial.sizes["time"]
    result = runner.invoke(app, ["info", str(store)])
    assert "interrupted" in result.output

    result = runner.invoke(app, ["simulate", str(exp), "--resume", "--workers", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    uninterrupted = palmc.simulate(exp, tmp_path / "uninterrupted.zarr", workers=1, engine="numpy", progress=False)
    xr.testing.assert_identical(_data_vars(palmc.open(store)).load(), _data_vars(palmc.open(uninterrupted)).load())
    assert palmc.open(store).attrs["status"] == "complete"


def test_bp_and_fa_need_no_pal_sections(tmp_path: Path) -> None:
    exp = write_experiment(tmp_path, task="fw_bw", layers=(2, 3, 2), models="  - {kind: BP}\n  - {kind: FA}",
                           variables="WPP, MSE")
    text = "\n".join(line for line in exp.read_text().splitlines()
                     if not line.startswith("noise:") and not line.strip().startswith("alpha:"))
    exp.write_text(text + "\n")
    store = palmc.simulate(exp, workers=1, progress=False)
    mse = palmc.open(store)["MSE"].sel(model="BP")
    assert np.isfinite(mse.isel(time=-1)).all()


def test_store_at_an_fsspec_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL store (here fsspec's in-memory filesystem, standing in for object storage) works like a directory,
    also when a thread-worker cluster writes it."""
    import uuid

    from palmc.store.writer import StoreError

    exp = write_experiment(tmp_path, models="  - {kind: FA}\n  - {kind: PAL}", seeds=(11, 12, 13), every=3)
    local = palmc.open(palmc.simulate(exp, tmp_path / "local.zarr", workers=1, progress=False, engine="numpy"))
    url = f"memory://palmc-{uuid.uuid4().hex}/exp.zarr"
    assert palmc.simulate(exp, url, workers=1, progress=False, engine="numpy") == url
    xr.testing.assert_identical(_data_vars(palmc.open(url)), _data_vars(local))
    assert "complete" in palmc.info(url)
    with pytest.raises(StoreError, match="already exists"):
        palmc.simulate(exp, url, workers=1, progress=False, engine="numpy")
    by_cli = f"memory://palmc-{uuid.uuid4().hex}/cli.zarr"
    result = runner.invoke(app, ["simulate", str(exp), "-o", by_cli, "--workers", "1", "--no-progress",
                                 "--engine", "numpy"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["info", by_cli])
    assert result.exit_code == 0 and "complete" in result.output, result.output
    monkeypatch.setenv("PALMC_LOCAL_PROCESSES", "0")  # thread workers share this process's memory filesystem
    clustered = f"memory://palmc-{uuid.uuid4().hex}/exp.zarr"
    palmc.simulate(exp, clustered, workers=2, seeds_per_batch=1, progress=False, engine="numpy")
    xr.testing.assert_identical(_data_vars(palmc.open(clustered)), _data_vars(local))
