"""Dask preload module for palmc's workers: load the compiled kernel as soon as a worker starts.

Loading it from numba's cache takes ~1 s per process. Workers of an existing cluster run this with
``dask worker --preload palmc.worker_preload``, so that the load overlaps the worker's registration instead of
delaying its first task; so do palmc's local workers where they are spawned rather than forked
(``start_local_cluster``; forked ones inherit the kernel palmc loaded).
"""

from __future__ import annotations

import threading


def dask_setup(worker: object) -> None:
    """Start loading the kernel in a thread: the worker goes on starting (a task that needs the kernel meanwhile
    waits for numba's lock, then finds it loaded)."""
    threading.Thread(target=_load_kernel, name="palmc-load-kernel", daemon=True).start()


def _load_kernel() -> None:
    from palmc.engine.compiled import driver

    driver.load()
