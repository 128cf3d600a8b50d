"""Dask distribution: identical results whatever the workers and batches, killed workers, diverging runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import palmc
from palmc.api import RunFailures
from palmc.store.writer import CHECKPOINT_DIR
from tests.experiments import write_experiment

MODELS = "  - {kind: BP}\n  - {kind: PAL}"


def _data(store: Path) -> xr.Dataset:
    ds = palmc.open(store).drop_vars(["run_status", "diverged_step"])
    ds.attrs = {}
    return ds.load()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("dist")
    return write_experiment(directory, layers=(3, 4, 3, 2), seeds=(11, 12, 13, 14), models=MODELS, epochs=3,
                            dataset_size=3, Tpres=0.5, settling=0.5, every=5, chunk_records=8)


@pytest.fixture(scope="module")
def single(experiment: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    store = tmp_path_factory.mktemp("single") / "one.zarr"
    return palmc.simulate(experiment, store, workers=1, engine="numpy", progress=False)


def test_local_cluster_with_several_batches_matches_one_process(experiment: Path, single: Path, tmp_path: Path) -> None:
    store = palmc.simulate(experiment, tmp_path / "two.zarr", workers=2, seeds_per_batch=1, engine="numpy",
                           progress=False)
    ds = palmc.open(store)
    assert ds.attrs["seeds_per_batch"] == 1
    assert (ds.palmc.run_status().values == "complete").all()
    xr.testing.assert_identical(_data(store), _data(single))


@pytest.mark.parametrize("processes", ["1", "0"], ids=["forked-processes", "threads"])
def test_local_workers_run_the_compiled_engine(experiment: Path, tmp_path: Path, processes: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Local workers are forked processes by default (threads on request); same results either way."""
    from palmc.distributed import local_processes

    monkeypatch.delenv("PALMC_LOCAL_PROCESSES", raising=False)
    assert local_processes()
    monkeypatch.setenv("PALMC_LOCAL_PROCESSES", processes)
    assert local_processes() == (processes == "1")
    one = palmc.simulate(experiment, tmp_path / "one.zarr", workers=1, engine="compiled", progress=False)
    two = palmc.simulate(experiment, tmp_path / "two.zarr", workers=2, seeds_per_batch=1, engine="compiled",
                         progress=False)
    assert (palmc.open(two).palmc.run_status().values == "complete").all()
    xr.testing.assert_identical(_data(two), _data(one))


def test_local_cluster_serves_its_dashboard(experiment: Path, single: Path, tmp_path: Path) -> None:
    """The address reported for the local cluster answers with the dashboard's pages (connected after start)."""
    from urllib.request import urlopen

    from palmc.store.writer import prepare_store
    from palmc.distributed import cluster_client, run_on_cluster
    from palmc.plan import make_plan
    from palmc.schema import load_experiment
    from palmc.store.location import StoreLocation

    plan = make_plan(load_experiment(experiment), seeds_per_batch=1, engine="compiled", workers=2)
    store = StoreLocation(tmp_path / "dash.zarr")
    prepare_store(plan, store, overwrite=False, resume=False)
    pages: dict[str, str] = {}

    def on_dashboard(link: str) -> None:
        assert link.endswith("/status")
        for page in ("status", "individual-task-stream"):
            with urlopen(link.replace("/status", f"/{page}"), timeout=30) as response:
                pages[page] = response.read().decode()

    with cluster_client(plan, workers=2) as client:
        results, failures = run_on_cluster(client, plan, str(store), lambda n: None, on_dashboard)
    assert not failures and len(results) == len(plan.batches)
    assert "bokeh" in pages["status"].lower() and "bokeh" in pages["individual-task-stream"].lower()


def test_worker_preload_loads_the_kernel_in_the_background() -> None:
    """``dask worker --preload palmc.worker_preload`` (and spawned local workers): the worker's start is not held
    up, and the kernel is loaded once the thread is done (checked in a fresh process, where nothing loaded it)."""
    code = (
        "import threading\n"
        "from palmc import worker_preload\n"
        "from palmc.engine.compiled import lanes, neurons\n"
        "assert not neurons.advance_segment.signatures\n"
        "worker_preload.dask_setup(None)\n"
        "(loader,) = [t for t in threading.enumerate() if t.name == 'palmc-load-kernel']\n"
        "assert loader.daemon\n"
        "loader.join()\n"
        "print(len(neurons.advance_segment.signatures), len(lanes.advance_segment.signatures))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=600)
    assert out.stdout.split() == ["1", "1"]


def test_dashboard_without_bokeh_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the dashboard pages cannot be imported, the first visit gets a 404 saying why (and so do later ones)."""
    import asyncio
    from types import SimpleNamespace

    from distributed.http.routing import RoutingApplication
    from tornado.httpclient import AsyncHTTPClient
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    import palmc.distributed

    monkeypatch.setattr(palmc.distributed, "_import_dashboard_pages", lambda: "No module named 'bokeh'")

    async def visit_twice() -> list[tuple[int, str]]:
        scheduler = SimpleNamespace(http_application=RoutingApplication([]))
        scheduler.http_application.add_application(palmc.distributed._dashboard_on_first_visit(scheduler))
        sockets = bind_sockets(0, "127.0.0.1")
        server = HTTPServer(scheduler.http_application)
        server.add_sockets(sockets)
        url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/status"
        try:
            answers = [await AsyncHTTPClient().fetch(url, raise_error=False) for _ in range(2)]
        finally:
            server.stop()
        return [(a.code, a.body.decode()) for a in answers]

    first, second = asyncio.run(visit_twice())
    assert first == second == (404, "The Dask dashboard needs bokeh: No module named 'bokeh'")


class ExternalCluster:
    """A `dask scheduler` and two `dask worker` processes, as a user would start them."""

    def __init__(self, directory: Path) -> None:
        self.scheduler_file = directory / "scheduler.json"
        dask = shutil.which("dask") or pytest.skip("the dask command is not installed")
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
        self.procs = [subprocess.Popen([dask, "scheduler", "--port", "0", "--dashboard-address", ":0",
                                        "--scheduler-file", str(self.scheduler_file)],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)]
        deadline = time.time() + 60
        while not self.scheduler_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        self.address = json.loads(self.scheduler_file.read_text())["address"]
        for preload in (["--preload", "palmc.worker_preload"], []):  # as the README suggests, and without
            self.procs.append(subprocess.Popen([dask, "worker", self.address, "--nthreads", "1", "--no-nanny", *preload],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env))
        from dask.distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.procs[1:]]

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


def test_external_scheduler_and_a_killed_worker(experiment: Path, single: Path, tmp_path: Path) -> None:
    cluster = ExternalCluster(tmp_path)
    try:
        store = palmc.simulate(experiment, tmp_path / "ext.zarr", scheduler=cluster.address, seeds_per_batch=1,
                               engine="numpy", progress=False)
        xr.testing.assert_identical(_data(store), _data(single))

        # a second worker pool, one of whose workers is killed mid-run: no run may be lost
        killed = tmp_path / "killed.zarr"
        outcome: dict[str, object] = {}

        def run() -> None:
            try:
                outcome["store"] = palmc.simulate(experiment, killed, scheduler=cluster.address, seeds_per_batch=1,
                                                  engine="numpy", progress=False)
            except BaseException as err:  # noqa: BLE001 - re-raised in the test thread below
                outcome["error"] = err

        thread = threading.Thread(target=run)
        thread.start()
        deadline = time.time() + 60
        while time.time() < deadline and not list((killed / CHECKPOINT_DIR).glob("*.progress.json")):
            time.sleep(0.02)
        os.kill(cluster.worker_pids()[0], signal.SIGKILL)
        thread.join(timeout=300)
        assert "error" not in outcome, outcome.get("error")
        assert (palmc.open(killed).palmc.run_status().values == "complete").all()
        xr.testing.assert_identical(_data(killed), _data(single))
    finally:
        cluster.close()


def test_diverging_runs_are_marked_and_the_rest_complete(tmp_path: Path) -> None:
    # linear cells with a huge forward learning rate blow up within a few steps
    models = "  - {kind: FA}\n  - {kind: FA, name: unstable, overrides: {plasticity: {eta_fw: [1.0e+8, 1.0e+8]}}}"
    exp = write_experiment(tmp_path, task="fw_bw", layers=(2, 3, 2), seeds=(11, 12), models=models, epochs=20,
                           every=1, variables="WPP, uP", activation="linear")
    with pytest.raises(RunFailures) as info:
        palmc.simulate(exp, workers=1, engine="numpy", progress=False)
    message = str(info.value)
    assert "seed 11, model unstable: diverged" in message and "seed 12, model unstable" in message
    ds = palmc.open(tmp_path / "exp.zarr")
    status = ds.palmc.run_status()
    assert (status.sel(model="FA").values == "complete").all()
    assert (status.sel(model="unstable").values == "diverged").all()
    step = int(ds["diverged_step"].sel(model="unstable", seed=11))
    assert step > 0
    wpp = ds["WPP"].sel(model="unstable", seed=11, layer=1, neuron=0, pre=0)
    assert np.isfinite(wpp.sel(time=wpp["step"] < step)).all()
    assert np.isfinite(ds["WPP"].sel(model="FA")).sum() > 0


def test_store_laid_out_aside_reports_its_errors_and_this_process(experiment: Path, tmp_path: Path) -> None:
    """With a cluster to start, the store is laid out in a forked process: its errors still reach the caller
    (before any task runs), and the store names this process as the one running it."""
    from palmc.store.writer import StoreError

    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot create the store"):
        palmc.simulate(experiment, blocker / "x.zarr", workers=2, seeds_per_batch=1, progress=False)
    assert blocker.read_text() == "not a directory"
    store = palmc.simulate(experiment, tmp_path / "two.zarr", workers=2, seeds_per_batch=1, progress=False)
    attrs = palmc.open(store).attrs
    assert attrs["pid"] == os.getpid() and attrs["status"] == "complete"


def test_the_kernel_a_plan_needs(experiment: Path, tmp_path: Path) -> None:
    """Only the kernel layouts a plan's networks use are loaded for it (in this process, before its batches)."""
    from palmc.plan import make_plan
    from palmc.engine.compiled import driver
    from palmc.kernel import kernel_layouts, load_kernel
    from palmc.schema import load_experiment

    exp = load_experiment(experiment)
    assert kernel_layouts(make_plan(exp, engine="compiled", workers=1)) == {"lanes"}  # layers of 4 at most
    wide = load_experiment(write_experiment(tmp_path, layers=(3, 9, 2)))
    plan = make_plan(wide, engine="compiled", workers=1)
    assert kernel_layouts(plan) == {"neurons"}
    load_kernel(plan)
    assert driver.loaded(kernel_layouts(plan))
    assert kernel_layouts(make_plan(exp, engine="numpy", workers=1)) == set()  # nothing to load for NumPy


def test_a_run_asks_about_the_kernel_once(experiment: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before its batches, a run works out the kernel layouts its plan needs once and asks the driver once whether
    they are loaded (it used to ask three times, working the layouts out each time)."""
    import palmc.kernel
    from palmc.engine.compiled import driver

    asked: list[str] = []
    layouts, loaded = palmc.kernel.kernel_layouts, driver.loaded
    monkeypatch.setattr(palmc.kernel, "kernel_layouts", lambda plan: asked.append("layouts") or layouts(plan))
    monkeypatch.setattr(driver, "loaded", lambda names: asked.append("loaded") or loaded(names))
    palmc.simulate(experiment, tmp_path / "k.zarr", workers=1, engine="compiled", progress=False)
    assert asked == ["layouts", "loaded"]
