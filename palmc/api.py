"""The public Python API: load an experiment, simulate it into a store, open and describe stores."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
from concurrent.futures import ProcessPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import xarray as xr

from palmc.distributed import (DEFAULT_CONNECT_TIMEOUT, SCHEDULER_ENV, BatchFailure, SchedulerError, batch_task,
                               can_fork, cluster_client, default_workers, read_progress_files, run_on_cluster)
from palmc.plan import BatchSpec, Plan, make_plan
from palmc.runner import BatchResult, kernel_loaded, load_kernel
from palmc.store.integrity import reset_batch, summarise, verify
from palmc.store.lease import LEASE_FILE, Lease, pid_alive, read_owner
from palmc.store.location import StoreLocation
from palmc.store.ownership import (check_output_path, check_replaceable, remove_stale_staging,
                                   require_palmc_store)
from palmc.store.writer import StoreError, _now, create_store, refuse_existing, update_attrs, write_run_status

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


def prepare_store(plan: Plan, store: StoreLocation, overwrite: bool, resume: bool, pid: int | None = None,
                  lease: tuple[str, bytes] | None = None) -> None:
    """Create the store, or mark an existing one (checked by ``simulate``) as running again; ``pid`` (default:
    this process) is the process recorded as running it, ``lease`` the writer's lease (``create_store``)."""
    pid = os.getpid() if pid is None else pid
    if resume and store.exists():
        update_attrs(store, status="running", pid=pid, host=socket.gethostname(), resumed=_now())
        return
    create_store(plan, store, overwrite=overwrite, lease=lease)
    update_attrs(store, pid=pid)


@contextmanager
def _store_prepared_aside(plan: Plan, store: StoreLocation, overwrite: bool, resume: bool, aside: bool,
                          lease: tuple[str, bytes] | None = None) -> Iterator[Callable[[], None]]:
    """Lay out the store (``prepare_store``) in a process forked from this one if ``aside``, while this one gets
    ready to run; yields the function that waits for it (and raises its error here). Leaving the block waits
    too, so no layout is left half-done behind an error.

    Getting ready (loading the compiled kernel; importing Dask and starting a cluster) keeps one core busy for
    ~0.6-1.1 s, while the layout (~0.3-0.5 s of CPU: xarray's template, Zarr's metadata) can use another. Done
    after it instead, the layout delayed the first batch by as much. Without fork (not Linux), or when not
    ``aside``, the store is laid out here, when waited for.
    """
    if not (aside and can_fork()):
        yield lambda: prepare_store(plan, store, overwrite, resume, lease=lease)
        return
    # Ctrl-C is this process's to handle: the layout (under a second) is finished, and the store marked as
    # interrupted, rather than a traceback printed from the forked process
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                             initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        future = pool.submit(prepare_store, plan, store, overwrite, resume, os.getpid(), lease)

        def wait() -> None:
            try:
                future.result()
            finally:
                pool.shutdown()  # the forked process is not kept for the run

        yield wait


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


def scheduler_address(given: str | None, compute: object) -> str | None:
    """The scheduler to use (``given``, else ``$PALMC_SCHEDULER``, else compute.scheduler), checked to be an
    address; :class:`SchedulerError` naming where a bad one came from."""
    from palmc.schema.experiment import scheduler_address_problem

    for source, value in (("--scheduler", given), (f"${SCHEDULER_ENV}", os.environ.get(SCHEDULER_ENV)),
                          ("compute.scheduler", getattr(compute, "scheduler", None))):
        if value:
            problem = scheduler_address_problem(value)
            if problem:
                raise SchedulerError(f"{source}: {problem}")
            return value
    return None


def _check_resumable(store: StoreLocation, engine: str | None, seeds_per_batch: int | None) -> dict:
    """The attributes of the store to resume, checked to come from palmc and to match these settings (the
    experiment is compared with ``_check_same_experiment``)."""
    try:
        attrs = require_palmc_store(store)
    except StoreError as err:
        raise StoreError(f"{err}; it cannot be resumed") from None
    # checkpoints are per batch, and the same engine makes the resumed records match an uninterrupted run to
    # the last bit: a resumed run keeps both
    for option, asked, stored in (("--engine", engine, attrs.get("engine")),
                                  ("--seeds-per-batch", seeds_per_batch, attrs.get("seeds_per_batch"))):
        if asked is not None and stored is not None and asked != stored:
            raise StoreError(f"{store} was written with {option} {stored}; resuming it with {option} {asked} "
                             f"would change its results: resume with {option} {stored} (or leave it out)")
    return attrs


def _check_same_experiment(store: StoreLocation, attrs: dict, plan: Plan) -> None:
    if attrs.get("experiment_sha256") != plan.experiment_sha256:
        raise StoreError(
            f"{store} was written by a different experiment ({attrs.get('name', '?')!r}); "
            "resume it with the experiment file that created it, or choose another output"
        )


def check_fits_memory(plan: Plan, concurrent_batches: int, local: bool = True) -> None:
    """Refuse a plan whose batches cannot fit this machine's memory (estimated, nothing allocated)."""
    import psutil

    batch = plan.estimated_batch_bytes()
    coordinator = plan.estimated_coordinator_bytes()
    need = coordinator + (batch * concurrent_batches if local else 0)
    available = psutil.virtual_memory().available
    if need > available:
        per = (f"{concurrent_batches} batch(es) at once x {batch / 2**30:.3g} GiB" if local else "")
        raise StoreError(
            f"the run needs about {need / 2**30:.3g} GiB of memory ({per}{', ' if per else ''}"
            f"{coordinator / 2**30:.3g} GiB for the store's time axis of {plan.n_records} records), and this machine "
            f"has {available / 2**30:.3g} GiB available: use fewer seeds per batch (--seeds-per-batch, now "
            f"{plan.seeds_per_batch}), fewer --workers, a smaller recording.chunk_records (now {plan.chunk_records}), "
            "fewer recorded variables, a larger recording.every or a smaller network")


def _repair(store: StoreLocation, log: Callable[[str], None]) -> None:
    """Before resuming: batches whose chunks or checkpoint are missing or damaged run again from their start."""
    damage = verify(store)
    for label in sorted({d.batch for d in damage}):
        problems = "; ".join(str(d).split(": ", 1)[1] for d in damage if d.batch == label)
        log(f"{label} runs again from its start: {problems}")
        reset_batch(store, label)


def simulate(experiment, store: str | Path | None = None, *, overwrite: bool = False, resume: bool = False,
             engine: str | None = None, progress: bool = True, seeds_per_batch: int | None = None,
             scheduler: str | None = None, workers: int | None = None, connect_timeout: float | None = None,
             log: Callable[[str], None] | None = None) -> Path | str:
    """Run every (seed, model) of ``experiment`` and write the recordings to the Zarr ``store``.

    ``store`` (a local path or an fsspec URL such as ``s3://bucket/run.zarr``) defaults to the experiment's
    ``output.store``; returns the store's local Path, or its URL. Batches of runs are spread over a Dask cluster
    (``scheduler`` address, ``$PALMC_SCHEDULER`` or the experiment's ``compute.scheduler``, reached within
    ``connect_timeout`` seconds; else a LocalCluster of ``workers`` single-threaded worker processes, by default
    one per core, forked from this process on Linux); a plan of a single batch, or ``workers=1``, runs in-process.
    The store is streamed (memory stays bounded whatever the run length) and ``resume=True`` continues an
    interrupted store bit-exactly, re-running batches whose data were found missing or damaged. One process
    writes a store at a time (a lease in the store; ``palmc.store.lease``); ``overwrite`` replaces only a palmc
    store or an empty directory. ``log`` receives notes (a stale lease taken over, batches repaired). Raises
    :class:`RunFailures` when runs failed or diverged (the store is complete for all the others).
    """
    experiment = _as_experiment(experiment)
    note = log or (lambda text: None)
    _check_run_options(overwrite, resume, seeds_per_batch, workers, connect_timeout)
    compute = getattr(experiment, "compute", None)
    scheduler = scheduler_address(scheduler, compute)
    timeout = connect_timeout or getattr(compute, "connect_timeout", None) or DEFAULT_CONNECT_TIMEOUT
    workers = workers or getattr(compute, "workers", None)
    n_workers = workers or default_workers()
    target = store if store is not None else experiment.output.store
    store = _location(target)
    check_output_path(store, target)
    resuming = resume and store.exists()
    if resuming:
        attrs = _check_resumable(store, engine, seeds_per_batch)
        engine = engine or attrs.get("engine")
        seeds_per_batch = attrs.get("seeds_per_batch", seeds_per_batch)
    plan = make_plan(experiment, seeds_per_batch=seeds_per_batch, engine=engine, workers=n_workers)
    if resuming:
        _check_same_experiment(store, attrs, plan)
    use_cluster = bool(scheduler) or (n_workers > 1 and len(plan.batches) > 1)
    check_fits_memory(plan, min(n_workers, len(plan.batches)) if use_cluster else 1, local=not scheduler)
    if not resuming:
        refuse_existing(store, overwrite)  # the common mistake fails before any cluster starts
        check_replaceable(store)
    try:
        with ExitStack() as stack:
            # a remote scheduler is reached before anything of the store is touched
            client = stack.enter_context(cluster_client(plan, scheduler, n_workers, timeout)) if scheduler else None
            lease, taken_over = Lease.acquire(store, take_over_stale=resume or overwrite)
            stack.callback(lease.release)
            lease.start()
            if taken_over:
                note(taken_over)
            if not resuming:
                check_replaceable(store)  # what is there now is what the lease covers
            elif not store.exists("zarr.json"):
                raise StoreError(f"{store} disappeared while it was being resumed")
            remove_stale_staging(store)
            if resuming:
                _repair(store, note)
            # the store is laid out aside while this process starts the cluster or loads the kernel (if either
            # is to do)
            aside = store.shared and (use_cluster or not kernel_loaded(plan))
            store_ready = stack.enter_context(_store_prepared_aside(plan, store, overwrite, resuming, aside,
                                                                    (LEASE_FILE, lease.to_bytes())))
            if use_cluster and client is None:
                client = stack.enter_context(cluster_client(plan, None, n_workers))
            if client is None:
                load_kernel(plan)
            store_ready()
            results, failures = _run(plan, store, client, progress)
            status, diverged_step = _run_outcomes(plan, results, failures)
            write_run_status(store, status, diverged_step)
            update_attrs(store, status="complete" if not failures else "failed",
                         steps_done=plan.protocol.total_steps if not failures else 0, ended=_now())
    except OSError as err:
        if err.errno is None:
            raise
        raise StoreError(f"cannot write the store {store}: {err.strerror or err}; the store is marked "
                         "interrupted: fix the cause (e.g. free space) and continue it with --resume") from err
    problems = _describe_problems(plan, status, diverged_step, failures)
    if problems:
        raise RunFailures(str(store), problems)
    return store.path if store.is_local else store.url


def _location(target: object) -> StoreLocation:
    try:
        return StoreLocation(target if isinstance(target, (str, Path, StoreLocation)) else str(target))
    except (ValueError, ImportError) as err:
        raise StoreError(f"cannot use the store address {target!r}: {err}") from None


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
                runs_done += len(plan.runs(batch))
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
        try:
            update_attrs(store, status="interrupted", ended=_now())
        except OSError:  # e.g. the disk is full: the dead pid (or lease) still tells readers it is interrupted
            pass
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
        n_model = batch.models.stop - batch.models.start
        status[batch.seeds, batch.models, batch.variant] = "complete"
        for run, step in result.diverged.items():
            s, m = batch.seeds.start + run // n_model, batch.models.start + run % n_model
            status[s, m, batch.variant], diverged_step[s, m, batch.variant] = "diverged", step
    for failure in failures:
        status[failure.batch.seeds, failure.batch.models, failure.batch.variant] = "failed"
    if not plan.has_variants:
        return status[..., 0], diverged_step[..., 0]
    return status, diverged_step


def _variant_text(plan: Plan, index: int) -> str:
    from palmc.schema.sweep import label

    return f", variant {index} ({label(plan.variants[index].values)})" if plan.has_variants else ""


def _describe_problems(plan: Plan, status: np.ndarray, diverged_step: np.ndarray,
                       failures: list[BatchFailure]) -> list[str]:
    problems = []
    for (s, m, *v), value in np.ndenumerate(status):
        if value == "diverged":
            problems.append(f"seed {plan.seeds[s]}, model {plan.model_names[m]}{_variant_text(plan, v[0] if v else 0)}: "
                            f"diverged (non-finite state) at step {diverged_step[(s, m, *v)]}")
    for failure in failures:
        seeds = ", ".join(str(x) for x in plan.seeds[failure.batch.seeds])
        models = ", ".join(plan.model_names[failure.batch.models])
        problems.append(f"seeds {seeds}, models {models}{_variant_text(plan, failure.batch.variant)}: "
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
    lines = [
        f"store        {path}",
        f"experiment   {attrs.get('name', '?')}  (task {attrs.get('task', '?')})",
        f"status       {status}{_outcomes_text(ds)}: {_progress_line(path, ds)}",
        *([f"writer       {owner.describe()}" + (f" - gone: {owner.gone_reason()}" if owner.gone_reason() else "")]
          if owner is not None else []),
        f"models       {', '.join(map(str, ds['model'].values))}",
        f"seeds        {', '.join(map(str, ds['seed'].values))}",
        *([f"variants     {'; '.join(map(str, ds['variant_label'].values))}"] if "variant" in ds.dims else []),
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


def _outcomes_text(ds: xr.Dataset) -> str:
    """', 2 of 8 runs diverged' (and failed) when some runs did not complete."""
    if "run_status" not in ds:
        return ""
    values = ds["run_status"].values.ravel()
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
