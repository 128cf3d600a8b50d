"""The public Python API: load an experiment, simulate it into a store, open and describe stores."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import xarray as xr

from palmc.distributed import (DEFAULT_CONNECT_TIMEOUT, SCHEDULER_ENV, SchedulerError, active_client, default_workers,
                               execute, read_progress_files)
from palmc.plan import make_plan
from palmc.store.integrity import summarise, verify
from palmc.store.layout import decode_run_status, load_small_coords
from palmc.store.lease import pid_alive, read_owner
from palmc.store.location import StoreLocation
from palmc.store.output import Output, RunFailures, check_fits_memory  # noqa: F401 - part of the API
from palmc.store.ownership import require_palmc_store
from palmc.store.writer import StoreError

if TYPE_CHECKING:  # pragma: no cover
    from dask.distributed import Client


def load_experiment(path: str | Path):
    """Read and validate an experiment YAML file (raises :class:`palmc.schema.ExperimentError`)."""
    from palmc.schema import load_experiment as _load

    return _load(path)


def _as_experiment(experiment):
    if isinstance(experiment, (str, Path)):
        return load_experiment(experiment)
    return experiment


def _check_run_options(overwrite: bool, resume: bool, seeds_per_batch: int | None, workers: int | None,
                       connect_timeout: float | None) -> None:
    if overwrite and resume:
        raise StoreError("--overwrite and --resume exclude each other: --resume continues the store, --overwrite "
                         "replaces it; pass one of them")
    for option, value in (("--seeds-per-batch", seeds_per_batch), ("--workers", workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise StoreError(f"{option} expects a whole number of at least 1, got {value!r}")
    if connect_timeout is not None and not connect_timeout > 0:
        raise StoreError(f"--connect-timeout expects a number of seconds above 0, got {connect_timeout!r}")


def scheduler_address(given: "str | Client | object | None", compute: object) -> "str | Client | object | None":
    """The scheduler to use (``given``, else ``$PALMC_SCHEDULER``, else compute.scheduler), checked to be an
    address; :class:`SchedulerError` naming where a bad one came from. A ``Client`` or cluster object given is
    returned as it is."""
    from palmc.schema.experiment import scheduler_address_problem

    if given is not None and not isinstance(given, str):
        return given
    for source, value in (("--scheduler", given), (f"${SCHEDULER_ENV}", os.environ.get(SCHEDULER_ENV)),
                          ("compute.scheduler", getattr(compute, "scheduler", None))):
        if value:
            problem = scheduler_address_problem(value)
            if problem:
                raise SchedulerError(f"{source}: {problem}")
            return value
    return None


def simulate(experiment, store: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
             engine: str | None = None, progress: bool = True, seeds_per_batch: int | None = None,
             scheduler: "str | Client | object | None" = None, workers: int | None = None,
             connect_timeout: float | None = None, log: Callable[[str], None] | None = None) -> Path | str:
    """Run every (seed, model) of ``experiment`` and write the recordings to the Zarr ``store``.

    ``store`` (a local path or an fsspec URL such as ``s3://bucket/run.zarr``) defaults to the experiment's
    ``output.store``; returns the store's local Path, or its URL. Batches of runs are spread over a Dask cluster:
    ``scheduler`` (a ``Client``, a cluster such as ``LocalCluster`` or a dask-jobqueue one, or a scheduler
    address reached within ``connect_timeout`` seconds), ``$PALMC_SCHEDULER`` or the experiment's
    ``compute.scheduler``; else the active client of this process (a notebook's ``Client()``) unless ``workers``
    is given; else a LocalCluster of ``workers`` single-threaded worker processes, by default one per core, forked
    from this process on Linux. A plan of a single batch, or ``workers=1``, runs in-process.
    The store is streamed (memory stays bounded whatever the run length) and ``resume=True`` continues an
    interrupted store bit-exactly, re-running batches whose data were found missing or damaged. One process
    writes a store at a time (a lease in the store; ``palmc.store.lease``); ``overwrite`` replaces only a palmc
    store or an empty directory. ``log`` receives notes (a stale lease taken over, batches repaired). Raises
    :class:`RunFailures` when runs failed or diverged (the store is complete for all the others).
    """
    experiment = _as_experiment(experiment)
    _check_run_options(overwrite, resume, seeds_per_batch, workers, connect_timeout)
    compute = getattr(experiment, "compute", None)
    scheduler = scheduler_address(scheduler, compute)
    timeout = connect_timeout or getattr(compute, "connect_timeout", None) or DEFAULT_CONNECT_TIMEOUT
    workers = workers or getattr(compute, "workers", None)
    # a notebook's Client() is the user's cluster: used rather than a new one, unless workers were asked for
    use_active = workers is None and scheduler is None and active_client() is not None
    n_workers = workers or default_workers()
    output = Output.open(store if store is not None else experiment.output.store, overwrite=overwrite,
                         resume=resume, engine=engine, seeds_per_batch=seeds_per_batch, note=log)
    plan = make_plan(experiment, workers=n_workers, **output.plan_settings(engine, seeds_per_batch))
    execute(plan, output, scheduler=scheduler, workers=n_workers, progress=progress, use_active=use_active,
            connect_timeout=timeout, say=_say)
    return output.address


def _say(message: str) -> None:
    """A line for the user on stderr, beside the progress bar (which it does not break)."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def open(store: str | Path) -> xr.Dataset:  # noqa: A001 - mirrors xr.open_zarr
    """Open a store (local path or fsspec URL): data variables lazily (dask-backed), the small coordinates (phase,
    epoch, step, ...) in memory."""
    return load_small_coords(xr.open_zarr(str(StoreLocation(store)), consolidated=False))


def store_status(attrs: dict, store: StoreLocation | None = None) -> str:
    """``complete``, ``running`` or ``interrupted`` (a 'running' store whose process is gone, or whose lease is
    stale, is interrupted)."""
    status = attrs.get("status", "unknown")
    if status == "running" and attrs.get("host") == socket.gethostname() and "pid" in attrs:
        if not pid_alive(int(attrs["pid"])):
            return "interrupted"
    if status == "running" and store is not None:
        owner = read_owner(store)
        if owner is None or owner.gone_reason() is not None:
            return "interrupted"
    return status


def _progress_line(path: StoreLocation, ds: xr.Dataset) -> str:
    per_run = int(ds.attrs.get("steps_total", 0))
    total = int(ds.attrs.get("run_steps_total", per_run * ds.sizes["seed"] * ds.sizes["model"]))
    done = total if ds.attrs.get("status") == "complete" else read_progress_files(path)
    if "variant" in ds.dims:
        steps = sorted({int(x) for x in ds["steps_total"].values})
        per_run = " to ".join(str(x) for x in steps[::max(len(steps) - 1, 1)])
    return f"{done} / {total} run-steps ({100 * done / max(total, 1):.1f} %), {per_run} steps per run"


def _run_counts(names: np.ndarray) -> str:
    """How many runs are pending, complete, diverged or failed (``names``: the decoded ``run_status``)."""
    counts = dict(zip(*np.unique(names, return_counts=True)))
    return ", ".join(f"{int(counts[name])} {name}" for name in sorted(counts))


def _variant_lines(ds: xr.Dataset) -> list[str]:
    """The variants of a sweep store: listed if few, else summarised (swept fields, their values, a few labels)."""
    from palmc.schema.sweep import LISTED_VARIANTS, summarise_labels, summarise_values

    labels = [str(x) for x in ds["variant_label"].values]
    if len(labels) <= LISTED_VARIANTS:
        return [f"variants     {summarise_labels(labels)}"]
    swept = [name for name, coord in ds["variant"].coords.items()
             if str(coord.attrs.get("long_name", "")).startswith("swept field ")]
    lines = [f"variants     {len(labels)}, e.g. {summarise_labels(labels)}"]
    for name in swept:
        values = [json.loads(x) if isinstance(x, str) else x.item() for x in ds[name].values]
        lines.append(f"  swept      {summarise_values(name, values)}")
    return lines


def info(store: str | Path) -> str:
    """A human summary of a store (the integrity check here looks at presence and sizes; ``verify`` reads the
    data too)."""
    path = StoreLocation(store)
    require_palmc_store(path)
    try:
        ds = open(path)
    except (OSError, ValueError, KeyError) as err:
        raise StoreError(f"{path} is a palmc store that cannot be read ({type(err).__name__}: {err})") from None
    attrs = ds.attrs
    versions = json.loads(attrs.get("versions", "{}"))
    status = store_status(attrs, path)
    owner = read_owner(path)
    run_names = (decode_run_status(ds["run_status"].values, ds["run_status"].attrs).ravel()
                 if "run_status" in ds.data_vars else None)
    lines = [
        f"store        {path}",
        f"experiment   {attrs.get('name', '?')}  (task {attrs.get('task', '?')})",
        f"status       {status}{_outcomes_text(run_names)}: {_progress_line(path, ds)}",
        *([f"runs         {_run_counts(run_names)}"] if run_names is not None else []),
        *([f"writer       {owner.describe()}" + (f" - gone: {owner.gone_reason()}" if owner.gone_reason() else "")]
          if owner is not None else []),
        f"models       {', '.join(map(str, ds['model'].values))}",
        f"seeds        {', '.join(map(str, ds['seed'].values))}",
        *(_variant_lines(ds) if "variant" in ds.dims else []),
        "dims         " + ", ".join(f"{k}={v}" for k, v in ds.sizes.items()),
        f"size         {path.size() / 2**20:.1f} MiB on disk",
        f"palmc        {attrs.get('palmc_version', '?')}  (numpy {versions.get('numpy', '?')}, "
        f"xarray {versions.get('xarray', '?')}, zarr {versions.get('zarr', '?')})",
        f"created      {attrs.get('created', '?')} on {attrs.get('host', '?')}; ended {attrs.get('ended', '-')}",
        "variables",
    ]
    for name, var in ds.data_vars.items():
        lines.append(f"  {name:<12} {var.attrs.get('units', ''):<8} {var.attrs.get('symbol', ''):<14} "
                     f"({', '.join(var.dims)})  {var.attrs.get('long_name', '')}")
    damage = verify(path, checksums=False)
    if damage:
        lines.append("integrity    DAMAGED: " + summarise(damage) + "\n             (palmc simulate --resume "
                     "re-runs these batches; palmc verify checks the data too)")
        raise StoreDamaged("\n".join(lines))
    return "\n".join(lines)


def _outcomes_text(values: np.ndarray | None) -> str:
    """', 2 of 8 runs diverged' (and failed) when some runs did not complete (``values``: the decoded
    ``run_status``, None without one)."""
    if values is None:
        return ""
    parts = [f"{int((values == kind).sum())} of {values.size} runs {kind}" for kind in ("diverged", "failed")
             if (values == kind).any()]
    return (", " + ", ".join(parts)) if parts else ""


class StoreDamaged(Exception):
    """A store's chunks or checkpoints are missing or damaged; the message is the full report."""


def verify_store(store: str | Path) -> str:
    """Check every chunk each batch recorded (presence, size, checksum) and every checkpoint; returns a report,
    or raises :class:`StoreDamaged` with it."""
    path = StoreLocation(store)
    require_palmc_store(path)
    damage = verify(path, checksums=True)
    if damage:
        raise StoreDamaged(f"{path}: " + summarise(damage) + "\n(palmc simulate --resume re-runs these batches)")
    return f"{path}: every recorded chunk and checkpoint is intact"
