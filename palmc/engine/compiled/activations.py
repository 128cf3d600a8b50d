"""The activations of equations.py inside the kernels, chosen by a number per layer (``ACTIVATION_CODES``)."""

from __future__ import annotations

from typing import Callable

from numba import njit

from palmc.engine import equations as eq
from palmc.engine.compiled.codegen import compile_kernel, fill
from palmc.engine.compiled.jit import JIT
from palmc.engine.compiled.libm_exp import exp_fast, exp_in_range

ACTIVATION_CODES = {name: code for code, name in enumerate(eq.ACTIVATIONS)}
LOGISTIC, TANH, HARD_SIGMOID = (ACTIVATION_CODES[name] for name in ("logistic", "tanh", "hard_sigmoid"))


# phi(x) and phi'(x) of activation number ``code``, with libm: an ``if`` per activation of eq.ACTIVATIONS
DISPATCH = """
def $name(code, x):
    $cases
    return eq.$otherwise(x)
"""
CASE = """
if code == $code:
    return eq.$function(x)
"""


def _dispatch(name: str, which: int) -> Callable[[int, float], float]:
    """The function ``name(code, x)``: element ``which`` (0: phi, 1: phi') of eq.ACTIVATIONS[code]."""
    functions = [pair[which].__name__ for pair in eq.ACTIVATIONS.values()]
    cases = "\n".join(fill(CASE, code=str(code), function=f) for code, f in enumerate(functions[:-1]))
    return compile_kernel(fill(DISPATCH, name=name, cases=cases, otherwise=functions[-1]) + "\n", name, globals(),
                          dict(JIT, inline="always"))


phi = _dispatch("phi", 0)
phi_prime = _dispatch("phi_prime", 1)


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
