"""Where a step stands in the time course: the pattern it presents, whether the PAL noise is redrawn."""

from __future__ import annotations

from numba import njit

from palmc.engine.compiled.jit import JIT, U0, U1


@njit(**JIT, inline="always")
def next_presentation(pattern: int, shown: int, per_pattern: int, n_patterns: int) -> tuple[int, int]:
    """One step on in the presentation sequence: (pattern, steps it was shown), all uint64. Counters, not a
    division per step; the sequence wraps, since settling may outlast an epoch."""
    shown += U1
    if shown == per_pattern:
        shown, pattern = U0, pattern + U1
        if pattern == n_patterns:
            pattern = U0
    return pattern, shown


@njit(**JIT, inline="always")
def redraws(all_zero: bool, counter: int, period: float, period_int: int) -> bool:
    """Whether a layer draws new noise this step (noise.draw_noise): its xi is all zero, or the step counter
    shared by all layers hits the noise period (``period_int``: the period if integral, else 0)."""
    if all_zero or period_int == 1:
        return True
    if period_int > 1:  # an integral period (the usual case): integer modulo, same answer
        return counter % period_int == 0
    return period != 0.0 and (counter % period) == 0.0  # counter % 0.0 is NaN in NumPy: never equal to 0
