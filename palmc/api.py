"""The public Python API: load an experiment, simulate it into a store, open and describe stores."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import xarray as xr

from palmc.plan import Plan, make_plan
from palmc.runner import run_batch
from palmc.store.writer import StoreError, _now, create_store, read_attrs, update_attrs


def load_experiment(path: str | Path):
    """Read and validate an experiment YAML file (raises :class:`palmc.schema.ExperimentError`)."""
    from palmc.schema import load_experiment as _load

    return _load(path)


def _as_experiment(experiment):
    if isinstance(experiment, (str, Path)):
        return load_experiment(experiment)
    return experiment


def _progress_bar(total: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, disable=not enabled, desc="seed-steps",
                smoothing=0.1, dynamic_ncols=True)


def prepare_store(plan: Plan, store: Path, overwrite: bool, resume: bool) -> bool:
    """Create the store, or check that an existing one can be resumed. Returns True when resuming."""
    if resume and store.exists():
        try:
            attrs = read_attrs(store)
        except Exception as err:  # noqa: BLE001 - any unreadable store is refused the same way
            raise StoreError(f"{store} is not a palmc store that can be resumed ({err})") from err
        if attrs.get("experiment_sha256") != plan.experiment_sha256:
            raise StoreError(
                f"{store} was written by a different experiment ({attrs.get('name', '?')!r}); "
                "resume it with the experiment file that created it, or choose another output"
            )
        update_attrs(store, status="running", pid=os.getpid(), host=socket.gethostname(), resumed=_now())
        return True
    create_store(plan, store, overwrite=overwrite)
    update_attrs(store, pid=os.getpid())
    return False


def simulate(experiment, store: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
             engine: str | None = None, progress: bool = True, seeds_per_batch: int | None = None,
             scheduler: str | None = None, workers: int | None = None) -> Path:
    """Run every (seed, model) of ``experiment`` and write the recordings to the Zarr ``store``.

    ``store`` defaults to the experiment's ``output.store``. The store is streamed: memory stays bounded
    whatever the run length, and ``resume=True`` continues an interrupted store bit-exactly.
    """
    experiment = _as_experiment(experiment)
    plan = make_plan(experiment, seeds_per_batch=seeds_per_batch, engine=engine)
    store = Path(store if store is not None else experiment.output.store)
    resuming = prepare_store(plan, store, overwrite, resume)
    total = plan.protocol.total_steps * plan.n_runs
    batch_steps: dict[str, int] = {}
    try:
        with _progress_bar(total, progress) as bar:
            for batch in plan.batches:
                def on_progress(n: int, label: str = batch.label()) -> None:
                    bar.update(n)
                run_batch(store, plan, batch, resume=resuming, on_progress=on_progress)
                batch_steps[batch.label()] = plan.protocol.total_steps
                update_attrs(store, steps_done=min(batch_steps.get(b.label(), 0) for b in plan.batches),
                             batches_done=json.dumps(sorted(batch_steps)))
    except BaseException:
        update_attrs(store, status="interrupted", ended=_now())
        raise
    update_attrs(store, status="complete", steps_done=plan.protocol.total_steps, ended=_now())
    return store


def open(store: str | Path) -> xr.Dataset:  # noqa: A001 - mirrors xr.open_zarr
    """Open a store lazily (dask-backed variables)."""
    return xr.open_zarr(str(store), consolidated=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def store_status(attrs: dict) -> str:
    """``complete``, ``running`` or ``interrupted`` (a 'running' store whose process is gone is interrupted)."""
    status = attrs.get("status", "unknown")
    if status == "running" and attrs.get("host") == socket.gethostname() and "pid" in attrs:
        if not _pid_alive(int(attrs["pid"])):
            return "interrupted"
    return status


def _size_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def info(store: str | Path) -> str:
    """A human summary of a store."""
    path = Path(store)
    if not path.exists():
        raise StoreError(f"{path} does not exist")
    ds = open(path)
    attrs = ds.attrs
    versions = json.loads(attrs.get("versions", "{}"))
    lines = [
        f"store        {path}",
        f"experiment   {attrs.get('name', '?')}  (task {attrs.get('task', '?')})",
        f"status       {store_status(attrs)}: {attrs.get('steps_done', '?')} / {attrs.get('steps_total', '?')} steps per run",
        f"models       {', '.join(map(str, ds['model'].values))}",
        f"seeds        {', '.join(map(str, ds['seed'].values))}",
        "dims         " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()),
        f"size         {_size_on_disk(path) / 2**20:.1f} MiB on disk",
        f"palmc        {attrs.get('palmc_version', '?')}  (numpy {versions.get('numpy', '?')}, "
        f"xarray {versions.get('xarray', '?')}, zarr {versions.get('zarr', '?')})",
        f"created      {attrs.get('created', '?')} on {attrs.get('host', '?')}; ended {attrs.get('ended', '-')}",
        "variables",
    ]
    for name, var in ds.data_vars.items():
        lines.append(f"  {name:<12} {var.attrs.get('units', ''):<8} {var.attrs.get('symbol', ''):<14} "
                     f"({', '.join(var.dims)})  {var.attrs.get('long_name', '')}")
    return "\n".join(lines)
