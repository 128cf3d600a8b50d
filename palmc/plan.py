"""What a simulation will do: runs, batches, records and chunks, derived from an experiment.

A *batch* is a rectangular block of runs (a slice of seeds x a slice of models x a slice of the variants of a
parameter sweep that share a time course) advanced together by one engine call; it is also the unit a Dask task
works on and the region of the store it writes. The store's shards (files) are exactly the batches' regions and
their chunks (one batch of seeds, one model, one variant each) lie inside them, so no chunk or shard is ever
written by two batches. The plan sizes the batches from an estimate of each run's cost, so that each carries
enough work to amortise its fixed cost however many variants the sweep has.

Variants of a sweep may have different time courses (e.g. a longer presentation time): the store's time axis is
then the union of all variants' record steps, and each variant writes its records at its own positions on it.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field

import numpy as np

from palmc.engine.params import ModelParams, Protocol, RunSpec
from palmc.engine.variables import Variable, variables_for
from palmc.schema.sweep import coordinate_names, label

CHUNK_BYTES_PER_RUN = 2**20  # target size of one stored chunk of the largest variable
STATE_ARRAYS_PER_WEIGHT = 16  # weights, their increments, filtered and previous copies, kernel scratch
STATE_ARRAYS_PER_NEURON = 64  # voltages, rates, their lookaheads and filters, noise, inputs
COORD_BYTES_PER_RECORD = 96  # time, step, epoch (8 bytes each), phase (a Python string) and their temporaries
MAX_CHUNK_STEPS = 2_000_000  # a chunk spans at most this many steps: progress and checkpoints stay frequent
RECORD_BUFFER_BYTES = 64 * 2**20  # a batch buffers at most this many bytes of records (one time chunk)

# Batch sizing (sweeps): a batch costs a fixed part (set-up, store writes, checkpoints, a Dask task) besides its
# runs' work, so a batch of variants is made long enough that its estimated work is at least MIN_BATCH_SECONDS,
# yet the work is still split into about BATCHES_PER_WORKER batches per worker to keep all of them busy.
MIN_BATCH_SECONDS = 1.0
BATCHES_PER_WORKER = 4
MAX_RUNS_PER_BATCH = 2048  # bounds a worker's memory (state, generators and record buffers of one batch)
SEED_STEP_SECONDS = 2e-8  # estimated compiled-engine cost of one step of one run, per (8 + weights of the network)


def default_workers() -> int:
    """Worker processes of a local cluster: one per usable core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(frozen=True)
class BatchSpec:
    index: int
    seeds: slice  # indices into Plan.seeds
    models: slice  # indices into Plan.model_names
    variants: slice = field(default_factory=lambda: slice(0, 1))  # indices into Plan.variants (of one time course)

    def label(self) -> str:
        return f"batch{self.index:04d}"

    @property
    def shape(self) -> tuple[int, int, int]:
        """Seeds, models and variants of the batch (its runs are seed-major, then model, then variant)."""
        return tuple(s.stop - s.start for s in (self.seeds, self.models, self.variants))  # type: ignore[return-value]

    @property
    def n_runs(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Variant:
    """One point of a parameter sweep (the only one when there is no sweep): its time course and parameters."""

    index: int
    values: dict[str, object]  # swept field path -> value ({} without a sweep)
    label: str  # the swept values as text, e.g. ``tauxi=1.0, taur=0.0`` ('' without a sweep)
    protocol: Protocol
    every: int  # record every this many steps
    model_params: dict[str, ModelParams]

    @property
    def record_steps(self) -> np.ndarray:
        """Steps done at each of this variant's records."""
        return np.arange(1, self.protocol.total_steps // self.every + 1, dtype=np.int64) * self.every

    @property
    def n_records(self) -> int:
        return self.protocol.total_steps // self.every


@dataclass(frozen=True)
class MemoryEstimate:
    """What a plan's run needs, estimated from the sizes alone (nothing allocated), computed once with the plan:
    the store checks it against the machine before anything is written, and ``palmc validate`` shows it."""

    batch_bytes: int  # a worker's largest batch
    coordinator_bytes: int  # the store's layout in the palmc process
    store_bytes: int  # the recordings, uncompressed

    @classmethod
    def of(cls, plan: "Plan") -> "MemoryEstimate":
        """The engine's state of the largest batch (about STATE_ARRAYS_PER_WEIGHT arrays the size of the weights,
        STATE_ARRAYS_PER_NEURON the size of the neurons), its input patterns, the recorder's chunk buffers and
        copies of the largest variable's chunk for writing it; the store's time coordinates (time, step, epoch,
        phase: about COORD_BYTES_PER_RECORD per record); every record of every run."""
        layers = plan.layers
        weights = sum(layers[i] * layers[i - 1] for i in range(1, len(layers)))
        neurons = sum(layers)
        runs = max(b.n_runs for b in plan.batches)
        state = (STATE_ARRAYS_PER_WEIGHT * weights + STATE_ARRAYS_PER_NEURON * neurons) * 8 * runs
        patterns = max(v.protocol.dataset_size for v in plan.variants)  # input patterns, targets, orders
        state += patterns * (layers[0] + layers[-1] + runs) * 8
        sizes = [math.prod(shape) for shape in plan.record_shapes.values()]
        chunk = sum(sizes) * 8 * plan.chunk_records * runs
        largest = max(sizes, default=0)
        batch = state + chunk + 2 * largest * 8 * plan.chunk_records * runs
        coordinator = COORD_BYTES_PER_RECORD * plan.n_records * max(1, len(plan.variants) if plan.has_variants else 1)
        return cls(batch_bytes=batch, coordinator_bytes=coordinator,
                   store_bytes=sum(sizes) * 8 * plan.n_records * plan.n_runs)


@dataclass
class Plan:
    name: str
    experiment_yaml: str
    seeds: list[int]
    model_names: list[str]
    variants: list[Variant]
    swept: list[str]  # swept field paths; empty = no sweep and no 'variant' dim in the store
    swept_names: dict[str, str]  # swept path -> its short name, as in the variants' labels (``coordinate_names``)
    variables: list[Variable]
    record_shapes: dict[str, tuple[int, ...]]  # variable -> shape of one record (``Variable.record_shape``)
    chunk_records: int
    batches: list[BatchSpec]
    engine: str
    seeds_per_batch: int
    variants_per_batch: int = 1
    memory: MemoryEstimate = field(init=False)  # what its run needs, estimated once from the sizes

    def __post_init__(self) -> None:
        self.memory = MemoryEstimate.of(self)

    # the first variant's settings (the only ones without a sweep)
    @property
    def protocol(self) -> Protocol:
        return self.variants[0].protocol

    @property
    def every(self) -> int:
        return self.variants[0].every

    @property
    def model_params(self) -> dict[str, ModelParams]:
        return self.variants[0].model_params

    @property
    def has_variants(self) -> bool:
        return bool(self.swept)

    @property
    def layers(self) -> tuple[int, ...]:
        return self.model_params[self.model_names[0]].layers

    @property
    def record_steps(self) -> np.ndarray:
        """Steps of the store's time axis: the union of every variant's record steps."""
        return np.unique(np.concatenate([v.record_steps for v in self.variants]))

    @property
    def n_records(self) -> int:
        if len({v.every for v in self.variants}) == 1:  # the longest variant's steps hold all others'
            return max(v.n_records for v in self.variants)
        return len(self.record_steps)

    @property
    def eval_epochs(self) -> np.ndarray:
        """The store's eval_epoch axis (task supervised; else empty): the union of every variant's evaluations."""
        return np.unique(np.array([e for v in self.variants for e in v.protocol.eval_epochs], dtype=np.int64))

    def eval_positions(self, variant: Variant) -> np.ndarray:
        """Positions on the store's eval_epoch axis of ``variant``'s evaluations."""
        return np.searchsorted(self.eval_epochs, np.array(variant.protocol.eval_epochs, dtype=np.int64))

    def record_positions(self, variant: Variant) -> np.ndarray:
        """Positions on the store's time axis of ``variant``'s records."""
        return np.searchsorted(self.record_steps, variant.record_steps)

    @property
    def n_runs(self) -> int:
        return len(self.seeds) * len(self.model_names) * len(self.variants)

    @property
    def total_run_steps(self) -> int:
        """Integration steps of all runs together."""
        return sum(v.protocol.total_steps for v in self.variants) * len(self.seeds) * len(self.model_names)

    @property
    def experiment_sha256(self) -> str:
        """Identity of the experiment: its YAML text and (task supervised) the data it reads from files."""
        digest = hashlib.sha256(self.experiment_yaml.encode())
        for variant in self.variants:
            data = variant.protocol.data
            if data is not None and data.source != "yinyang":  # generated data is fixed by the text
                digest.update(data.fingerprint().encode())
        return digest.hexdigest()

    def batch_variant(self, batch: BatchSpec) -> Variant:
        """The first variant of ``batch``: its time course and record steps are those of all the batch's runs."""
        return self.variants[batch.variants.start]

    def runs(self, batch: BatchSpec) -> list[RunSpec]:
        """The batch's runs, seed-major, then model, then variant (the order of the store's (seed, model, variant)
        block)."""
        first = self.seeds[0]
        variants = self.variants[batch.variants]
        return [
            RunSpec(seed=seed, model_name=name, params=variant.model_params[name], input_seed=first,
                    teacher_seed_source=first)
            for seed in self.seeds[batch.seeds]
            for name in self.model_names[batch.models]
            for variant in variants
        ]

def _structure(p: ModelParams) -> tuple:
    return (p.layers, p.activations, p.dt)


def model_groups(names: list[str], params: dict[str, ModelParams]) -> list[slice]:
    """Runs of consecutive models that share layers/activations/dt (they can advance in one batch)."""
    groups: list[slice] = []
    start = 0
    for i in range(1, len(names) + 1):
        if i == len(names) or _structure(params[names[i]]) != _structure(params[names[start]]):
            groups.append(slice(start, i))
            start = i
    return groups


def time_course_groups(variants: list[Variant], names: list[str]) -> list[slice]:
    """Runs of consecutive variants that share a time course and model structure (they can advance together)."""
    def course(v: Variant) -> tuple:
        return (v.protocol, v.every, tuple(_structure(v.model_params[name]) for name in names))

    groups: list[slice] = []
    start = 0
    for i in range(1, len(variants) + 1):
        if i == len(variants) or course(variants[i]) != course(variants[start]):
            groups.append(slice(start, i))
            start = i
    return groups


def make_batches(n_seeds: int, model_slices: list[slice], variant_groups: list[slice], seeds_per_batch: int | None,
                 variants_per_batch: int = 1) -> list[BatchSpec]:
    """Split the seeds into batches of ``seeds_per_batch`` (all by default) and the variants into blocks of
    ``variants_per_batch``, within each model group and group of variants of one time course (whose bounds
    must be multiples of ``variants_per_batch``, so that every batch is whole chunks)."""
    per = n_seeds if not seeds_per_batch else max(1, min(seeds_per_batch, n_seeds))
    batches = []
    for group in variant_groups:
        for first in range(group.start, group.stop, variants_per_batch):
            variants = slice(first, min(first + variants_per_batch, group.stop))
            for models in model_slices:
                for start in range(0, n_seeds, per):
                    batches.append(BatchSpec(len(batches), slice(start, min(start + per, n_seeds)), models, variants))
    return batches


def seed_step_seconds(layers: tuple[int, ...]) -> float:
    """Estimated seconds of one step of one run of a network with these layers (compiled engine)."""
    forward = sum(a * b for a, b in zip(layers[:-1], layers[1:]))
    others = 3 * sum(layers[i] * layers[i + 1] for i in range(1, len(layers) - 1))  # W^IP, B^PP, B^PI
    return SEED_STEP_SECONDS * (8 + forward + others)


def auto_variants_per_batch(variants: list[Variant], runs_per_variant: int, workers: int) -> int:
    """Variants advanced by one batch: enough that a batch's estimated work amortises its fixed cost
    (MIN_BATCH_SECONDS), few enough that the work still makes BATCHES_PER_WORKER batches per worker, and at most
    MAX_RUNS_PER_BATCH runs."""
    layers = variants[0].model_params[next(iter(variants[0].model_params))].layers
    per_variant = [v.protocol.total_steps * seed_step_seconds(layers) * runs_per_variant for v in variants]
    target = max(MIN_BATCH_SECONDS, sum(per_variant) / (workers * BATCHES_PER_WORKER))
    return max(1, min(int(target // max(max(per_variant), 1e-12)), MAX_RUNS_PER_BATCH // max(runs_per_variant, 1),
                      len(variants)))


def recording(names: list[str], task: str, model_kinds: set[str], layers: tuple[int, ...], n_records: int,
              every: int, runs_per_batch: int, chunk_records: int | None,
              ) -> tuple[list[Variable], dict[str, tuple[int, ...]], int]:
    """What the runs record: the variables among ``names`` that exist in ``task`` for ``model_kinds`` (from
    their declaration, ``palmc.engine.variables``), the shape of one record of each, and the records per chunk.

    Unless ``chunk_records`` is given, a chunk holds about CHUNK_BYTES_PER_RUN of the largest variable, at most
    MAX_CHUNK_STEPS steps (small networks record few bytes, and a chunk is also the unit of progress reports and
    checkpoints), and at most RECORD_BUFFER_BYTES of records of all variables for the ``runs_per_batch`` runs of
    a batch; never more than the ``n_records``."""
    variables = variables_for(names, task, model_kinds)
    shapes = {v.name: v.record_shape(layers) for v in variables}
    sizes = [math.prod(shape) * 8 for shape in shapes.values()] or [8]
    by_size = CHUNK_BYTES_PER_RUN // max(max(sizes), 1)
    by_buffer = RECORD_BUFFER_BYTES // max(sum(sizes) * runs_per_batch, 1)
    n_records = max(n_records, 1)
    chunk = chunk_records or max(1, min(n_records, by_size, by_buffer, MAX_CHUNK_STEPS // every))
    return variables, shapes, int(max(1, min(chunk, n_records)))


def make_plan(experiment, seeds_per_batch: int | None = None, engine: str | None = None,
              workers: int | None = None, variants_per_batch: int | None = None) -> Plan:
    """Resolve an :class:`~palmc.schema.Experiment` into a :class:`Plan`.

    Without a sweep, the seeds are split evenly over the workers by default (one batch per worker and model
    group). A sweep's batches hold every seed by default and as many variants of one time course as
    ``auto_variants_per_batch`` finds worth it (or ``variants_per_batch``).
    """
    workers = workers or default_workers()
    names = experiment.model_names()
    variants = [
        Variant(index, values, label(values), exp.protocol(), int(exp.recording.every),
                {name: exp.model_params(name) for name in names})
        for index, (values, exp) in enumerate(experiment.iter_variants())
    ]
    swept = experiment.sweep.paths() if experiment.sweep is not None else []
    if seeds_per_batch is None:
        seeds_per_batch = len(experiment.seeds) if swept else max(1, math.ceil(len(experiment.seeds) / workers))
    model_slices = model_groups(names, variants[0].model_params)
    groups = time_course_groups(variants, names)
    widest_group = max(s.stop - s.start for s in model_slices)
    runs_per_variant = min(seeds_per_batch, len(experiment.seeds)) * widest_group
    if variants_per_batch is None:
        variants_per_batch = auto_variants_per_batch(variants, runs_per_variant, workers) if swept else 1
    for group in groups[1:]:  # a divisor of the time-course groups' bounds: every batch is whole chunks
        variants_per_batch = math.gcd(variants_per_batch, group.start)
    batches = make_batches(len(experiment.seeds), model_slices, groups, seeds_per_batch, variants_per_batch)
    model_kinds = {p.model for v in variants for p in v.model_params.values()}
    variables, record_shapes, chunk_records = recording(
        list(experiment.recording.variables), experiment.task, model_kinds, variants[0].model_params[names[0]].layers,
        max(v.n_records for v in variants), min(v.every for v in variants), runs_per_variant * variants_per_batch,
        experiment.recording.chunk_records)
    return Plan(
        name=experiment.name,
        experiment_yaml=experiment.to_yaml(),
        seeds=list(experiment.seeds),
        model_names=names,
        variants=variants,
        swept=swept,
        swept_names=coordinate_names(swept),
        variables=variables,
        record_shapes=record_shapes,
        chunk_records=chunk_records,
        batches=batches,
        engine=engine or experiment.compute.engine,
        seeds_per_batch=seeds_per_batch,
        variants_per_batch=variants_per_batch,
    )
