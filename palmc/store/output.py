"""The store a run writes, from the user's address to the runs' recorded outcome.

``Output.open`` finds the address and what is there (before the plan is made: a resumed store fixes the engine
and the batch sizes); ``Output.claim`` checks the plan against it (the same experiment, memory, what may be
replaced); ``Claim.held`` holds the store for the run: the lease, stale staging folders removed, damaged batches
reset, the layout, and at the end every run's outcome and the store's status.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from palmc.plan import BatchSpec, Plan
from palmc.store.integrity import reset_batch, verify
from palmc.store.lease import LEASE_FILE, Lease
from palmc.store.location import StoreLocation
from palmc.store.ownership import check_output_path, check_replaceable, remove_stale_staging, require_palmc_store
from palmc.store.writer import StoreError, finish_store, prepare_store, refuse_existing

Note = Callable[[str], None]


class RunFailures(Exception):
    """Some runs failed or diverged; the store holds every run, and says which ones in ``run_status``."""

    def __init__(self, store: str, problems: list[str]) -> None:
        self.store, self.problems = store, problems
        super().__init__(f"{len(problems)} run(s) did not complete in {store}:\n  " + "\n  ".join(problems))


def check_fits_memory(plan: Plan, concurrent_batches: int, local: bool = True) -> None:
    """Refuse a plan whose batches cannot fit this machine's memory (estimated, nothing allocated)."""
    import psutil

    batch, coordinator = plan.memory.batch_bytes, plan.memory.coordinator_bytes
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


@dataclass
class Output:
    """The store at the address a user gave, before the run: where it is and, when it is resumed, what it was
    written with."""

    location: StoreLocation
    overwrite: bool
    resuming: bool
    attrs: dict  # the attributes of the store to resume ({} for a new one)
    note: Note  # told what the user should know (a stale lease taken over, batches run again)

    @classmethod
    def open(cls, target: object, *, overwrite: bool, resume: bool, engine: str | None,
             seeds_per_batch: int | None, note: Note | None = None) -> "Output":
        """The output at ``target`` (a path or URL), refused if palmc must never write there; a store to resume
        is checked to come from palmc and to have been written with this ``engine`` and ``seeds_per_batch``."""
        try:
            location = StoreLocation(target if isinstance(target, (str, Path, StoreLocation)) else str(target))
        except (ValueError, ImportError) as err:
            raise StoreError(f"cannot use the store address {target!r}: {err}") from None
        check_output_path(location, target)
        resuming = resume and location.exists()
        attrs: dict = {}
        if resuming:
            try:
                attrs = require_palmc_store(location)
            except StoreError as err:
                raise StoreError(f"{err}; it cannot be resumed") from None
            # checkpoints are per batch, and the same engine makes the resumed records match an uninterrupted run
            # to the last bit: a resumed run keeps both
            for option, asked, stored in (("--engine", engine, attrs.get("engine")),
                                          ("--seeds-per-batch", seeds_per_batch, attrs.get("seeds_per_batch"))):
                if asked is not None and stored is not None and asked != stored:
                    raise StoreError(f"{location} was written with {option} {stored}; resuming it with {option} "
                                     f"{asked} would change its results: resume with {option} {stored} (or leave "
                                     "it out)")
        return cls(location, overwrite, resuming, attrs, note or (lambda text: None))

    def plan_settings(self, engine: str | None, seeds_per_batch: int | None) -> dict:
        """The settings of ``make_plan`` that a resumed store fixes (as asked, for a new store)."""
        if not self.resuming:
            return {"engine": engine, "seeds_per_batch": seeds_per_batch, "variants_per_batch": None}
        return {"engine": engine or self.attrs.get("engine"),
                "seeds_per_batch": self.attrs.get("seeds_per_batch", seeds_per_batch),
                "variants_per_batch": self.attrs.get("variants_per_batch", 1)}  # (stores from before sweeps' batches)

    @property
    def address(self) -> Path | str:
        """The store's local Path, or its URL."""
        return self.location.path if self.location.is_local else self.location.url

    def claim(self, plan: Plan, concurrent_batches: int, local: bool) -> "Claim":
        """The output checked for ``plan`` before anything is written: a store to resume was written by the same
        experiment; a store to replace may be (``--overwrite``, palmc's own or an empty directory); the batches
        fit this machine's memory (``concurrent_batches`` at once, here if ``local``)."""
        if self.resuming:
            if self.attrs.get("experiment_sha256") != plan.experiment_sha256:
                raise StoreError(
                    f"{self.location} was written by a different experiment ({self.attrs.get('name', '?')!r}); "
                    "resume it with the experiment file that created it, or choose another output"
                )
        else:
            refuse_existing(self.location, self.overwrite)  # the common mistake fails before any cluster starts
            check_replaceable(self.location)
        check_fits_memory(plan, concurrent_batches, local)
        return Claim(self, plan)


@dataclass
class StoreRun:
    """The store during a run: its address for the batches, and the outcome of each batch as it ends."""

    location: StoreLocation
    plan: Plan
    laid_out: Callable[[], None]  # waits until the store is laid out (and raises the layout's error here)
    completed: dict[int, dict[int, int]] = field(default_factory=dict)  # batch index -> {run in batch: diverged step}
    failed: list[tuple[BatchSpec, str]] = field(default_factory=list)  # (batch, error)

    def record_outcomes(self, results: list, failures: list) -> None:
        """Keep the batches' outcomes: ``results`` (``runner.BatchResult``) and ``failures``
        (``distributed.BatchFailure``) of this run."""
        self.completed.update({result.batch: result.diverged for result in results})
        self.failed.extend((failure.batch, failure.error) for failure in failures)

    def status(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-run (seed, model, variant) status and divergence step; the arrays have a variant axis only when
        the store has one."""
        plan = self.plan
        status = np.full((len(plan.seeds), len(plan.model_names), len(plan.variants)), "pending", dtype=object)
        diverged_step = np.full(status.shape, -1, dtype=np.int64)
        by_index = {b.index: b for b in plan.batches}
        for index, diverged in self.completed.items():
            batch = by_index[index]
            status[batch.seeds, batch.models, batch.variants] = "complete"
            for run, step in diverged.items():
                s, m, v = (start + offset for start, offset in zip(
                    (batch.seeds.start, batch.models.start, batch.variants.start),
                    np.unravel_index(run, batch.shape)))
                status[s, m, v], diverged_step[s, m, v] = "diverged", step
        for batch, _ in self.failed:
            status[batch.seeds, batch.models, batch.variants] = "failed"
        if not plan.has_variants:
            return status[..., 0], diverged_step[..., 0]
        return status, diverged_step

    def problems(self, status: np.ndarray, diverged_step: np.ndarray) -> list[str]:
        """One line for each run that diverged and each batch that failed."""
        plan = self.plan
        problems = []
        for (s, m, *v), value in np.ndenumerate(status):
            if value == "diverged":
                variants = slice(v[0], v[0] + 1) if v else slice(0, 1)
                problems.append(f"seed {plan.seeds[s]}, model {plan.model_names[m]}{_variant_text(plan, variants)}: "
                                f"diverged (non-finite state) at step {diverged_step[(s, m, *v)]}")
        for batch, error in self.failed:
            seeds = ", ".join(str(x) for x in plan.seeds[batch.seeds])
            models = ", ".join(plan.model_names[batch.models])
            problems.append(f"seeds {seeds}, models {models}{_variant_text(plan, batch.variants)}: failed: {error}")
        return problems


def _variant_text(plan: Plan, variants: slice) -> str:
    if not plan.has_variants:
        return ""
    if variants.stop - variants.start == 1:
        return f", variant {variants.start} ({plan.variants[variants.start].label})"
    return f", variants {variants.start}-{variants.stop - 1}"


@dataclass
class Claim:
    """An output checked for a plan (``Output.claim``): what the run holds while it writes."""

    output: Output
    plan: Plan

    @contextmanager
    def held(self, aside: bool) -> Iterator[StoreRun]:
        """Hold the store for the run in the block.

        Before it: the lease (one writer at a time), a check that what is at the address now is what the lease
        covers, palmc's stale staging folders removed, (resuming) damaged batches reset to run again, and the
        store laid out or reopened (``writer.prepare_store``): in a process forked from this one if ``aside``
        (while this one loads the kernel or starts a cluster; ``StoreRun.laid_out`` waits for it). After it: each
        run's outcome and the store's status (``writer.finish_store``), then :class:`RunFailures` if runs failed
        or diverged. A store that cannot be written (a full disk) is a :class:`StoreError`.
        """
        output = self.output
        plan = self.plan
        location = output.location
        try:
            lease, taken_over = Lease.acquire(location, take_over_stale=output.resuming or output.overwrite)
            try:
                lease.start()
                if taken_over:
                    output.note(taken_over)
                if not output.resuming:
                    check_replaceable(location)
                elif not location.exists("zarr.json"):
                    raise StoreError(f"{location} disappeared while it was being resumed")
                remove_stale_staging(location)
                if output.resuming:
                    _repair(location, output.note)
                with _laid_out(plan, location, output.overwrite, output.resuming, aside and location.shared,
                               (LEASE_FILE, lease.to_bytes())) as laid_out:
                    run = StoreRun(location, plan, laid_out)
                    yield run
                status, diverged_step = run.status()
                finish_store(location, status, diverged_step, plan.protocol.total_steps)
            finally:
                lease.release()
        except OSError as err:
            if err.errno is None:
                raise
            raise StoreError(f"cannot write the store {location}: {err.strerror or err}; the store is marked "
                             "interrupted: fix the cause (e.g. free space) and continue it with --resume") from err
        problems = run.problems(status, diverged_step)
        if problems:
            raise RunFailures(str(location), problems)

def _repair(location: StoreLocation, note: Note) -> None:
    """Before resuming: batches whose chunks or checkpoint are missing or damaged run again from their start."""
    damage = verify(location)
    for label in sorted({d.batch for d in damage}):
        problems = "; ".join(str(d).split(": ", 1)[1] for d in damage if d.batch == label)
        note(f"{label} runs again from its start: {problems}")
        reset_batch(location, label)


@contextmanager
def _laid_out(plan: Plan, location: StoreLocation, overwrite: bool, resume: bool, aside: bool,
              lease: tuple[str, bytes]) -> Iterator[Callable[[], None]]:
    """Lay out the store (``prepare_store``) in a process forked from this one if ``aside``, while this one gets
    ready to run; yields the function that waits for it (and raises its error here). Leaving the block waits
    too, so no layout is left half-done behind an error.

    Getting ready (loading the compiled kernel; importing Dask and starting a cluster) keeps one core busy,
    while the layout (xarray's template, Zarr's metadata) can use another: done after it instead, the layout
    delayed the first batch by as much. Without ``aside`` the store is laid out here, when waited for.
    """
    if not aside:
        yield lambda: prepare_store(plan, location, overwrite, resume, lease=lease)
        return
    # Ctrl-C is this process's to handle: the layout (under a second) is finished, and the store marked as
    # interrupted, rather than a traceback printed from the forked process
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"),
                             initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN)) as pool:
        future = pool.submit(prepare_store, plan, location, overwrite, resume, os.getpid(), lease)

        def wait() -> None:
            try:
                future.result()
            finally:
                pool.shutdown()  # the forked process is not kept for the run

        yield wait
