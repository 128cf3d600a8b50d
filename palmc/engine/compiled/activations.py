"""The activations of equations.py inside the kernels, chosen by a number per layer (``ACTIVATION_CODES``)."""

from __future__ import annotations

from numba import njit

from palmc.engine import equations as eq
from palmc.engine.compiled.jit import JIT
from palmc.engine.compiled.libm_exp import exp_fast, exp_in_range

ACTIVATION_CODES = {name: code for code, name in enumerate(eq.ACTIVATIONS)}
LOGISTIC, TANH, HARD_SIGMOID = (ACTIVATION_CODES[name] for name in ("logistic", "tanh", "hard_sigmoid"))


@njit(**JIT, inline="always")
def phi(code: int, x: float) -> float:
    """phi(x) of activation number ``code``, with libm."""
    if code == 0:
        return eq.logistic(x)
    if code == 1:
        return eq.tanh(x)
    if code == 2:
        return eq.relu(x)
    if code == 3:
        return eq.soft_relu(x)
    if code == 4:
        return eq.linear(x)
    return eq.hard_sigmoid(x)


@njit(**JIT, inline="always")
def phi_prime(code: int, x: float) -> float:
    """phi'(x) of activation number ``code``."""
    if code == 0:
        return eq.d_logistic(x)
    if code == 1:
        return eq.d_tanh(x)
    if code == 2:
        return eq.d_relu(x)
    if code == 3:
        return eq.d_soft_relu(x)
    if code == 4:
        return eq.d_linear(x)
    return eq.d_hard_sigmoid(x)


@njit(**JIT, inline="always")
def logistic_fast(x: float) -> tuple[float, bool]:
    """The logistic with ``exp_fast``, and whether that was glibc's exp (if not, the caller uses ``phi``)."""
    return eq.logistic_of_exp(exp_fast(-x)), exp_in_range(-x)


@njit(**JIT, inline="always")
def phi4(code: int, x0: float, x1: float, x2: float, x3: float) -> tuple[float, float, float, float, bool]:
    """phi of four neighbours at once (vectorised for the logistic), and whether all were in the fast range.

    When the flag is False the caller recomputes the block with ``phi`` (libm), so results never depend on it.
    """
    if code == 0:
        e0, e1, e2, e3 = exp_fast(-x0), exp_fast(-x1), exp_fast(-x2), exp_fast(-x3)
        ok = exp_in_range(-x0) & exp_in_range(-x1) & exp_in_range(-x2) & exp_in_range(-x3)
        return eq.logistic_of_exp(e0), eq.logistic_of_exp(e1), eq.logistic_of_exp(e2), eq.logistic_of_exp(e3), ok
    return phi(code, x0), phi(code, x1), phi(code, x2), phi(code, x3), True
