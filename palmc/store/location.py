"""Where a store lives: a local directory or an fsspec URL (``s3://bucket/runs/fig3abc.zarr``, ``gs://...``).

Zarr and xarray read and write both kinds themselves; this module gives palmc the few other file operations it
needs (checkpoints and progress files inside the store, existence, removal, size) for either kind. Remote
cluster workers write to the same location, so it must be one that every worker can reach: a shared filesystem
path or an object-store URL (the protocol's fsspec package, e.g. s3fs, must be installed on every worker).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import known_implementations


class MissingFilesystemPackage(Exception):
    """A store URL whose protocol needs a package that is not installed (``s3://`` without s3fs)."""

    def __init__(self, url: str) -> None:
        protocol = url.split("://", 1)[0]
        known = known_implementations.get(protocol, {})
        package = known.get("class", protocol).split(".", 1)[0]
        super().__init__(f"{url}: {protocol}:// stores need the package {package!r}, which is not installed here; "
                         f"install it (pip install {package}) on this machine and on every Dask worker")


class StoreLocation:
    """A store's address. ``str(location)`` is what Zarr and xarray are given (a path, or the URL)."""

    def __init__(self, target: "str | Path | StoreLocation") -> None:
        if isinstance(target, StoreLocation):
            target = target.url
        text = str(target)
        try:
            self.fs, root = fsspec.core.url_to_fs(text)
        except ImportError as err:
            raise MissingFilesystemPackage(text) from err
        self.is_local = isinstance(self.fs, LocalFileSystem)
        # local stores are plain paths (Zarr's fsspec store does not create local directories)
        self.url = root if self.is_local else text
        self.root = root.rstrip("/")

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"StoreLocation({self.url!r})"

    def __fspath__(self) -> str:
        if not self.is_local:
            raise TypeError(f"{self.url} is not a local path")
        return self.url

    @property
    def shared(self) -> bool:
        """Whether other processes see what this one writes here (not so for fsspec's ``memory://``, which lives
        in this process: only thread workers can write it)."""
        return not isinstance(self.fs, MemoryFileSystem)

    @property
    def path(self) -> Path:
        """The local directory (only for local stores)."""
        return Path(self.root)

    def key(self, *parts: str) -> str:
        """The filesystem path of a file inside the store."""
        return "/".join([self.root, *parts])

    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.key(*parts)))

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a file inside the store so that readers see the old or the new content, never a part."""
        target = self.key(*parts)
        if self.is_local:
            folder = os.path.dirname(target)
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target), dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                os.replace(tmp, target)
            except BaseException:  # e.g. a full disk: no partial temp file is left behind
                try:
                    os.remove(tmp)
                except OSError:
                    pass
                raise
        else:  # an object store replaces an object in one PUT
            self.fs.pipe_file(target, data)

    def read_bytes(self, *parts: str) -> bytes | None:
        try:
            return bytes(self.fs.cat_file(self.key(*parts)))
        except FileNotFoundError:
            return None

    def glob(self, pattern: str) -> list[str]:
        return sorted(self.fs.glob(self.key(pattern)))

    def remove(self) -> None:
        self.fs.rm(self.root, recursive=True)

    def size(self) -> int:
        """Bytes stored."""
        return int(self.fs.du(self.root))
