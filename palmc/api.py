"""The public Python API: load an experiment, simulate it into a store, open and describe stores."""

from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np
import xarray as xr

from palmc.distributed import (DEFAULT_CONNECT_TIMEOUT, SCHEDULER_ENV, BatchFailure, SchedulerError, active_client,
                               check_reachable, default_workers, execute, read_progress_files)
from palmc.plan import Plan, make_plan
from palmc.runner import BatchResult, kernel_cached, kernel_loaded, load_kernel
from palmc.store.integrity import reset_batch, summarise, verify
from palmc.store.layout import decode_run_status, load_small_coords
from palmc.store.lease import LEASE_FILE, Lease, pid_alive, read_owner
from palmc.store.location import StoreLocation
from palmc.store.ownership import (check_output_path, check_replaceable, remove_stale_staging,
                                   require_palmc_store)
from palmc.store.writer import StoreError, finish_store, refuse_existing

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


@contextmanager
def _lease_held(store: StoreLocation, take_over_stale: bool, resuming: bool,
                note: Callable[[str], None]) -> Iterator[Lease]:
    """Hold the store's lease (one writer at a time) for the block; before it, check that what is at ``store``
    now is what the lease covers, clear palmc's stale staging folders and (``resuming``) mark damaged batches
    to run again."""
    lease, taken_over = Lease.acquire(store, take_over_stale=take_over_stale)
    try:
        lease.start()
        if taken_over:
            note(taken_over)
        if not resuming:
            check_replaceable(store)
        elif not store.exists("zarr.json"):
            raise StoreError(f"{store} disappeared while it was being resumed")
        remove_stale_staging(store)
        if resuming:
            _repair(store, note)
        yield lease
    finally:
        lease.release()


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
    note = log or (lambda text: None)
    _check_run_options(overwrite, resume, seeds_per_batch, workers, connect_timeout)
    compute = getattr(experiment, "compute", None)
    scheduler = scheduler_address(scheduler, compute)
    timeout = connect_timeout or getattr(compute, "connect_timeout", None) or DEFAULT_CONNECT_TIMEOUT
    workers = workers or getattr(compute, "workers", None)
    # a notebook's Client() is the user's cluster: used rather than a new one, unless workers were asked for
    use_active = workers is None and scheduler is None and active_client() is not None
    n_workers = workers or default_workers()
    target = store if store is not None else experiment.output.store
    store = _location(target)
    check_output_path(store, target)
    resuming = resume and store.exists()
    variants_per_batch = None
    if resuming:
        attrs = _check_resumable(store, engine, seeds_per_batch)
        engine = engine or attrs.get("engine")
        seeds_per_batch = attrs.get("seeds_per_batch", seeds_per_batch)
        variants_per_batch = attrs.get("variants_per_batch", 1)  # (stores from before sweeps' batches had 1)
    plan = make_plan(experiment, seeds_per_batch=seeds_per_batch, engine=engine, workers=n_workers,
                     variants_per_batch=variants_per_batch)
    if resuming:
        _check_same_experiment(store, attrs, plan)
    remote = scheduler is not None or use_active
    use_cluster = remote or (n_workers > 1 and len(plan.batches) > 1)
    check_fits_memory(plan, min(n_workers, len(plan.batches)) if use_cluster else 1, local=not remote)
    if not resuming:
        refuse_existing(store, overwrite)  # the common mistake fails before any cluster starts
        check_replaceable(store)
    if isinstance(scheduler, str):
        check_reachable(scheduler, timeout)  # a remote scheduler is reached before anything of the store is touched
    try:
        with _lease_held(store, resume or overwrite, resuming, note) as lease:
            results, failures = execute(plan, store, overwrite=overwrite, resume=resuming, scheduler=scheduler,
                                        workers=n_workers, progress=progress, use_active=use_active,
                                        connect_timeout=timeout, lease=(LEASE_FILE, lease.to_bytes()),
                                        load=lambda plan: load_kernel_visibly(plan, progress), say=_say)
            status, diverged_step = _run_outcomes(plan, results, failures)
            finish_store(store, status, diverged_step, plan.protocol.total_steps)
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
