"""Integrity of a store: what each batch wrote, and whether it is still there unchanged.

After each write a batch records, for every store key (file or object) the write touched, its size and CRC-32 as
the store holds it then, in its manifest ``_palmc_checkpoints/batchNNNN.chunks.json`` (next to its progress file
and checkpoint). The keys are derived from the arrays' storage grid (chunks, or shards when the arrays are
sharded), so the check holds for either layout. A key the write left absent (Zarr does not store a chunk that is
all fill value) is recorded as such. :func:`verify` compares the store with the manifests and loads every
checkpoint; ``--resume`` re-runs the batches it finds damaged from their start.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from itertools import product
from typing import Any, Sequence

import numpy as np

from palmc.store.location import StoreLocation
from palmc.store.writer import CHECKPOINT_DIR, load_checkpoint_bytes

MANIFEST_SUFFIX = ".chunks.json"


def manifest_name(label: str) -> str:
    return f"{label}{MANIFEST_SUFFIX}"


def written_keys(array: Any, selection: Sequence[object]) -> list[str]:
    """Store keys of ``array`` (a zarr.Array) that a write of ``selection`` (per dim: a slice or an index array)
    touches."""
    grid = array.shards or array.chunks
    ranges: list[Sequence[int]] = []
    for part, size, step in zip(selection, array.shape, grid):
        if isinstance(part, slice):
            start, stop, _ = part.indices(size)
            ranges.append(range(start // step, (stop - 1) // step + 1) if stop > start else range(0))
        else:
            ranges.append(sorted({int(i) // step for i in np.asarray(part).ravel()}))
    prefix = f"{array.path}/" if array.path else ""
    return [prefix + array.metadata.encode_chunk_key(coords) for coords in product(*ranges)]


def describe_key(location: StoreLocation, key: str) -> list[int] | None:
    """[size, crc32] of the stored key, or None if it is absent."""
    data = location.read_bytes(key)
    if data is None:
        return None
    return [len(data), zlib.crc32(data)]


class Manifest:
    """A batch's record of the keys it wrote (key -> [size, crc32], or None when the write stored nothing)."""

    def __init__(self, location: StoreLocation, label: str, chunks: dict[str, list[int] | None] | None = None):
        self.location, self.label = location, label
        self.chunks: dict[str, list[int] | None] = dict(chunks or {})

    @classmethod
    def load(cls, location: StoreLocation, label: str) -> "Manifest":
        """The batch's manifest (empty if it has none); :class:`ValueError` if it is unreadable."""
        data = location.read_bytes(CHECKPOINT_DIR, manifest_name(label))
        if data is None:
            return cls(location, label)
        raw = json.loads(data)
        chunks = raw["chunks"]
        if not isinstance(chunks, dict):
            raise ValueError("'chunks' is not a mapping")
        return cls(location, label, chunks)

    def record(self, keys: Sequence[str]) -> None:
        for key in keys:
            self.chunks[key] = describe_key(self.location, key)

    def save(self) -> None:
        data = json.dumps({"batch": self.label, "chunks": self.chunks}, separators=(",", ":")).encode()
        self.location.write_bytes(data, CHECKPOINT_DIR, manifest_name(self.label))


@dataclass(frozen=True)
class Damage:
    batch: str
    variable: str  # "" for a batch's own files (checkpoint, manifest)
    key: str
    what: str

    def __str__(self) -> str:
        where = f"variable {self.variable}, " if self.variable else ""
        return f"{self.batch}: {where}{self.key}: {self.what}"


def _labels(location: StoreLocation, suffix: str) -> list[str]:
    names = [key.rsplit("/", 1)[-1] for key in location.glob(f"{CHECKPOINT_DIR}/*{suffix}")]
    return sorted(name[: -len(suffix)] for name in names)


def verify(location: "StoreLocation | str", checksums: bool = True) -> list[Damage]:
    """Every missing or damaged chunk of the store (by batch and variable), damaged checkpoints and unreadable
    manifests. Without ``checksums`` only presence and size are checked (no data read)."""
    location = StoreLocation(location)
    damage: list[Damage] = []
    for label in _labels(location, MANIFEST_SUFFIX):
        try:
            manifest = Manifest.load(location, label)
        except (ValueError, KeyError, TypeError) as err:
            damage.append(Damage(label, "", f"{CHECKPOINT_DIR}/{manifest_name(label)}", f"unreadable manifest ({err})"))
            continue
        for key, expected in sorted(manifest.chunks.items()):
            if expected is None:
                continue
            variable = key.split("/", 1)[0]
            if checksums:
                found = describe_key(location, key)
            else:
                found = [_size(location, key), expected[1]]
                found = None if found[0] is None else found
            if found is None:
                damage.append(Damage(label, variable, key, "missing"))
            elif found[0] != expected[0]:
                damage.append(Damage(label, variable, key, f"{found[0]} bytes, {expected[0]} written"))
            elif found[1] != expected[1]:
                damage.append(Damage(label, variable, key, "contents changed (checksum differs)"))
    if checksums:
        for label in _labels(location, ".npz"):
            data = location.read_bytes(CHECKPOINT_DIR, f"{label}.npz")
            try:
                load_checkpoint_bytes(data or b"")
            except ValueError as err:
                damage.append(Damage(label, "", f"{CHECKPOINT_DIR}/{label}.npz", f"damaged checkpoint ({err})"))
    return damage


def _size(location: StoreLocation, key: str) -> int | None:
    try:
        return int(location.fs.size(location.key(key)))
    except FileNotFoundError:
        return None


def reset_batch(location: StoreLocation, label: str) -> None:
    """Forget a batch's checkpoint, manifest and progress so that it runs again from its start."""
    for name in (f"{label}.npz", manifest_name(label), f"{label}.progress.json"):
        if location.exists(CHECKPOINT_DIR, name):
            location.fs.rm(location.key(CHECKPOINT_DIR, name))


def summarise(damage: Sequence[Damage], limit: int = 20) -> str:
    batches = sorted({d.batch for d in damage})
    lines = [f"{len(damage)} problem(s) in {len(batches)} batch(es) ({', '.join(batches)}):"]
    lines += [f"  {d}" for d in damage[:limit]]
    if len(damage) > limit:
        lines.append(f"  ... and {len(damage) - limit} more")
    return "\n".join(lines)


__all__ = ["Damage", "Manifest", "reset_batch", "summarise", "verify", "written_keys"]
