"""The Zarr store: a template created once, chunk-aligned region writes, checkpoints and status.

Pattern (robust against the known xarray/Zarr traps): the whole store is laid out once with
``to_zarr(compute=False)`` (metadata and coordinates only); each batch then writes whole time chunks of its own
(seed, model) block with ``region=``. A batch's checkpoint (full engine state and random generators) is saved
atomically after each chunk it wrote, so a killed run resumes exactly where its data end.
"""

from __future__ import annotations

import getpass
import io
import json
import os
import platform
import shutil
import socket
import tempfile
import zipfile
import zlib
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from palmc.engine.variables import EVALUATION_DIMS, EVALUATION_VARIABLES
from palmc.plan import CHUNK_BYTES_PER_RUN, BatchSpec, Plan
from palmc.store.layout import attributes, encode_run_status, run_status_attrs, store_dims
from palmc.store.location import StoreLocation
from palmc.version import __version__

CHECKPOINT_DIR = "_palmc_checkpoints"


def record_compressor() -> object:
    """Compressor of the recorded variables: LZ4 with byte shuffle, about 3x less CPU than Zarr's default Zstd
    and smaller on these float records (recording must stay a small part of the run time)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


class StoreError(Exception):
    """A store cannot be created, written or resumed; the message says why."""


def now() -> str:
    """The current UTC time as the store's attributes give it."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import dask

    return {"palmc": __version__, "numpy": np.__version__, "xarray": xr.__version__,
            "zarr": zarr.__version__, "dask": dask.__version__, "python": platform.python_version()}


def _epochs(steps: np.ndarray, settling: int, per_epoch: int) -> np.ndarray:
    return np.where(steps <= settling, 0, (steps - settling - 1) // per_epoch + 1).astype(np.int64)


def _time_coords(plan: Plan) -> dict[str, xr.Variable]:
    steps = plan.record_steps
    S = plan.protocol.settling_steps  # shared by all variants (the schema refuses to sweep it)
    dt = plan.model_params[plan.model_names[0]].dt
    protocols = {(v.protocol.settling_steps, v.protocol.steps_per_epoch) for v in plan.variants}
    if len(protocols) == 1:
        epoch = xr.Variable("time", _epochs(steps, S, plan.protocol.steps_per_epoch), {"long_name": "epoch (0 = settling)"})
    else:  # each variant has its own epochs; -1 where a variant has no record
        table = np.full((len(steps), len(plan.variants)), -1, dtype=np.int64)
        for v in plan.variants:
            table[plan.record_positions(v), v.index] = _epochs(v.record_steps, S, v.protocol.steps_per_epoch)
        epoch = xr.Variable(("time", "variant"), table, {"long_name": "epoch (0 = settling, -1 = no record)"})
    phase = np.array(["settling" if k <= S else "training" for k in steps], dtype=object)
    return {
        "time": xr.Variable("time", steps * dt, {"units": "ms", "long_name": "time at the end of the recorded step"}),
        "step": xr.Variable("time", steps, {"long_name": "integration steps done"}),
        "epoch": epoch,
        "phase": xr.Variable("time", phase, {"long_name": "settling or training"}),
    }


def _variant_coords(plan: Plan, taken: set[str]) -> dict[str, xr.Variable]:
    """Coordinates along 'variant': index, label, the swept values and each variant's time course."""
    fixed = {"variant", "variant_label", "last_record", "presentation_steps", "steps_total", "record_every_steps"}
    # a swept field is named as in the labels, unless the store has a coordinate of that name: then by its whole
    # path (as the sweep names fields whose last parts are the same)
    names = {path: path.replace(".", "_") if name in taken | fixed else name for path, name in plan.swept_names.items()}
    coords = {
        "variant": xr.Variable("variant", np.arange(len(plan.variants), dtype=np.int64)),
        "variant_label": xr.Variable("variant", np.array([v.label for v in plan.variants], dtype=object),
                                     {"long_name": "swept values of the variant"}),
    }
    for path, name in names.items():
        values = [v.values[path] for v in plan.variants]
        as_text = any(isinstance(x, (list, tuple, dict)) for x in values)
        data = np.array([json.dumps(x) for x in values], dtype=object) if as_text else np.asarray(values)
        coords[name] = xr.Variable("variant", data, {"long_name": f"swept field {path}"})
    positions = [plan.record_positions(v) for v in plan.variants]
    coords["last_record"] = xr.Variable(
        "variant", np.array([p[-1] if len(p) else -1 for p in positions], dtype=np.int64),
        {"long_name": "index along time of the variant's last record (later records are NaN)"})
    coords["presentation_steps"] = xr.Variable(
        "variant", np.array([v.protocol.steps_per_presentation for v in plan.variants], dtype=np.int64),
        {"long_name": "integration steps per sample presentation (Tpres / dt)"})
    coords["steps_total"] = xr.Variable(
        "variant", np.array([v.protocol.total_steps for v in plan.variants], dtype=np.int64),
        {"long_name": "integration steps per run"})
    coords["record_every_steps"] = xr.Variable(
        "variant", np.array([v.every for v in plan.variants], dtype=np.int64),
        {"long_name": "integration steps between records"})
    return coords


def run_dims(plan: Plan) -> tuple[str, ...]:
    """Dims of one run's position in the store: (seed, model) or (seed, model, variant)."""
    return ("seed", "model", "variant") if plan.has_variants else ("seed", "model")


def run_chunks(plan: Plan) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Chunk and shard shapes along the run dims (seed, model[, variant]).

    A shard, one file, holds a whole batch's region, so a store has about (variables x time chunks x batches)
    files however many variants it has, and each batch writes whole shards of its own. A chunk holds one batch
    of seeds of one model and of one variant (what a reader of one run reads), or of as many variants as make
    it CHUNK_BYTES_PER_RUN of the largest variable (tiny chunks cost more to write and read than they hold).
    """
    one_model_group = len({(b.models.start, b.models.stop) for b in plan.batches}) == 1
    models = plan.batches[0].models.stop - plan.batches[0].models.start if one_model_group else 1
    chunk: tuple[int, ...] = (plan.seeds_per_batch, 1)
    shard: tuple[int, ...] = (plan.seeds_per_batch, models)
    if plan.has_variants:
        per_variant = plan.chunk_records * plan.seeds_per_batch * max(
            (int(np.prod(shape)) * 8 for shape in plan.record_shapes.values()), default=8)
        wanted = max(1, CHUNK_BYTES_PER_RUN // per_variant)
        variants = max(d for d in range(1, plan.variants_per_batch + 1)
                       if plan.variants_per_batch % d == 0 and d <= wanted)
        chunk, shard = chunk + (variants,), shard + (plan.variants_per_batch,)
    return chunk, shard


def template(plan: Plan) -> xr.Dataset:
    """The lazy, all-NaN dataset with the store's full shape, coordinates and attributes."""
    layers = plan.layers
    width = max(layers)
    runs = run_dims(plan)
    run_shape = (len(plan.seeds), len(plan.model_names)) + ((len(plan.variants),) if plan.has_variants else ())
    coords: dict[str, object] = dict(_time_coords(plan))
    params = [plan.model_params[m] for m in plan.model_names]
    coords.update({
        "layer": ("layer", np.arange(len(layers), dtype=np.int64), {"long_name": "network layer (0 = input)"}),
        "layer_size": ("layer", np.asarray(layers, dtype=np.int64), {"long_name": "neurons in the layer"}),
        "neuron": ("neuron", np.arange(width, dtype=np.int64)),
        "pre": ("pre", np.arange(width, dtype=np.int64), {"long_name": "presynaptic neuron"}),
        "seed": ("seed", np.asarray(plan.seeds, dtype=np.int64)),
        "model": ("model", np.array(plan.model_names, dtype=object)),
        "model_kind": ("model", np.array([p.model for p in params], dtype=object)),
        "activation": (("layer", "model"),
                       np.array([[""] + list(p.activations) for p in params], dtype=object).T),
    })
    for g in ("gl", "gbas", "gapi", "gden", "gnI", "gntgt"):
        # per variant too when swept, so that metrics using them broadcast over variants correctly
        table = np.array([[getattr(v.model_params[m], g) for v in plan.variants] for m in plan.model_names])
        if plan.has_variants:
            coords[g] = (("model", "variant"), table, {"units": "1/ms"})
        else:
            coords[g] = ("model", table[:, 0], {"units": "1/ms"})
    if plan.has_variants:
        coords.update(_variant_coords(plan, set(coords)))

    data_vars = {}
    chunk_runs, shard_runs = run_chunks(plan)
    for var in plan.variables:
        record = plan.record_shapes[var.name]
        shape = (plan.n_records, *record, *run_shape)
        chunks = (plan.chunk_records, *record, *chunk_runs)
        shards = (plan.chunk_records, *record, *shard_runs)
        encoding: dict[str, object] = {"compressors": (record_compressor(),), "chunks": chunks}
        if shards != chunks:
            encoding["shards"] = shards
        data = da.full(shape, np.nan, chunks=shards, dtype=np.float64)
        data_vars[var.name] = xr.Variable(store_dims(var, plan.has_variants), data, attributes(var),
                                          encoding=encoding)
    eval_epochs = plan.eval_epochs
    if len(eval_epochs):
        coords["eval_epoch"] = ("eval_epoch", eval_epochs, {"long_name": "epochs done at the evaluation (0 = after "
                                                                          "settling, before training)"})
        for var in EVALUATION_VARIABLES.values():
            # one chunk per evaluation and batch region: each evaluation is written when it is done (resume
            # stays exact), by its batch alone
            data = da.full((len(eval_epochs), *run_shape), np.nan, chunks=(1, *shard_runs), dtype=np.float64)
            data_vars[var.name] = xr.Variable(EVALUATION_DIMS + runs[2:], data,
                                              {"long_name": var.long_name, "units": var.units})
    data_vars["run_status"] = xr.Variable(runs, encode_run_status(np.full(run_shape, "pending")), run_status_attrs())
    data_vars["diverged_step"] = xr.Variable(runs, np.full(run_shape, -1, dtype=np.int64), {
        "long_name": "first recorded step with a non-finite state (-1: never)"})
    p0 = params[0]
    attrs = {
        "title": f"palmc simulation: {plan.name}",
        "name": plan.name,
        "experiment": plan.experiment_yaml,
        "experiment_sha256": plan.experiment_sha256,
        "task": plan.protocol.task,
        "dt": p0.dt,
        "Tpres": p0.Tpres,
        "record_every_steps": plan.every,
        "engine": plan.engine,
        "seeds_per_batch": plan.seeds_per_batch,
        "variants_per_batch": plan.variants_per_batch,
        "steps_total": plan.protocol.total_steps,
        "settling_steps": plan.protocol.settling_steps,
        "run_steps_total": plan.total_run_steps,
        "swept": json.dumps(plan.swept),
        "steps_done": 0,
        "status": "running",
        "palmc_version": _versions()["palmc"],
        "versions": json.dumps(_versions()),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "created": now(),
        "started": now(),
    }
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def create_store(plan: Plan, path: "str | Path | StoreLocation", overwrite: bool = False,
                 lease: tuple[str, bytes] | None = None) -> None:
    """Lay out a new store (metadata and coordinates only).

    An existing store is replaced only with ``overwrite``. A local store is built next to the old one and swapped
    in, so a failure leaves the old one untouched; a URL's old store is removed first (object stores cannot swap).
    ``lease`` (file name, content) is the writer's lease (``palmc.store.lease``): the caller holds it and has
    checked what may be replaced; it is part of the new store from its first moment.
    """
    location = StoreLocation(path)
    if lease is None:
        refuse_existing(location, overwrite)
    try:
        with _new_store_at(location) as target:
            _write_template(plan, target)
            if lease is not None:  # part of the new store from its first moment
                StoreLocation(target).write_bytes(lease[1], lease[0])
    except OSError as err:
        raise StoreError(f"cannot write the store {location}: {err.strerror or err}") from err


def prepare_store(plan: Plan, store: StoreLocation, overwrite: bool, resume: bool, pid: int | None = None,
                  lease: tuple[str, bytes] | None = None) -> None:
    """Create the store, or check that an existing one can be resumed; ``pid`` (default: this process) is the
    process recorded as running it, ``lease`` the writer's lease (``create_store``)."""
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
        update_attrs(store, status="running", pid=pid, host=socket.gethostname(), resumed=now())
        return
    create_store(plan, store, overwrite=overwrite, lease=lease)
    update_attrs(store, pid=pid)


def finish_store(path: "str | Path | StoreLocation", status: np.ndarray, diverged_step: np.ndarray,
                 steps_total: int) -> None:
    """Write the runs' outcomes (:func:`write_run_status`) and mark the store complete, or failed if a run failed."""
    write_run_status(path, status, diverged_step)
    failed = bool((status == "failed").any())
    update_attrs(path, status="failed" if failed else "complete", steps_done=0 if failed else steps_total,
                 ended=now())


def refuse_existing(location: StoreLocation, overwrite: bool) -> None:
    """Raise :class:`StoreError` if a store is already at ``location`` and may not be replaced."""
    if location.exists() and not overwrite:
        raise StoreError(f"{location} already exists; pass --overwrite to replace it or --resume to continue it")


def _write_template(plan: Plan, target: str) -> None:
    template(plan).to_zarr(target, mode="w", compute=False, consolidated=False, zarr_format=3)
    # an (empty) Zarr group, so that readers of the store see the checkpoint folder as part of it
    zarr.open_group(f"{target}/{CHECKPOINT_DIR}", mode="w", zarr_format=3)


@contextmanager
def _new_store_at(location: StoreLocation) -> Iterator[str]:
    """Where to write a new store: for a local store, a staging folder next to it that replaces the old store
    when the block ends without error (a failure leaves the old one untouched); for a URL, the URL itself, its
    old store removed first (object stores cannot swap)."""
    if not location.is_local:
        if location.exists():
            location.remove()
        yield location.url
        return
    path = location.path
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    except OSError as err:
        raise StoreError(f"cannot create the store {path}: {err.strerror or err}") from err
    try:
        yield str(staging / "store.zarr")
        if path.exists():
            # moved aside (not deleted) first: the path is free for the shortest time, and only this rename
            # and the next touch it
            os.rename(path, staging / "replaced")
        try:
            os.rename(staging / "store.zarr", path)
        except OSError as err:  # another process created the path in between
            raise StoreError(f"{path} was created by another process while this one laid out the store; this "
                             f"run stops ({err.strerror or err})") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class ChunkWriter:
    """Writes whole time chunks of one batch into its region of an existing store.

    The store's layout was fixed by :func:`create_store`, so the writer goes straight to the Zarr arrays
    (xarray's region checks cost more than the write itself for small chunks). Every region is a whole number
    of chunks along time, seed and model, so writers of different batches never touch the same chunk.
    """

    def __init__(self, path: "str | Path | StoreLocation", plan: Plan, batch: BatchSpec) -> None:
        group = zarr.open_group(str(StoreLocation(path)), mode="r+", zarr_format=3)
        self.arrays = {var.name: group[var.name] for var in plan.variables}
        self.run_region: tuple[slice, ...] = (batch.seeds, batch.models)
        if plan.has_variants:
            self.run_region += (batch.variants,)
        self.run_shape = batch.shape if plan.has_variants else batch.shape[:2]
        # where this batch's records go on the store's time axis (all of it, unless variants differ in time)
        self.positions = plan.record_positions(plan.batch_variant(batch))
        self.eval_arrays = ({name: group[name] for name in EVALUATION_VARIABLES} if len(plan.eval_epochs) else {})
        self.eval_positions = plan.eval_positions(plan.batch_variant(batch))

    def write(self, first_record: int, data: dict[str, np.ndarray]) -> list[tuple[str, tuple]]:
        """Write the batch's records ``first_record ..`` (name -> (n, *record_shape, R), runs in the order of
        ``Plan.runs``); returns (variable, selection) of each write, from which ``integrity.written_keys`` finds
        the keys."""
        written: list[tuple[str, tuple]] = []
        for name, block in data.items():
            n = block.shape[0]
            block = block.reshape(*block.shape[:-1], *self.run_shape)
            middle = (slice(None),) * (block.ndim - 1 - len(self.run_region))
            where = self.positions[first_record:first_record + n]
            if n and where[-1] - where[0] == n - 1:  # contiguous: a plain region write
                selection = (slice(where[0], where[0] + n), *middle, *self.run_region)
                self.arrays[name][selection] = block
            elif n:  # scattered along time: this batch's own region of the span, read, filled in and written back
                # (Zarr 3.1's orthogonal writes into sharded arrays fail)
                selection = (slice(where[0], where[-1] + 1), *middle, *self.run_region)
                region = self.arrays[name][selection]
                region[where - where[0]] = block
                self.arrays[name][selection] = region
            else:
                continue
            written.append((name, selection))
        return written

    def write_evaluation(self, index: int, results: dict[str, np.ndarray]) -> list[tuple[str, tuple]]:
        """Write the batch's results of its ``index``-th evaluation (name -> (R,), runs in the order of
        ``Plan.runs``); returns (variable, selection) of each write, as ``write``."""
        where = int(self.eval_positions[index])
        written: list[tuple[str, tuple]] = []
        for name, values in results.items():
            block = np.asarray(values, dtype=np.float64).reshape(1, *self.run_shape)
            selection = (slice(where, where + 1), *self.run_region)
            self.eval_arrays[name][selection] = block
            written.append((name, selection))
        return written


def write_run_status(path: "str | Path | StoreLocation", status: np.ndarray, diverged_step: np.ndarray) -> None:
    """Write the per-run outcome arrays, shape (seed, model[, variant]), in one go (only the coordinator does)."""
    dims = ("seed", "model", "variant")[:status.ndim]
    xr.Dataset({
        "run_status": xr.Variable(dims, encode_run_status(status)),
        "diverged_step": xr.Variable(dims, diverged_step.astype(np.int64)),
    }).to_zarr(str(StoreLocation(path)), region={d: slice(None) for d in dims}, consolidated=False, zarr_format=3)


def update_attrs(path: "str | Path | StoreLocation", **attrs: object) -> None:
    group = zarr.open_group(str(StoreLocation(path)), mode="r+", zarr_format=3)
    group.attrs.update(attrs)


def read_attrs(path: "str | Path | StoreLocation") -> dict:
    return dict(zarr.open_group(str(StoreLocation(path)), mode="r", zarr_format=3).attrs)


# -- checkpoints ----------------------------------------------------------------------------------------
def checkpoint_name(batch: BatchSpec) -> str:
    return f"{batch.label()}.npz"


def save_checkpoint(path: "str | Path | StoreLocation", batch: BatchSpec, payload: dict[str, np.ndarray]) -> None:
    """Write a checkpoint atomically: a reader sees the previous one or this one, never a part."""
    buffer = io.BytesIO()
    np.savez(buffer, **payload)
    StoreLocation(path).write_bytes(buffer.getvalue(), CHECKPOINT_DIR, checkpoint_name(batch))


def load_checkpoint(path: "str | Path | StoreLocation", batch: BatchSpec) -> dict[str, np.ndarray] | None:
    """The batch's checkpoint, or None if it has none; :class:`ValueError` if it is damaged."""
    data = StoreLocation(path).read_bytes(CHECKPOINT_DIR, checkpoint_name(batch))
    if data is None:
        return None
    return load_checkpoint_bytes(data)


def load_checkpoint_bytes(data: bytes) -> dict[str, np.ndarray]:
    """Every array of a checkpoint file's bytes (all read, so that each is CRC-checked); :class:`ValueError`
    names what is wrong when the file is damaged (truncated, altered)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, KeyError, zlib.error) as err:
        raise ValueError(f"{type(err).__name__}: {err}") from None
