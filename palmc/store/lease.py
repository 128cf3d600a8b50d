"""One writer at a time: a lease file in the store names the process writing it.

The lease (``_palmc_checkpoints/lease.json`` in the store: host, pid, a random token, and a heartbeat time refreshed
by a thread while the run lives) is taken before anything of the store is written or replaced. On a local
filesystem it is created with ``O_CREAT | O_EXCL``, so of two processes starting a moment apart exactly one gets
it; the other is refused and told who writes. A lease whose owner is gone (a dead pid on this host, or a
heartbeat older than ``STALE_SECONDS``) is stale: ``--resume`` (or ``--overwrite``) takes it over, by renaming it
away first (a rename succeeds for one process only). Object stores have no exclusive create: there the lease is
written and read back, which catches all but writers starting within the same fraction of a second.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

from palmc.store.location import StoreLocation
from palmc.store.writer import CHECKPOINT_DIR, StoreError

LEASE_FILE = f"{CHECKPOINT_DIR}/lease.json"  # beside the checkpoints: Zarr warns of unknown files at the root
HEARTBEAT_SECONDS = 5.0
STALE_SECONDS = 60.0
"""A heartbeat older than this means the writer is gone (12 missed beats; covers hosts whose pids can't be
checked from here)."""


class StoreBusy(StoreError):
    """Another process holds the store's lease."""


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int
    token: str
    heartbeat: float  # time.time() of the last refresh
    started: float

    @classmethod
    def me(cls) -> "Owner":
        now = time.time()
        return cls(socket.gethostname(), os.getpid(), uuid.uuid4().hex, now, now)

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "Owner | None":
        try:
            raw = json.loads(data)
            return cls(str(raw["host"]), int(raw["pid"]), str(raw["token"]), float(raw["heartbeat"]),
                       float(raw["started"]))
        except (ValueError, KeyError, TypeError):
            return None

    def gone_reason(self, now: float | None = None) -> str | None:
        """Why this owner is no longer writing (dead pid on this host, or an old heartbeat), or None."""
        age = (time.time() if now is None else now) - self.heartbeat
        if self.host == socket.gethostname() and not pid_alive(self.pid):
            return f"process {self.pid} on {self.host} is gone"
        if age > STALE_SECONDS:
            return f"its last heartbeat was {age:.0f} s ago (more than {STALE_SECONDS:.0f} s)"
        return None

    def describe(self) -> str:
        age = max(0.0, time.time() - self.heartbeat)
        return f"process {self.pid} on {self.host} (heartbeat {age:.0f} s ago)"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_owner(location: StoreLocation) -> Owner | None:
    """The lease's owner, or None if no (readable) lease is there."""
    try:
        data = location.read_bytes(LEASE_FILE)
    except OSError:
        return None
    return Owner.from_bytes(data) if data is not None else None


def _create_exclusive(location: StoreLocation, data: bytes, created: list[bool]) -> bool:
    """Create the lease file only if none exists; True if this call created it. Appends to ``created`` if it
    made the store's directory."""
    if location.is_local:
        try:
            os.makedirs(location.path.parent, exist_ok=True)
            os.mkdir(location.path)
            created.append(True)
        except FileExistsError:
            pass
        os.makedirs(location.key(CHECKPOINT_DIR), exist_ok=True)
        try:
            fd = os.open(location.key(LEASE_FILE), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return True
    if location.exists(LEASE_FILE):
        return False
    location.write_bytes(data, LEASE_FILE)
    time.sleep(0.2)  # let a writer that started at the same moment overwrite, then see who won
    return location.read_bytes(LEASE_FILE) == data


class Lease:
    """This process's lease on a store; ``with lease.kept():`` refreshes it in a thread while the block runs."""

    def __init__(self, location: StoreLocation, owner: Owner) -> None:
        self.location, self.owner = location, owner
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.made_directory = False  # the lease created the store's directory (removed on release if still empty)

    @classmethod
    def acquire(cls, location: StoreLocation, take_over_stale: bool) -> tuple["Lease", str | None]:
        """Take the store's lease; returns it and a note if a stale lease was taken over.

        Raises :class:`StoreBusy` naming the owner if another writer holds it (or holds a stale one and
        ``take_over_stale`` is false)."""
        owner = Owner.me()
        note = None
        created: list[bool] = []
        for _ in range(3):
            try:
                if _create_exclusive(location, owner.to_bytes(), created):
                    lease = cls(location, owner)
                    lease.made_directory = bool(created)
                    return lease, note
            except OSError as err:
                raise StoreError(f"cannot write the store {location}: {err.strerror or err}") from err
            current = read_owner(location)
            if current is None:  # being created this very moment, or unreadable: never guess it is free
                time.sleep(0.2)
                current = read_owner(location)
                if current is None:
                    raise StoreBusy(f"{location} has an unreadable lease file {LEASE_FILE}: another palmc process "
                                    "may be starting to write it; try again, or remove the file if none is")
            reason = current.gone_reason()
            if reason is None:
                raise StoreBusy(f"{location} is being written by {current.describe()}; wait for it to end, or "
                                "choose another output")
            if not take_over_stale:
                raise StoreBusy(f"{location} holds the lease of a writer that ended without releasing it ({reason}); "
                                "pass --resume to continue the store (or --overwrite to replace it)")
            if _discard_stale(location, current):
                note = f"took over the lease of {location} from {current.describe()}: {reason}"
        raise StoreBusy(f"{location}: another palmc process took the lease while this one was taking it over")

    def to_bytes(self) -> bytes:
        return self.owner.to_bytes()

    def held(self) -> bool:
        current = read_owner(self.location)
        return current is not None and current.token == self.owner.token

    def refresh(self) -> None:
        """Write a fresh heartbeat (skipped if the lease is not this process's any more, or the store's folder is
        being swapped just now)."""
        if not self.held():
            return
        self.owner = Owner(self.owner.host, self.owner.pid, self.owner.token, time.time(), self.owner.started)
        data = self.owner.to_bytes()
        try:
            if self.location.is_local:
                if not self.location.path.is_dir():
                    return
                tmp = self.location.key(f"{LEASE_FILE}.{self.owner.token}.tmp")
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, self.location.key(LEASE_FILE))
            else:
                self.location.write_bytes(data, LEASE_FILE)
        except OSError:
            pass  # the next beat tries again; a store that cannot be written fails the run itself

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            self.refresh()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._beat, name="palmc-lease", daemon=True)
            self._thread.start()

    def release(self) -> None:
        """Stop the heartbeat and remove the lease if it is still this process's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self.held():
                self.location.fs.rm(self.location.key(LEASE_FILE))
            if self.made_directory and self.location.is_local:
                # only if empty: nothing was laid out after all
                os.rmdir(self.location.key(CHECKPOINT_DIR))
                os.rmdir(self.location.path)
        except OSError:
            pass


def _discard_stale(location: StoreLocation, stale: Owner) -> bool:
    """Remove a stale lease so that one process can create its own; False if another process got there first."""
    if location.is_local:
        aside = location.key(f"{LEASE_FILE}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(location.key(LEASE_FILE), aside)  # one process wins the rename
        except FileNotFoundError:
            return False
        with open(aside, "rb") as f:
            moved = Owner.from_bytes(f.read())
        if moved is not None and moved.token != stale.token:  # renewed meanwhile (not stale): put it back
            os.rename(aside, location.key(LEASE_FILE))
            raise StoreBusy(f"{location} is being written by {moved.describe()}")
        os.remove(aside)
        return True
    try:
        location.fs.rm(location.key(LEASE_FILE))
    except FileNotFoundError:
        return False
    return True
