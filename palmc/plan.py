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
from functools import cached_property

import numpy as np

from palmc.engine.params import ModelParams, Protocol, RunSpec
from palmc.engine.variables import Variable, variables_for
from palmc.schema.sweep import coordinate_names, label

CHUNK_BYTES_PER_RUN = 2**20  # target size of one stored chunk of the largest variable
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


@dataclass
class Plan:
    name: str
    experiment_yaml: str
    seeds: list[int]
    model_names: list[str]
    variants: list[Variant]
    swept: list[str]  # swept field paths; empty = no sweep and no 'variant' dim in the store
    batches: list[BatchSpec]
    engine: str
    seeds_per_batch: int
    variables: list[Variable]
    chunk_records_asked: int | None  # the experiment's recording.chunk_records (None: chosen by size)

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
        return len(self.record_steps)

    def coordinate_names(self, reserved: frozenset[str]) -> dict[str, str]:
        """The store coordinate of each swept path, avoiding the names in ``reserved``."""
        return coordinate_names(self.swept, reserved)

    def record_positions(self, variant: Variant) -> np.ndarray:
        """Positions on the store's time axis of ``variant``'s records."""
        return np.searchsorted(self.record_steps, variant.record_steps)

    @cached_property
    def chunk_records(self) -> int:
        """Records per stored chunk along time: the experiment's choice, else about CHUNK_BYTES_PER_RUN of the
        largest variable and at most MAX_CHUNK_STEPS steps (small networks record few bytes, and a chunk is also
        the unit of progress reports and checkpoints); never more than the records of a run."""
        n_records = max(max(v.n_records for v in self.variants), 1)
        if self.chunk_records_asked:
            return int(max(1, min(self.chunk_records_asked, n_records)))
        largest = max((int(np.prod(v.record_shape(self.layers))) * 8 for v in self.variables), default=8)
        by_size = CHUNK_BYTES_PER_RUN // max(largest, 1)
        return int(max(1, min(n_records, by_size, MAX_CHUNK_STEPS // min(v.every for v in self.variants))))

    @property
    def eval_epochs(self) -> np.ndarray:
        """The store's eval_epoch axis (task supervised; else empty): the union of every variant's evaluations."""
        return np.unique(np.array([e for v in self.variants for e in v.protocol.eval_epochs], dtype=np.int64))

    def eval_positions(self, variant: Variant) -> np.ndarray:
        """Positions on the store's eval_epoch axis of ``variant``'s evaluations."""
        return np.searchsorted(self.eval_epochs, np.array(variant.protocol.eval_epochs, dtype=np.int64))

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
        per_record = sum(int(np.prod(v.record_shape(self.layers))) for v in self.variables)
        return per_record * 8 * self.n_records * self.n_runs


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


def make_plan(experiment, seeds_per_batch: int | None = None, engine: str | None = None,
              workers: int | None = None) -> Plan:
    """Resolve an :class:`~palmc.schema.Experiment` into a :class:`Plan`.

    By default the seeds are split evenly over the workers (one batch per worker and model group).
    """
    if seeds_per_batch is None:
        seeds_per_batch = max(1, math.ceil(len(experiment.seeds) / (workers or default_workers())))
    names = experiment.model_names()
    variants = [
        Variant(index, values, label(values), exp.protocol(), int(exp.recording.every),
                {name: exp.model_params(name) for name in names})
        for index, (values, exp) in enumerate(experiment.variants())
    ]
    model_kinds = {p.model for v in variants for p in v.model_params.values()}
    return Plan(
        name=experiment.name,
        experiment_yaml=experiment.to_yaml(),
        seeds=list(experiment.seeds),
        model_names=names,
        variants=variants,
        swept=experiment.sweep.paths() if experiment.sweep is not None else [],
        batches=make_batches(len(experiment.seeds), [model_groups(names, v.model_params) for v in variants],
                             seeds_per_batch),
        engine=engine or experiment.compute.engine,
        seeds_per_batch=seeds_per_batch,
        variables=variables_for(list(experiment.recording.variables), experiment.task, model_kinds),
        chunk_records_asked=experiment.recording.chunk_records,
    )
