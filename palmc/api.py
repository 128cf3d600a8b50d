"""The public Python API: load an experiment, simulate it into a store, open and describe stores."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from palmc.distributed import SCHEDULER_ENV, BatchFailure, active_client, default_workers, execute, read_progress_files
from palmc.plan import Plan, make_plan
from palmc.runner import BatchResult, kernel_cached, kernel_loaded, load_kernel
from palmc.store.layout import decode_run_status, load_small_coords
from palmc.store.location import StoreLocation
from palmc.store.writer import StoreError, finish_store, read_attrs, refuse_existing

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


def _stored_attrs(store: StoreLocation) -> dict:
    try:
        return read_attrs(store)
    except Exception:  # noqa: BLE001 - an unreadable store is reported by prepare_store
        return {}


def simulate(experiment, store: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
             engine: str | None = None, progress: bool = True, seeds_per_batch: int | None = None,
             scheduler: "str | Client | object | None" = None, workers: int | None = None) -> Path | str:
    """Run every (seed, model) of ``experiment`` and write the recordings to the Zarr ``store``.

    ``store`` (a local path or an fsspec URL such as ``s3://bucket/run.zarr``) defaults to the experiment's
    ``output.store``; returns the store's local Path, or its URL. Batches of runs are spread over a Dask cluster:
    ``scheduler`` (a ``Client``, a cluster such as ``LocalCluster`` or a dask-jobqueue one, or a scheduler
    address), ``$PALMC_SCHEDULER`` or the experiment's ``compute.scheduler``; else the active client of this
    process (a notebook's ``Client()``) unless ``workers`` is given; else a LocalCluster of ``workers``
    single-threaded worker processes, by default one per core, forked from this process on Linux. A plan of a
    single batch, or ``workers=1``, runs in-process.
    The store is streamed (memory stays bounded whatever the run length) and ``resume=True`` continues an
    interrupted store bit-exactly. Raises :class:`RunFailures` when runs failed or diverged (the store is
    complete for all the others).
    """
    experiment = _as_experiment(experiment)
    compute = getattr(experiment, "compute", None)
    if scheduler is None or scheduler == "":
        scheduler = os.environ.get(SCHEDULER_ENV) or getattr(compute, "scheduler", None) or None
    workers = workers or getattr(compute, "workers", None)
    # a notebook's Client() is the user's cluster: used rather than a new one, unless workers were asked for
    use_active = workers is None and scheduler is None and active_client() is not None
    n_workers = workers or default_workers()
    store = StoreLocation(store if store is not None else experiment.output.store)
    if resume and store.exists():
        # continue with the engine and batches that wrote the store: checkpoints are per batch, and the same
        # engine makes the resumed records match an uninterrupted run to the last bit
        stored = _stored_attrs(store)
        engine = engine or stored.get("engine")
        seeds_per_batch = stored.get("seeds_per_batch", seeds_per_batch)
        variants_per_batch = stored.get("variants_per_batch", 1)  # (stores from before sweeps' batches had 1)
    else:
        variants_per_batch = None
        refuse_existing(store, overwrite)  # the common mistake fails before any cluster starts
    plan = make_plan(experiment, seeds_per_batch=seeds_per_batch, engine=engine, workers=n_workers,
                     variants_per_batch=variants_per_batch)
    results, failures = execute(plan, store, overwrite=overwrite, resume=resume, scheduler=scheduler,
                                workers=n_workers, progress=progress, use_active=use_active,
                                load=lambda plan: load_kernel_visibly(plan, progress), say=_say)
    status, diverged_step = _run_outcomes(plan, results, failures)
    problems = _describe_problems(plan, status, diverged_step, failures)
    finish_store(store, status, diverged_step, plan.protocol.total_steps)
    if problems:
        raise RunFailures(str(store), problems)
    return store.path if store.is_local else store.url


FIRST_RUN_MESSAGE = "compiling the simulation kernel, once per machine (~1 min; numba caches it on disk)"
SPINNER = "|/-\\"
QUIET_LOAD_SECONDS = 1.0  # a kernel read from numba's cache loads in about this time: say nothing before


def load_kernel_visibly(plan: Plan, progress: bool = True) -> None:
    """Load the compiled kernel for ``plan`` into this process (``runner.load_kernel``), telling the user when that
    means compiling it: at once if numba's cache lacks it (the first run on a machine), else if loading takes more
    than a second; with a spinner and the time spent while it compiles (one line without ``progress``)."""
    if kernel_loaded(plan):
        return
    import threading
    import time

    from tqdm import tqdm

    failure: list[BaseException] = []

    def load() -> None:
        try:
            load_kernel(plan)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(err)

    started = time.perf_counter()
    cached = kernel_cached(plan)  # before the load starts: both would read numba's cache
    worker = threading.Thread(target=load, name="palmc-kernel-load", daemon=True)
    worker.start()
    if cached:
        worker.join(QUIET_LOAD_SECONDS)
    if worker.is_alive():
        if not progress:
            _say(f"{FIRST_RUN_MESSAGE} ...")
        with tqdm(desc=f"{FIRST_RUN_MESSAGE} {SPINNER[0]}", bar_format="{desc} {elapsed}", disable=not progress,
                  file=sys.stderr) as spinner:
            ticks = 0
            while worker.is_alive():
                worker.join(0.25)
                ticks += 1
                spinner.set_description_str(f"{FIRST_RUN_MESSAGE} {SPINNER[ticks % len(SPINNER)]}", refresh=True)
            spinner.set_description_str(f"{FIRST_RUN_MESSAGE}: done", refresh=True)
        seconds = time.perf_counter() - started
        _say(f"loaded the kernel in {seconds:.0f} s" if cached else
             f"compiled the kernel in {seconds:.0f} s; later runs load it from the cache")
    worker.join()
    if failure:
        raise failure[0]


def _say(message: str) -> None:
    """A line for the user on stderr, beside the progress bar (which it does not break)."""
    from tqdm import tqdm

    tqdm.write(message, file=sys.stderr)


def _run_outcomes(plan: Plan, results: list[BatchResult], failures: list[BatchFailure]) -> tuple[np.ndarray, np.ndarray]:
    """Per-run (seed, model, variant) status and divergence step from the batches' results.

    The arrays have a variant axis only when the store has one.
    """
    status = np.full((len(plan.seeds), len(plan.model_names), len(plan.variants)), "pending", dtype=object)
    diverged_step = np.full(status.shape, -1, dtype=np.int64)
    by_index = {b.index: b for b in plan.batches}
    for result in results:
        batch = by_index[result.batch]
        status[batch.seeds, batch.models, batch.variants] = "complete"
        for run, step in result.diverged.items():
            s, m, v = (start + offset for start, offset in zip(
                (batch.seeds.start, batch.models.start, batch.variants.start), np.unravel_index(run, batch.shape)))
            status[s, m, v], diverged_step[s, m, v] = "diverged", step
    for failure in failures:
        status[failure.batch.seeds, failure.batch.models, failure.batch.variants] = "failed"
    if not plan.has_variants:
        return status[..., 0], diverged_step[..., 0]
    return status, diverged_step


def _variant_text(plan: Plan, variants: slice) -> str:
    if not plan.has_variants:
        return ""
    if variants.stop - variants.start == 1:
        return f", variant {variants.start} ({plan.variants[variants.start].label})"
    return f", variants {variants.start}-{variants.stop - 1}"


def _describe_problems(plan: Plan, status: np.ndarray, diverged_step: np.ndarray,
                       failures: list[BatchFailure]) -> list[str]:
    problems = []
    for (s, m, *v), value in np.ndenumerate(status):
        if value == "diverged":
            variants = slice(v[0], v[0] + 1) if v else slice(0, 1)
            problems.append(f"seed {plan.seeds[s]}, model {plan.model_names[m]}{_variant_text(plan, variants)}: "
                            f"diverged (non-finite state) at step {diverged_step[(s, m, *v)]}")
    for failure in failures:
        seeds = ", ".join(str(x) for x in plan.seeds[failure.batch.seeds])
        models = ", ".join(plan.model_names[failure.batch.models])
        problems.append(f"seeds {seeds}, models {models}{_variant_text(plan, failure.batch.variants)}: "
                        f"failed: {failure.error}")
    return problems


class RunFailures(Exception):
    """Some runs failed or diverged; the store holds every run, and says which ones in ``run_status``."""

    def __init__(self, store: str, problems: list[str]) -> None:
        self.store, self.problems = store, problems
        super().__init__(f"{len(problems)} run(s) did not complete in {store}:\n  " + "\n  ".join(problems))


def open(store: str | Path) -> xr.Dataset:  # noqa: A001 - mirrors xr.open_zarr
    """Open a store (local path or fsspec URL): data variables lazily (dask-backed), the small coordinates (phase,
    epoch, step, ...) in memory."""
    return load_small_coords(xr.open_zarr(str(StoreLocation(store)), consolidated=False))


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


def _progress_line(path: StoreLocation, ds: xr.Dataset) -> str:
    per_run = int(ds.attrs.get("steps_total", 0))
    total = int(ds.attrs.get("run_steps_total", per_run * ds.sizes["seed"] * ds.sizes["model"]))
    done = total if ds.attrs.get("status") == "complete" else read_progress_files(path)
    if "variant" in ds.dims:
        steps = sorted({int(x) for x in ds["steps_total"].values})
        per_run = " to ".join(str(x) for x in steps[::max(len(steps) - 1, 1)])
    return f"{done} / {total} run-steps ({100 * done / max(total, 1):.1f} %), {per_run} steps per run"


def _run_counts(ds: xr.Dataset) -> str:
    """How many runs are pending, complete, diverged or failed (from ``run_status``)."""
    names = list(decode_run_status(ds["run_status"].values, ds["run_status"].attrs).ravel())
    return ", ".join(f"{names.count(name)} {name}" for name in sorted(set(names)))
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
    """A human summary of a store."""
    path = StoreLocation(store)
    if not path.exists():
        raise StoreError(f"{path} does not exist")
    ds = open(path)
    attrs = ds.attrs
    versions = json.loads(attrs.get("versions", "{}"))
    lines = [
        f"store        {path}",
        f"experiment   {attrs.get('name', '?')}  (task {attrs.get('task', '?')})",
        f"status       {store_status(attrs)}: {_progress_line(path, ds)}",
        *([f"runs         {_run_counts(ds)}"] if "run_status" in ds.data_vars else []),
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
    return "\n".join(lines)
