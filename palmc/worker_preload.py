"""Dask preload module for palmc's workers: load the compiled kernel as soon as a worker starts.

Loading it from numba's cache takes ~1 s per process. palmc's local workers run this (``start_local_cluster``),
so that the load overlaps the worker's registration and the store's layout instead of delaying the first task;
workers of an existing cluster can do the same with ``dask worker --preload palmc.worker_preload``.
"""

from __future__ import annotations

import threading


def dask_setup(worker: object) -> None:
    """Start loading the kernel in a thread: the worker goes on starting (a task that needs the kernel meanwhile
    waits for numba's lock, then finds it loaded)."""
    threading.Thread(target=_load_kernel, name="palmc-load-kernel", daemon=True).start()


def _load_kernel() -> None:
    from palmc.engine import kernel

    kernel.load()
