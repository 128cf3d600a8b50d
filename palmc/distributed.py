"""The executor of a plan (:func:`execute`): holds its store, loads the kernel, then runs its batches as Dask
tasks on a LocalCluster by default or any existing scheduler, or one after the other in this process.

Each task runs one batch (:func:`palmc.runner.run_batch`) and writes its own (seed, model) region of the one
store, which was laid out before any task started; tasks resume from their checkpoints, so a retried task or one
rescheduled after its worker died continues where its data end. Progress is read from the small progress files
the tasks leave next to their checkpoints, so it works for remote workers on a shared filesystem too.
"""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from palmc.plan import BatchSpec, Plan, default_workers  # noqa: F401 - re-exported
from palmc.kernel import load_kernel, load_kernel_visibly
from palmc.runner import BatchResult, run_batch
from palmc.schema.experiment import Compute
from palmc.store.location import StoreLocation
from palmc.store.output import Claim, Output
from palmc.store.writer import CHECKPOINT_DIR, now, update_attrs

if TYPE_CHECKING:  # pragma: no cover
    from dask.distributed import Client, LocalCluster

SCHEDULER_ENV = "PALMC_SCHEDULER"
LOCAL_PROCESSES_ENV = "PALMC_LOCAL_PROCESSES"


class SchedulerError(Exception):
    """The Dask scheduler given cannot be reached; the message names it and why."""


DEFAULT_CONNECT_TIMEOUT: float = Compute.model_fields["connect_timeout"].default  # seconds


@dataclass
class BatchFailure:
    batch: BatchSpec
    error: str


def write_progress(store: str | Path | StoreLocation, batch: BatchSpec, run_steps: int) -> None:
    data = json.dumps({"run_steps": run_steps, "time": time.time()}).encode()
    StoreLocation(store).write_bytes(data, CHECKPOINT_DIR, f"{batch.label()}.progress.json")


def read_progress_files(store: str | Path | StoreLocation) -> int:
    """Run-steps done according to every progress file of a store (no plan needed)."""
    location = StoreLocation(store)
    total = 0
    for key in location.glob(f"{CHECKPOINT_DIR}/*.progress.json"):
        try:
            total += json.loads(location.fs.cat_file(key))["run_steps"]
        except (OSError, ValueError, KeyError):
            pass
    return total


def batch_task(store: str, plan: Plan, batch: BatchSpec, report: Callable[[int], None] | None = None) -> BatchResult:
    """Run (or resume from its checkpoint) one batch, keeping its progress file up to date."""
    done = 0

    def on_progress(n: int) -> None:
        nonlocal done
        done += n
        write_progress(store, batch, done)
        if report is not None:
            report(n)

    return run_batch(store, plan, batch, resume=True, on_progress=on_progress)


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, unit="step", unit_scale=True, disable=not enabled, desc="seed-steps",
                smoothing=0.1, dynamic_ncols=True)


def execute(plan: Plan, output: Output, *, scheduler: "str | Client | object | None", workers: int,
            progress: bool, use_active: bool = False, say: Callable[[str], None] | None = None,
            connect_timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
    """Run every batch of ``plan`` into ``output``: on the cluster of ``scheduler`` (a ``Client``, a cluster or
    an address), on the active client if ``use_active``, on a LocalCluster of ``workers`` processes, or here
    when there is a single batch or a single worker.

    The output is first claimed for the plan (``Output.claim``: the checks before anything is written, among
    them that the batches fit this machine's memory, as many at once as run here), then a scheduler address is
    reached within ``connect_timeout`` seconds, and only then is the store held for the run (``Claim.held``:
    laid out or reopened, the runs' outcomes recorded at the end, :class:`~palmc.store.output.RunFailures`
    raised if runs failed or diverged). The compiled kernel is loaded into this process first, visibly (unless
    the run goes to a cluster that is not this process's, whose workers load it); ``say`` is told that, which
    cluster is used and where its dashboard is. The store is marked interrupted if this is stopped.
    """
    say = say or (lambda message: None)
    here = scheduler is None and not use_active
    use_cluster = not here or (workers > 1 and len(plan.batches) > 1)
    claim: Claim = output.claim(plan, min(workers, len(plan.batches)) if use_cluster else 1, local=here)
    if isinstance(scheduler, str):
        check_reachable(scheduler, connect_timeout)  # before anything of the store is touched
    # the store is laid out aside while this process starts the cluster or loads the kernel (if either is to do;
    # a kernel that turns out to be loaded already costs the fork, a few milliseconds)
    aside = can_fork() and (use_cluster or plan.engine == "compiled")
    with claim.held(aside) as run:
        if here:
            load_kernel_visibly(plan, progress, say)
        with cluster_client(plan, scheduler, workers, say, use_active, connect_timeout) if use_cluster \
                else nullcontext() as client:
            run.laid_out()
            results, failures = _run(plan, run.location, client, progress, say)
        run.record_outcomes(results, failures)


def _run(plan: Plan, store: StoreLocation, client: "Client | None", progress: bool, say: Callable[[str], None],
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
                    say(f"Dask dashboard: {link}")  # also with --no-progress: the way to watch the run
                results, failures = run_on_cluster(client, plan, str(store), bar.update, on_dashboard,
                                                   on_batch_done=on_batch_done)
            else:
                for batch in plan.batches:
                    results.append(batch_task(str(store), plan, batch, report=bar.update))
                    on_batch_done(batch)
    except BaseException:
        try:
            update_attrs(store, status="interrupted", ended=now())
        except OSError:  # e.g. the disk is full: the dead pid (or lease) still tells readers it is interrupted
            pass
        raise
    return results, failures


def local_processes() -> bool:
    """Whether a LocalCluster's workers are processes (the default, for either engine) or threads of this process.

    Processes share nothing. Threads share the GIL, which each batch needs between kernel calls (records, writes,
    bookkeeping): where those parts are large next to the kernel's (Fig. 4's 1-1-1 networks), two thread workers
    are hardly faster than one (docs/performance.md, "Local workers"). Forked processes (Linux) start in a fraction
    of a second, so threads keep no advantage.
    ``PALMC_LOCAL_PROCESSES=0`` (or 1) overrides the choice.
    """
    forced = os.environ.get(LOCAL_PROCESSES_ENV)
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "")
    return True


def can_fork() -> bool:
    """Whether palmc forks this process for helpers and local workers: where that is safe (Linux)."""
    return sys.platform.startswith("linux")


def _start_method() -> str | None:
    """How local worker processes start: forked from this process where that is safe (``can_fork``), so that
    they inherit its imports and its loaded kernel; else Dask's default (spawn: each worker imports everything)."""
    return "fork" if can_fork() else None


def start_local_cluster(plan: Plan, workers: int | None) -> "LocalCluster":
    """A LocalCluster for ``plan``: one single-threaded worker per core (or ``workers``).

    The scheduler's HTTP server (so the dashboard address) starts at once; its bokeh pages, ~1 s of imports, are
    connected on the first visit (``_serve_dashboard_on_first_visit``). The compiled kernel is loaded here, once,
    when the workers share this process (threads) or are forked from it: each forked worker loading its own took
    ~0.8 s of CPU (numba's start-up, copy-on-write faults), and the first tasks waited for both. Workers that
    start afresh (spawned, where fork is not used) load it as they start (``palmc.worker_preload``).
    """
    import dask
    from dask.distributed import LocalCluster

    processes = local_processes()
    method = _start_method() if processes else None
    inherit = not processes or method == "fork"
    if inherit:
        load_kernel(plan)
    # Workers here run one long compute task each: their event loops need not wake every few milliseconds (loop
    # latency ticks, memory and system monitors), which costs the batch CPU and GIL; the statistical profiler
    # would only find the tasks inside one compiled call
    config = {
        "distributed.admin.tick.interval": "1s",
        "distributed.admin.system-monitor.interval": "2s",
        "distributed.worker.memory.monitor-interval": "1s",
        "distributed.worker.profile.enabled": False,
    }
    if method:
        config["distributed.worker.multiprocessing-method"] = method
    preload = ["palmc.worker_preload"] if not inherit and plan.engine == "compiled" else []
    with dask.config.set(config):
        return LocalCluster(n_workers=workers or default_workers(), threads_per_worker=1, processes=processes,
                            dashboard_address=":0", scheduler_kwargs={"dashboard": False}, preload=preload)


def check_reachable(scheduler: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> None:
    """Raise :class:`SchedulerError` unless the scheduler at ``scheduler`` answers Dask's handshake within
    ``timeout`` seconds (a closed port, a listener that never answers, an unknown host)."""
    import asyncio

    from distributed.comm import connect as open_comm

    async def handshake() -> None:
        # the Client itself can wait forever on a listener that never answers; Dask's handshake, bounded here,
        # cannot
        comm = await asyncio.wait_for(open_comm(scheduler, timeout=timeout), timeout)
        await comm.close()

    try:
        asyncio.run(handshake())
    except (OSError, TimeoutError, ValueError) as err:
        raise _unreachable(scheduler, timeout, err) from None


def connect(scheduler: str, timeout: float = DEFAULT_CONNECT_TIMEOUT) -> "Client":
    """A client of the scheduler at ``scheduler``, connected within ``timeout`` seconds, else
    :class:`SchedulerError`."""
    from dask.distributed import Client

    check_reachable(scheduler, timeout)
    try:
        return Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise _unreachable(scheduler, timeout, err) from None


def _unreachable(scheduler: str, timeout: float, err: BaseException) -> SchedulerError:
    return SchedulerError(f"cannot connect to the Dask scheduler {scheduler} within {timeout:g} s "
                          f"({type(err).__name__}: {err}); check the address (--scheduler, "
                          f"${SCHEDULER_ENV} or compute.scheduler) and that the scheduler is running, or "
                          "raise the timeout (--connect-timeout, compute.connect_timeout)")


def active_client() -> "Client | None":
    """The Dask client that is active in this process (``distributed.default_client()``, e.g. one a notebook
    created), or None. Dask is not imported for this: without it, no client can be active."""
    if "distributed" not in sys.modules:
        return None
    from distributed import default_client

    try:
        return default_client()
    except ValueError:
        return None


@contextmanager
def cluster_client(plan: Plan, scheduler: "str | Client | object | None" = None, workers: int | None = None,
                   say: Callable[[str], None] | None = None, use_active: bool = True,
                   timeout: float = DEFAULT_CONNECT_TIMEOUT) -> Iterator["Client"]:
    """A client to run ``plan`` on: ``scheduler`` may be a ``Client`` (used as it is, left open), a cluster such
    as a ``LocalCluster`` or a dask-jobqueue cluster (anything with a ``scheduler_address``), or a scheduler
    address (``tcp://host:8786``, or ``$PALMC_SCHEDULER``). Without one, the active client of this process if there
    is one (a notebook's ``Client()``) and ``use_active``, else a new LocalCluster, closed on exit. ``say`` is told
    which it is when it is not a new LocalCluster; an address is reached within ``timeout`` seconds (``connect``)."""
    from dask.distributed import Client

    say = say or (lambda message: None)
    if scheduler is None:
        scheduler = os.environ.get(SCHEDULER_ENV) or None
    if isinstance(scheduler, Client):
        say(f"using the Dask client given ({scheduler.scheduler.address})")
        yield scheduler
        return
    if scheduler is None and use_active and (active := active_client()) is not None:
        say(f"using the active Dask client ({active.scheduler.address}); pass workers= or scheduler= to choose")
        yield active
        return
    if scheduler is not None:
        address = getattr(scheduler, "scheduler_address", scheduler)
        if not isinstance(address, str):
            raise TypeError(f"scheduler must be a Dask Client, a cluster or a scheduler address, got {scheduler!r}")
        say(f"using the Dask scheduler at {address}")
        with connect(address, timeout) as client:
            yield client
        return
    cluster = start_local_cluster(plan, workers)
    try:
        with Client(cluster) as client:
            _serve_dashboard_on_first_visit(client)
            try:
                yield client
            finally:
                _stop_heartbeats(client)
    finally:
        cluster.close()


def _stop_heartbeats(client: "Client") -> None:
    """Stop the workers' heartbeats before their cluster closes: a heartbeat sent while the scheduler shuts down
    fails, and the worker logs it as an ERROR with a traceback although nothing went wrong."""
    def stop(dask_worker: object) -> None:
        callback = getattr(dask_worker, "periodic_callbacks", {}).get("heartbeat")
        if callback is not None:
            callback.stop()

    try:
        client.run(stop, wait=True)
    except Exception:  # noqa: BLE001 - workers already gone have nothing to stop
        pass


def _serve_dashboard_on_first_visit(client: "Client") -> None:
    """Let the scheduler of a LocalCluster started without dashboard pages add them when someone first asks.

    Importing bokeh and building the pages costs ~1 s of CPU, which would be taken from the workers on a machine
    with one worker per core (and ~1 s of wall time on a short run) though most runs are never watched. The
    scheduler's HTTP server answers at once; its first page request imports the pages (in a thread, so the
    scheduler keeps serving), connects them as the scheduler does at start-up, and redirects to the page asked for.
    """

    def install(dask_scheduler: object) -> None:
        dask_scheduler.http_application.add_application(_dashboard_on_first_visit(dask_scheduler))

    client.run_on_scheduler(install)


def _dashboard_on_first_visit(scheduler: object) -> object:
    """A tornado application answering every path until the dashboard pages are connected (then it steps aside)."""
    import asyncio

    from tornado import web

    lock = asyncio.Lock()
    why_not: list[str] = []  # why the pages could not be connected (no bokeh)

    class ConnectPages(web.RequestHandler):
        async def get(self) -> None:
            routing = scheduler.http_application
            async with lock:  # the first request connects, requests that arrive meanwhile wait for it
                if app in routing.applications and not why_not:
                    error = await asyncio.get_running_loop().run_in_executor(None, _import_dashboard_pages)
                    if error is None:
                        from distributed.dashboard.scheduler import connect

                        routing.applications.remove(app)
                        connect(routing, scheduler.http_server, scheduler, prefix="/")
                    else:
                        why_not.append(error)  # stay, to tell every visitor
            if why_not:
                self.set_status(404)
                self.finish(f"The Dask dashboard needs bokeh: {why_not[0]}")
            else:
                self.redirect(self.request.uri)

    app = web.Application([(r"/.*", ConnectPages)])
    return app


def _import_dashboard_pages() -> str | None:
    """Import the scheduler's bokeh pages; returns why not when they cannot be (e.g. no bokeh)."""
    try:
        import distributed.dashboard.scheduler  # noqa: F401 - the slow part
    except ImportError as err:
        return str(err)
    return None


def _the_plan(plan: Plan) -> Plan:
    return plan


def run_on_cluster(client: "Client", plan: Plan, store: str, on_progress: Callable[[int], None],
                   on_dashboard: Callable[[str], None], retries: int = 2,
                   on_batch_done: Callable[[BatchSpec], None] | None = None,
                   ) -> tuple[list[BatchResult], list[BatchFailure]]:
    """Run every batch of ``plan`` on the cluster of ``client``; returns the results and the batches that failed
    for good."""
    from dask.distributed import wait

    results: list[BatchResult] = []
    failures: list[BatchFailure] = []
    # the plan goes to the cluster once (a sweep's plan holds every variant), not with each task; as a task's
    # result rather than scattered data, so that a worker that dies with it does not lose it for good
    shared_plan = client.submit(_the_plan, plan, pure=False, key=f"palmc-{plan.name}-plan-{time.time_ns()}")
    futures = {client.submit(batch_task, store, shared_plan, b, retries=retries, pure=False,
                             key=f"palmc-{plan.name}-{b.label()}-{time.time_ns()}"): b
               for b in plan.batches}
    if client.dashboard_link:
        on_dashboard(client.dashboard_link)
    reported = 0

    def report_progress() -> None:
        nonlocal reported
        now = read_progress_files(store)
        if now > reported:
            on_progress(now - reported)
            reported = now

    pending = set(futures)
    while pending:
        try:  # wakes as soon as a task ends, else twice a second for the progress display
            done = wait(list(pending), timeout=0.5, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            done = set()
        report_progress()  # read after collecting: finished tasks' last progress files are complete
        for future in done:
            pending.discard(future)
            batch = futures[future]
            try:
                results.append(future.result())
            except OSError as err:
                if err.errno is not None:  # the store cannot be written (a full disk...): no batch can go on
                    raise
                failures.append(BatchFailure(batch, f"{type(err).__name__}: {err}"))
            except Exception as err:  # noqa: BLE001 - any task error is reported per batch
                failures.append(BatchFailure(batch, f"{type(err).__name__}: {err}"))
            if on_batch_done is not None:
                on_batch_done(batch)
    report_progress()
    return results, failures
