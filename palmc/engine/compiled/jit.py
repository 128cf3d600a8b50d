"""numba set-up shared by the compiled engine: compile options, equations.py made callable inline, the cache key.

Every function of :mod:`palmc.engine.equations` is registered here as an inline overload of itself, so a kernel
calls ``eq.pal_feedback_increment(...)`` and numba splices the function's body into the loop at IR level (no call,
no cost). The two NumPy primitives numba lacks get scalar versions here.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import FunctionType

import numpy as np
from numba.core import caching
from numba.extending import overload

from palmc.engine import equations as eq

# numba options of every compiled function: cached on disk, NumPy's float semantics (no ZeroDivisionError), and
# no GIL, so that threads advancing different batches run in parallel (nothing here touches Python objects)
JIT: dict[str, object] = dict(cache=True, error_model="numpy", nogil=True)

# unsigned index constants: numba checks signed indices for negative values at every access, which blocks
# vectorisation; loops and index arithmetic in the kernels stay unsigned with these
U0, U1, U2, U3, U4, U5, U6, U7, U8 = (np.uint64(v) for v in range(9))


def _kernel_options() -> dict[str, object]:
    """numba options of the kernels: no-alias arguments when this numba lets us ask for them.

    The kernels' arrays never overlap; telling LLVM so lets it vectorise more. numba has the flag but no public
    option for it; without it the kernels compute the same, only slower.
    """
    try:
        from numba.core import compiler, cpu, options

        if not hasattr(cpu.CPUTargetOptions, "noalias"):
            cpu.CPUTargetOptions.noalias = options.TargetOptions.Mapping("noalias")
        if not cpu.CPUTargetOptions.parse_as_flags(compiler.Flags(), {"noalias": True}).noalias:
            raise ValueError("noalias not honoured")
        return dict(JIT, noalias=True)
    except Exception:  # pragma: no cover - depends on numba internals
        return dict(JIT)


KERNEL_OPTIONS = _kernel_options()

_PRIMITIVES = ("heaviside0", "ones_like")


@overload(eq.heaviside0, jit_options=dict(error_model="numpy"))  # (inlined, numba's SSA check warns)
def _heaviside0(x):  # type: ignore[no-untyped-def]
    def heaviside0(x):  # type: ignore[no-untyped-def]
        step = 1.0 if x > 0.0 else 0.0
        return x if x != x else step  # (one return: several upset numba's SSA check once inlined)
    return heaviside0


@overload(eq.ones_like, inline="always", jit_options=dict(error_model="numpy"))
def _ones_like(x):  # type: ignore[no-untyped-def]
    def ones_like(x):  # type: ignore[no-untyped-def]
        return 1.0
    return ones_like


def _inline_overload(function: FunctionType) -> None:
    """Let compiled code call ``function`` (from equations.py): its own body, inlined at each call site."""
    def typer(*args):  # type: ignore[no-untyped-def]
        return function
    overload(function, inline="always", strict=False, jit_options=dict(error_model="numpy"))(typer)


for _name, _function in vars(eq).items():
    if (inspect.isfunction(_function) and _function.__module__ == eq.__name__ and _name not in _PRIMITIVES
            and not _name.startswith("_")):
        _inline_overload(_function)


# -- the on-disk cache follows equations.py ---------------------------------------------------------------------
# numba keys a cached function by the time stamp and size of its own source file only, but the kernels inline
# equations.py and helpers of the other modules of this package: an edit there must recompile them too. So the
# functions of this package are cached under the stamps of all those files together.
_PACKAGE = Path(__file__).resolve().parent
_SOURCES = (Path(eq.__file__).resolve(), *sorted(_PACKAGE.glob("*.py")))
# kernels generated from a module's templates (codegen.compile_kernel): their code's file name -> the module
GENERATED_FROM: dict[str, Path] = {}


class _EngineSourcesLocator(caching._CacheLocator):
    """numba's usual cache locator for a function of this package, with the stamp of all engine sources."""

    def __init__(self, usual: caching._CacheLocator) -> None:
        self._usual = usual

    def ensure_cache_path(self) -> None:
        self._usual.ensure_cache_path()

    def get_cache_path(self) -> str:
        return self._usual.get_cache_path()

    def get_disambiguator(self) -> str:
        return self._usual.get_disambiguator()

    def get_source_stamp(self) -> tuple[tuple[str, float, int], ...]:
        return tuple((path.name, path.stat().st_mtime, path.stat().st_size) for path in _SOURCES)

    @classmethod
    def from_function(cls, py_func, py_file):  # type: ignore[no-untyped-def]
        py_file = str(GENERATED_FROM.get(py_file, py_file))  # a generated kernel is cached beside its module
        if Path(py_file).resolve().parent != _PACKAGE:
            return None
        for other in caching.CacheImpl._locator_classes:
            if other is not cls:
                usual = other.from_function(py_func, py_file)
                if usual is not None:
                    return cls(usual)
        return None


if _EngineSourcesLocator not in caching.CacheImpl._locator_classes:
    caching.CacheImpl._locator_classes.insert(0, _EngineSourcesLocator)
