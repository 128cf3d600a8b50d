"""What palmc may write over or delete: only its own stores, or empty directories, at sensible paths.

A store is recognised by its own metadata (the root ``zarr.json`` of a group whose attributes palmc wrote), never
by its name: ``--overwrite`` must not remove a directory of someone's files that happens to be at the output path.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from palmc.store.lease import LEASE_FILE
from palmc.store.location import StoreLocation
from palmc.store.writer import StoreError

PALMC_ATTRS = ("experiment_sha256", "palmc_version")
"""Attributes every palmc store's root group has (written with the layout)."""


def root_attrs(location: StoreLocation) -> dict | None:
    """The attributes of the Zarr group at ``location``, or None if there is no readable Zarr v3 group."""
    raw = location.read_bytes("zarr.json") if location.exists() else None
    if raw is None:
        return None
    try:
        meta = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(meta, dict) or meta.get("node_type") != "group":
        return None
    attrs = meta.get("attributes")
    return attrs if isinstance(attrs, dict) else {}


def is_palmc_store(location: StoreLocation) -> bool:
    attrs = root_attrs(location)
    return attrs is not None and all(key in attrs for key in PALMC_ATTRS)


def require_palmc_store(location: StoreLocation) -> dict:
    """The store's attributes; :class:`StoreError` if nothing is there or it is not a palmc store."""
    if not location.exists():
        raise StoreError(f"{location} does not exist")
    attrs = root_attrs(location)
    if attrs is None:
        raise StoreError(f"{location} is not a Zarr store (no readable zarr.json group metadata)")
    missing = [key for key in PALMC_ATTRS if key not in attrs]
    if missing:
        raise StoreError(f"{location} is a Zarr store but not one palmc wrote (no {', '.join(missing)} in its "
                         "attributes)")
    return attrs


def check_output_path(location: StoreLocation, given: object) -> None:
    """Refuse output paths that palmc must never lay a store at (and never replace): an empty path, a filesystem
    root, the home directory, the working directory or any of its parents, a bucket's root; and a path below a
    file. ``given`` is what the user wrote (for the message)."""
    if str(given).strip() in ("", "."):
        raise StoreError(f"the output path {str(given)!r} is empty or the current directory; give the path of a "
                         "store to write, e.g. -o results/run.zarr")
    if not location.is_local:
        parts = [part for part in location.root.split("/") if part]
        if len(parts) < 2:
            raise StoreError(f"the output {location} is the root of a bucket or filesystem; give a store path "
                             "inside it, e.g. s3://bucket/run.zarr")
        return
    path = location.path.expanduser().resolve()
    home = Path.home().resolve()
    cwd = Path.cwd().resolve()
    if path == Path(path.anchor) or path == home or cwd == path or path in cwd.parents or os.path.ismount(path):
        raise StoreError(f"the output path {given} ({path}) is a filesystem root, a mount point, the home "
                         "directory or the working directory or one of its parents; give the path of a store, "
                         "e.g. -o results/run.zarr")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise StoreError(f"cannot create the store {given}: {parent} is a file, not a directory")
            break


def check_replaceable(location: StoreLocation) -> None:
    """Refuse to replace anything at ``location`` but a palmc store or an empty directory."""
    if not location.exists():
        return
    if location.is_local:
        path = location.path
        if not path.is_dir():
            raise StoreError(f"{path} is a file, not a palmc store; refusing to replace it (--overwrite replaces "
                             "only palmc stores and empty directories)")
        if _only_a_lease(path):  # empty, or only a lease (this process's: the caller holds it)
            return
    if is_palmc_store(location):
        return
    if not location.is_local and all(key[len(location.root):].lstrip("/").startswith(LEASE_FILE)
                                     for key in location.fs.find(location.root)):
        return  # an object store holding only a lease
    raise StoreError(f"{location} is not a palmc store (no palmc metadata in its zarr.json); refusing to "
                     "replace it (--overwrite replaces only palmc stores and empty directories): choose "
                     "another output path, or move it away yourself")


def _only_a_lease(path: Path) -> bool:
    lease = path / LEASE_FILE
    for entry in path.iterdir():
        if entry.name != lease.parent.name or not entry.is_dir():
            return False
        if any(not inner.name.startswith(lease.name) for inner in entry.iterdir()):
            return False
    return True


STAGING_PARTS = frozenset({"store.zarr", "replaced"})
"""What a staging directory of the layout holds (``writer.create_store``)."""


def remove_stale_staging(location: StoreLocation) -> list[Path]:
    """Remove the staging directories (``.NAME.*``) that an earlier layout of this store left behind (killed
    while laying out). Safe only while holding the store's lease: a layout always holds it, so no live process is
    using them. Only directories of the staging shape are removed; returns them."""
    if not location.is_local:
        return []
    path = location.path
    parent = path.parent
    removed = []
    try:
        candidates = list(parent.glob(f".{path.name}.*"))
    except OSError:
        return []
    for candidate in candidates:
        try:
            if candidate.is_symlink() or not candidate.is_dir():
                continue
            entries = {entry.name for entry in candidate.iterdir()}
            if not entries <= STAGING_PARTS:
                continue
            if "store.zarr" in entries and not is_palmc_store(StoreLocation(candidate / "store.zarr")):
                continue
            shutil.rmtree(candidate)
            removed.append(candidate)
        except OSError:
            continue
    return removed
