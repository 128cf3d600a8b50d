"""The public Python API: load an experiment, simulate it into a store, open and describe stores."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import xarray as xr

from palmc.distributed import (SCHEDULER_ENV, BatchFailure, batch_task, can_fork, cluster_client, default_workers,
                               read_progress_files, run_on_cluster)
from palmc.plan import BatchSpec, Plan, make_plan
from palmc.runner import BatchResult, kernel_loaded, load_kernel
from palmc.store.location import StoreLocation
from palmc.store.writer import (StoreError, _now, create_store, read_attrs, refuse_existing, update_attrs,
                                write_run_status)

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


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, disable=not enabled, desc="seed-steps",
                smoothing=0.1, dynamic_ncols=True)


def prepare_store(plan: Plan, store: StoreLocation, overwrite: bool, resume: bool, pid: int | None = None) -> None:
    """Create the store, or check that an existing one can be resumed; ``pid`` (default: this process) is the
    process recorded as running it."""
    pid = os.getpid() if pid is None else pid
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
        update_attrs(store, status="running", pid=pid, host=socket.gethostname(), resumed=_now())
        return
    create_store(plan, store, overwrite=overwrite)
    update_attrs(store, pid=pid)


@contextmanager
def _store_prepared_aside(plan: Plan, store: StoreLocation, overwrite: bool, resume: bool, aside: bool,
                          ) -> Iterator[Callable[[], None]]:
    """Lay out the store (``prepare_store``) in a process forked from this one if ``aside``, while this one gets
    ready to run; yields the function that waits for it (and raises its error here). Leaving the block waits
    too, so no layout is left half-done behind an error.

    Getting ready (loading the compiled kernel; importing Dask and starting a cluster) keeps one core busy for
    ~0.6-1.1 s, while the layout (~0.3-0.5 s of CPU: xarray's template, Zarr's metadata) can use another. Done
    after it instead, the layout delayed the first batch by as much. Without fork (not Linux), or when not
    ``aside``, the store is laid out here, when waited for.
    """
    if not (aside and can_fork()):
        yield lambda: prepare_store(plan, store, overwrite, resume)
        return
    # Ctrl-C is this process's to handle: the layout (under a second) is finished, and the store marked as
    # interrupted, rather than a traceback printed from the forked process
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                             initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        future = pool.submit(prepare_store, plan, store, overwrite, resume, os.getpid())

        def wait() -> None:
            try:
                future.result()
            finally:
                pool.shutdown()  # the forked process is not kept for the run

        yield wait


def _stored_attrs(store: StoreLocation) -> dict:
    try:
        return read_attrs(store)
    except Exception:  # noqa: BLE001 - an unreadable store is reported by prepare_store
        return {}


def simulate(experiment, store: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
             engine: str | None = None, progress: bool = True, seeds_per_batch: int | None = None,
             scheduler: str | None = None, workers: int | None = None) -> Path | str:
    """Run every (seed, model) of ``experiment`` and write the recordings to the Zarr ``store``.

    ``store`` (a local path or an fsspec URL such as ``s3://bucket/run.zarr``) defaults to the experiment's
    ``output.store``; returns the store's local Path, or its URL. Batches of runs are spread over a Dask cluster
    (``scheduler`` address, ``$PALMC_SCHEDULER`` or the experiment's ``compute.scheduler``; else a LocalCluster
    of ``workers`` single-threaded worker processes, by default one per core, forked from this process on Linux);
    a plan of a single batch, or ``workers=1``, runs in-process.
    The store is streamed (memory stays bounded whatever the run length) and ``resume=True`` continues an
    interrupted store bit-exactly. Raises :class:`RunFailures` when runs failed or diverged (the store is
    complete for all the others).
    """
    experiment = _as_experiment(experiment)
    compute = getattr(experiment, "compute", None)
    scheduler = scheduler or os.environ.get(SCHEDULER_ENV) or getattr(compute, "scheduler", None)
    workers = workers or getattr(compute, "workers", None)
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
    plan = make_plan(experiment, seeds_per_batch=seeds_per_batch, engine=engine, workers=n_workers,
                     variants_per_batch=variants_per_batch)
    use_cluster = bool(scheduler) or (n_workers > 1 and len(plan.batches) > 1)
    if not (resume and store.exists()):
        refuse_existing(store, overwrite)  # the common mistake fails before any cluster starts
    # the store is laid out aside while this process starts the cluster or loads the kernel (if either is to do)
    aside = store.shared and (use_cluster or not kernel_loaded(plan))
    with _store_prepared_aside(plan, store, overwrite, resume, aside) as store_ready, \
            cluster_client(plan, scheduler, n_workers) if use_cluster else nullcontext() as client:
        if client is None:
            load_kernel(plan)
        store_ready()
        results, failures = _run(plan, store, client, progress)
    status, diverged_step = _run_outcomes(plan, results, failures)
    write_run_status(store, status, diverged_step)
    update_attrs(store, status="complete" if not failures else "failed",
                 steps_done=plan.protocol.total_steps if not failures else 0, ended=_now())
    problems = _describe_problems(plan, status, diverged_step, failures)
    if problems:
        raise RunFailures(str(store), problems)
    return store.path if store.is_local else store.url


def _run(plan: Plan, store: StoreLocation, client: "Client | None", progress: bool,
         ) -> tuple[list[BatchResult], list[BatchFailure]]:
    """Run every batch, on the cluster of ``client`` or one after the other in this process, with a progress bar
    (the store is marked interrupted if this is stopped)."""
    results: list[BatchResult] = []
    failures: list[BatchFailure] = []
    try:
        with _progress_bar(plan.total_run_steps, progress) as bar:
            runs_done = 0

            def on_batch_done(batch: BatchSpec) -> None:
                nonlocal runs_done
                runs_done += batch.n_runs
                bar.set_postfix_str(f"runs {runs_done}/{plan.n_runs} done", refresh=True)

            if client is not None:
                def on_dashboard(link: str) -> None:
                    if progress:
                        bar.write(f"Dask dashboard: {link}")
                results, failures = run_on_cluster(client, plan, str(store), bar.update, on_dashboard,
                                                   on_batch_done=on_batch_done)
            else:
                for batch in plan.batches:
                    results.append(batch_task(str(store), plan, batch, report=bar.update))
                    on_batch_done(batch)
    except BaseException:
        update_attrs(store, status="interrupted", ended=_now())
        raise
    return results, failures


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
    from palmc.schema.sweep import label

    if not plan.has_variants:
        return ""
    if variants.stop - variants.start == 1:
        return f", variant {variants.start} ({label(plan.variants[variants.start].values)})"
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
    """Open a store (local path or fsspec URL) lazily (dask-backed variables)."""
    return xr.open_zarr(str(StoreLocation(store)), consolidated=False)


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
