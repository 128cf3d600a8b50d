"""What a simulation will do: runs, batches, records and chunks, derived from an experiment.

A *batch* is a rectangular block of runs (a slice of seeds x a slice of models, in one variant of a parameter
sweep) advanced together by one engine call; it is also the unit a Dask task works on and the region of the store
it writes, so the store's chunks (one batch of seeds, one model, one variant per chunk) are always aligned with
every writer's region.

Variants of a sweep may have different time courses (e.g. a longer presentation time): the store's time axis is
then the union of all variants' record steps, and each variant writes its records at its own positions on it.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass

import numpy as np

from palmc.engine.params import ModelParams, Protocol, RunSpec
from palmc.store.layout import Variable, record_shape, variables_for

CHUNK_BYTES_PER_RUN = 2**20  # target size of one stored chunk of the largest variable
STATE_ARRAYS_PER_WEIGHT = 16  # weights, their increments, filtered and previous copies, kernel scratch
STATE_ARRAYS_PER_NEURON = 64  # voltages, rates, their lookaheads and filters, noise, inputs
COORD_BYTES_PER_RECORD = 96  # time, step, epoch (8 bytes each), phase (a Python string) and their temporaries
MAX_CHUNK_STEPS = 2_000_000  # a chunk spans at most this many steps: progress and checkpoints stay frequent


def default_workers() -> int:
    """Worker processes of a local cluster: one per usable core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(frozen=True)
class BatchSpec:
    index: int
    seeds: slice  # indices into Plan.seeds
    models: slice  # indices into Plan.model_names
    variant: int = 0  # index into Plan.variants

    def label(self) -> str:
        return f"batch{self.index:04d}"


@dataclass(frozen=True)
class Variant:
    """One point of a parameter sweep (the only one when there is no sweep): its time course and parameters."""

    index: int
    values: dict[str, object]  # swept field path -> value ({} without a sweep)
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


@dataclass
class Plan:
    name: str
    experiment_yaml: str
    seeds: list[int]
    model_names: list[str]
    variants: list[Variant]
    swept: list[str]  # swept field paths; empty = no sweep and no 'variant' dim in the store
    variables: list[Variable]
    chunk_records: int
    batches: list[BatchSpec]
    engine: str
    seeds_per_batch: int

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
        return hashlib.sha256(self.experiment_yaml.encode()).hexdigest()

    def runs(self, batch: BatchSpec) -> list[RunSpec]:
        """The batch's runs, seed-major (the order of the store's (seed, model) block)."""
        first = self.seeds[0]
        params = self.variants[batch.variant].model_params
        return [
            RunSpec(seed=seed, model_name=name, params=params[name], input_seed=first, teacher_seed_source=first)
            for seed in self.seeds[batch.seeds]
            for name in self.model_names[batch.models]
        ]

    def estimated_store_bytes(self) -> int:
        per_record = sum(math.prod(record_shape(v, self.layers)) for v in self.variables)
        return per_record * 8 * self.n_records * self.n_runs

    def estimated_batch_bytes(self) -> int:
        """Memory a worker needs for the largest batch (an estimate from the sizes alone, nothing allocated): the
        engine's state (about STATE_ARRAYS_PER_WEIGHT arrays the size of the weights, STATE_ARRAYS_PER_NEURON the
        size of the neurons), the input patterns, the recorder's chunk buffers, and copies of the largest
        variable's chunk for writing it."""
        layers = self.layers
        weights = sum(layers[i] * layers[i - 1] for i in range(1, len(layers)))
        neurons = sum(layers)
        runs = max((b.seeds.stop - b.seeds.start) * (b.models.stop - b.models.start) for b in self.batches)
        state = (STATE_ARRAYS_PER_WEIGHT * weights + STATE_ARRAYS_PER_NEURON * neurons) * 8 * runs
        patterns = max(v.protocol.dataset_size for v in self.variants)  # input patterns, targets, orders
        state += patterns * (layers[0] + layers[-1] + runs) * 8
        chunk = sum(math.prod(record_shape(v, layers)) for v in self.variables) * 8 * self.chunk_records * runs
        largest = max((math.prod(record_shape(v, layers)) for v in self.variables), default=0)
        return state + chunk + 2 * largest * 8 * self.chunk_records * runs

    def estimated_coordinator_bytes(self) -> int:
        """Memory of the store's layout in the palmc process: its time coordinates (time, step, epoch, phase:
        about COORD_BYTES_PER_RECORD per record)."""
        return COORD_BYTES_PER_RECORD * self.n_records * max(1, len(self.variants) if self.has_variants else 1)


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


def make_batches(n_seeds: int, groups_per_variant: list[list[slice]], seeds_per_batch: int | None) -> list[BatchSpec]:
    """Split the seeds into batches of ``seeds_per_batch`` (all by default), within each variant's model group."""
    per = n_seeds if not seeds_per_batch else max(1, min(seeds_per_batch, n_seeds))
    batches = []
    for variant, groups in enumerate(groups_per_variant):
        for models in groups:
            for start in range(0, n_seeds, per):
                batches.append(BatchSpec(len(batches), slice(start, min(start + per, n_seeds)), models, variant))
    return batches


def auto_chunk_records(variables: list[Variable], layers: tuple[int, ...], n_records: int, every: int) -> int:
    """Records per chunk: about CHUNK_BYTES_PER_RUN of the largest variable, and at most MAX_CHUNK_STEPS steps
    (small networks record few bytes, and a chunk is also the unit of progress reports and checkpoints)."""
    largest = max((int(np.prod(record_shape(v, layers))) * 8 for v in variables), default=8)
    by_size = CHUNK_BYTES_PER_RUN // max(largest, 1)
    return int(max(1, min(n_records, by_size, MAX_CHUNK_STEPS // every)))


def make_plan(experiment, seeds_per_batch: int | None = None, engine: str | None = None,
              workers: int | None = None) -> Plan:
    """Resolve an :class:`~palmc.schema.Experiment` into a :class:`Plan`.

    By default the seeds are split evenly over the workers (one batch per worker and model group).
    """
    if seeds_per_batch is None:
        seeds_per_batch = max(1, math.ceil(len(experiment.seeds) / (workers or default_workers())))
    names = experiment.model_names()
    variants = [
        Variant(index, values, exp.protocol(), int(exp.recording.every),
                {name: exp.model_params(name) for name in names})
        for index, (values, exp) in enumerate(experiment.variants())
    ]
    any_pal = any(p.model == "PAL" for v in variants for p in v.model_params.values())
    variables = variables_for(list(experiment.recording.variables), experiment.task, any_pal)
    n_records = max(v.n_records for v in variants)
    layers = variants[0].model_params[names[0]].layers
    chunk = experiment.recording.chunk_records or auto_chunk_records(
        variables, layers, max(n_records, 1), min(v.every for v in variants))
    return Plan(
        name=experiment.name,
        experiment_yaml=experiment.to_yaml(),
        seeds=list(experiment.seeds),
        model_names=names,
        variants=variants,
        swept=experiment.sweep.paths() if experiment.sweep is not None else [],
        variables=variables,
        chunk_records=int(max(1, min(chunk, max(n_records, 1)))),
        batches=make_batches(len(experiment.seeds), [model_groups(names, v.model_params) for v in variants],
                             seeds_per_batch),
        engine=engine or experiment.compute.engine,
        seeds_per_batch=seeds_per_batch,
    )
