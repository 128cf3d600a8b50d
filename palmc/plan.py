"""What a simulation will do: runs, batches, records and chunks, derived from an experiment.

A *batch* is a rectangular block of runs (a slice of seeds x a slice of models) advanced together by one
engine call; it is also the unit a Dask task works on and the region of the store it writes, so the store's
chunks (one seed and one model per chunk) are always aligned with every writer's region.
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


def default_workers() -> int:
    """Worker processes of a local cluster: one per usable core."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


@dataclass(frozen=True)
class BatchSpec:
    index: int
    seeds: slice  # indices into Plan.seeds
    models: slice  # indices into Plan.model_names

    def label(self) -> str:
        return f"batch{self.index:04d}"


@dataclass
class Plan:
    name: str
    experiment_yaml: str
    protocol: Protocol
    seeds: list[int]
    model_names: list[str]
    model_params: dict[str, ModelParams]
    variables: list[Variable]
    every: int
    chunk_records: int
    batches: list[BatchSpec]
    engine: str
    seeds_per_batch: int

    @property
    def layers(self) -> tuple[int, ...]:
        return self.model_params[self.model_names[0]].layers

    @property
    def n_records(self) -> int:
        return self.protocol.total_steps // self.every

    @property
    def record_steps(self) -> np.ndarray:
        return np.arange(1, self.n_records + 1, dtype=np.int64) * self.every

    @property
    def n_runs(self) -> int:
        return len(self.seeds) * len(self.model_names)

    @property
    def experiment_sha256(self) -> str:
        return hashlib.sha256(self.experiment_yaml.encode()).hexdigest()

    def runs(self, batch: BatchSpec) -> list[RunSpec]:
        """The batch's runs, seed-major (the order of the store's (seed, model) block)."""
        first = self.seeds[0]
        return [
            RunSpec(seed=seed, model_name=name, params=self.model_params[name], input_seed=first, teacher_seed_source=first)
            for seed in self.seeds[batch.seeds]
            for name in self.model_names[batch.models]
        ]

    def estimated_store_bytes(self) -> int:
        per_record = sum(int(np.prod(record_shape(v, self.layers))) for v in self.variables)
        return per_record * 8 * self.n_records * self.n_runs


def _structure(p: ModelParams) -> tuple:
    return (p.layers, p.activations, p.dt)


def make_batches(n_seeds: int, model_groups: list[slice], seeds_per_batch: int | None) -> list[BatchSpec]:
    """Split the seeds into batches of ``seeds_per_batch`` (all by default), within each model group."""
    per = n_seeds if not seeds_per_batch else max(1, min(seeds_per_batch, n_seeds))
    batches = []
    for models in model_groups:
        for start in range(0, n_seeds, per):
            batches.append(BatchSpec(len(batches), slice(start, min(start + per, n_seeds)), models))
    return batches


def auto_chunk_records(variables: list[Variable], layers: tuple[int, ...], n_records: int) -> int:
    largest = max((int(np.prod(record_shape(v, layers))) * 8 for v in variables), default=8)
    return int(max(1, min(n_records, CHUNK_BYTES_PER_RUN // max(largest, 1))))


def make_plan(experiment, seeds_per_batch: int | None = None, engine: str | None = None,
              workers: int | None = None) -> Plan:
    """Resolve an :class:`~palmc.schema.Experiment` into a :class:`Plan`.

    By default the seeds are split evenly over the workers (one batch per worker and model group).
    """
    if seeds_per_batch is None:
        seeds_per_batch = max(1, math.ceil(len(experiment.seeds) / (workers or default_workers())))
    names = experiment.model_names()
    params = {name: experiment.model_params(name) for name in names}
    # models that share layers/activations/dt advance in one batch; otherwise each model group alone
    groups: list[slice] = []
    start = 0
    for i in range(1, len(names) + 1):
        if i == len(names) or _structure(params[names[i]]) != _structure(params[names[start]]):
            groups.append(slice(start, i))
            start = i
    protocol = experiment.protocol()
    any_pal = any(p.model == "PAL" for p in params.values())
    variables = variables_for(list(experiment.recording.variables), protocol.task, any_pal)
    every = int(experiment.recording.every)
    n_records = protocol.total_steps // every
    layers = params[names[0]].layers
    chunk = experiment.recording.chunk_records or auto_chunk_records(variables, layers, max(n_records, 1))
    return Plan(
        name=experiment.name,
        experiment_yaml=experiment.to_yaml(),
        protocol=protocol,
        seeds=list(experiment.seeds),
        model_names=names,
        model_params=params,
        variables=variables,
        every=every,
        chunk_records=int(max(1, min(chunk, max(n_records, 1)))),
        batches=make_batches(len(experiment.seeds), groups, seeds_per_batch),
        engine=engine or experiment.compute.engine,
        seeds_per_batch=seeds_per_batch,
    )
