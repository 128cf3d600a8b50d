"""The compiled kernel a plan needs, loaded into this process before its batches run: visibly, when that means
compiling it (the first run on a machine)."""

from __future__ import annotations

import sys
from typing import Callable

from palmc.plan import Plan

FIRST_RUN_MESSAGE = "compiling the simulation kernel, once per machine (~1 min; numba caches it on disk)"
SPINNER = "|/-\\"
QUIET_LOAD_SECONDS = 1.0  # a kernel read from numba's cache loads in about this time: say nothing before


def kernel_layouts(plan: Plan) -> set[str]:
    """The compiled kernel layouts (``driver.layout_for_layers``) that the batches of ``plan`` will use (none
    with the NumPy engine)."""
    if plan.engine != "compiled":
        return set()
    from palmc.engine.compiled import driver

    return {driver.layout_for_layers(params.layers) for variant in plan.variants
            for params in variant.model_params.values()}


def load_kernel(plan: Plan) -> None:
    """Load the compiled kernel that the batches of ``plan`` will use into this process (see ``driver.load``)."""
    layouts = kernel_layouts(plan)
    if layouts:
        from palmc.engine.compiled import driver

        if not driver.loaded(layouts):
            driver.load(layouts)


def load_kernel_visibly(plan: Plan, progress: bool = True, say: Callable[[str], None] | None = None) -> None:
    """Load the compiled kernel for ``plan`` into this process, telling the user (``say``, and a spinner with the
    time spent unless not ``progress``) when that means compiling it: at once if numba's cache lacks it (the
    first run on a machine), else if loading takes more than a second."""
    layouts = kernel_layouts(plan)
    if not layouts:
        return
    from palmc.engine.compiled import driver

    if driver.loaded(layouts):
        return
    import threading
    import time

    from tqdm import tqdm

    say = say or (lambda message: None)
    failure: list[BaseException] = []

    def load() -> None:
        try:
            driver.load(layouts)
        except BaseException as err:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(err)

    started = time.perf_counter()
    cached = driver.cached(layouts)  # before the load starts: both would read numba's cache
    worker = threading.Thread(target=load, name="palmc-kernel-load", daemon=True)
    worker.start()
    if cached:
        worker.join(QUIET_LOAD_SECONDS)
    if worker.is_alive():
        if not progress:
            say(f"{FIRST_RUN_MESSAGE} ...")
        with tqdm(desc=f"{FIRST_RUN_MESSAGE} {SPINNER[0]}", bar_format="{desc} {elapsed}", disable=not progress,
                  file=sys.stderr) as spinner:
            ticks = 0
            while worker.is_alive():
                worker.join(0.25)
                ticks += 1
                spinner.set_description_str(f"{FIRST_RUN_MESSAGE} {SPINNER[ticks % len(SPINNER)]}", refresh=True)
            spinner.set_description_str(f"{FIRST_RUN_MESSAGE}: done", refresh=True)
        seconds = time.perf_counter() - started
        say(f"loaded the kernel in {seconds:.0f} s" if cached else
            f"compiled the kernel in {seconds:.0f} s; later runs load it from the cache")
    worker.join()
    if failure:
        raise failure[0]
