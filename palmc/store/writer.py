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
from datetime import datetime, timezone
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr

from palmc.plan import BatchSpec, Plan
from palmc.store.layout import record_shape
from palmc.store.location import StoreLocation

CHECKPOINT_DIR = "_palmc_checkpoints"


def record_compressor() -> object:
    """Compressor of the recorded variables: LZ4 with byte shuffle, about 3x less CPU than Zarr's default Zstd
    and smaller on these float records (recording must stay a small part of the run time)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")


class StoreError(Exception):
    """A store cannot be created, written or resumed; the message says why."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _versions() -> dict[str, str]:
    import dask
    import palmc

    return {"palmc": palmc.__version__, "numpy": np.__version__, "xarray": xr.__version__,
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
    from palmc.schema.sweep import coordinate_names, label

    fixed = {"variant", "variant_label", "last_record", "presentation_steps", "steps_total", "record_every_steps"}
    names = coordinate_names(plan.swept, frozenset(taken | fixed))
    coords = {
        "variant": xr.Variable("variant", np.arange(len(plan.variants), dtype=np.int64)),
        "variant_label": xr.Variable("variant", np.array([label(v.values) for v in plan.variants], dtype=object),
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
    for var in plan.variables:
        shape = (plan.n_records, *record_shape(var, layers), *run_shape)
        # one chunk per batch along seed: every writer's region is whole chunks, and few files per write
        chunks = (plan.chunk_records, *record_shape(var, layers), plan.seeds_per_batch, *(1,) * (len(runs) - 1))
        data = da.full(shape, np.nan, chunks=chunks, dtype=np.float64)
        dims = var.dims + (("variant",) if plan.has_variants else ())
        data_vars[var.name] = xr.Variable(dims, data, {
            "long_name": var.long_name, "units": var.units, "symbol": var.symbol},
            encoding={"compressors": (record_compressor(),)})
    data_vars["run_status"] = xr.Variable(runs, np.full(run_shape, "pending", dtype=object), {
        "long_name": "outcome of the run: pending, complete, diverged or failed"})
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
        "steps_total": plan.protocol.total_steps,
        "run_steps_total": plan.total_run_steps,
        "swept": json.dumps(plan.swept),
        "steps_done": 0,
        "status": "running",
        "palmc_version": _versions()["palmc"],
        "versions": json.dumps(_versions()),
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "created": _now(),
        "started": _now(),
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
        if location.is_local:
            _create_local(plan, location.path, lease)
        else:
            if location.exists():
                location.remove()
            _write_template(plan, location.url)
            if lease is not None:
                location.write_bytes(lease[1], lease[0])
    except OSError as err:
        raise StoreError(f"cannot write the store {location}: {err.strerror or err}") from err


def refuse_existing(location: StoreLocation, overwrite: bool) -> None:
    """Raise :class:`StoreError` if a store is already at ``location`` and may not be replaced."""
    if location.exists() and not overwrite:
        raise StoreError(f"{location} already exists; pass --overwrite to replace it or --resume to continue it")


def _write_template(plan: Plan, target: str) -> None:
    template(plan).to_zarr(target, mode="w", compute=False, consolidated=False, zarr_format=3)
    # an (empty) Zarr group, so that readers of the store see the checkpoint folder as part of it
    zarr.open_group(f"{target}/{CHECKPOINT_DIR}", mode="w", zarr_format=3)


def _create_local(plan: Plan, path: Path, lease: tuple[str, bytes] | None) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    except OSError as err:
        raise StoreError(f"cannot create the store {path}: {err.strerror or err}") from err
    try:
        _write_template(plan, str(staging / "store.zarr"))
        if lease is not None:
            (staging / "store.zarr" / lease[0]).write_bytes(lease[1])
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
            self.run_region += (slice(batch.variant, batch.variant + 1),)
        self.n_seed = batch.seeds.stop - batch.seeds.start
        self.n_model = batch.models.stop - batch.models.start
        # where this batch's records go on the store's time axis (all of it, unless variants differ in time)
        self.positions = plan.record_positions(plan.variants[batch.variant])

    def write(self, first_record: int, data: dict[str, np.ndarray]) -> list[tuple[str, tuple]]:
        """Write the batch's records ``first_record ..`` (name -> (n, *record_shape, R), runs seed-major);
        returns (variable, selection) of each write, from which ``integrity.written_keys`` finds the keys."""
        written: list[tuple[str, tuple]] = []
        for name, block in data.items():
            n = block.shape[0]
            block = block.reshape(*block.shape[:-1], self.n_seed, self.n_model, *(1,) * (len(self.run_region) - 2))
            middle = (slice(None),) * (block.ndim - 1 - len(self.run_region))
            where = self.positions[first_record:first_record + n]
            if n and where[-1] - where[0] == n - 1:  # contiguous: a plain region write
                selection = (slice(where[0], where[0] + n), *middle, *self.run_region)
                self.arrays[name][selection] = block
            else:
                selection = (where, *middle, *self.run_region)
                self.arrays[name].oindex[selection] = block
            written.append((name, selection))
        return written


def write_run_status(path: "str | Path | StoreLocation", status: np.ndarray, diverged_step: np.ndarray) -> None:
    """Write the per-run outcome arrays, shape (seed, model[, variant]), in one go (only the coordinator does)."""
    dims = ("seed", "model", "variant")[:status.ndim]
    xr.Dataset({
        "run_status": xr.Variable(dims, status.astype(object)),
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
