"""palmc: exact, fast, reproducible simulations of dendritic microcircuits that learn their feedback weights.

The Python API used by notebooks and the CLI alike::

    import palmc
    exp = palmc.load_experiment("experiments/quickstart.yaml")
    store = palmc.simulate(exp, "results/quickstart.zarr")
    ds = palmc.open(store)                      # lazy, dask-backed xarray Dataset
    palmc.query(ds, "angle_BPP_WPPT", aggregate="last", reduce="mean").compute()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from palmc.version import __version__

# `query` is also the name of a subpackage: imported here, so that the function is what `palmc.query` means
from palmc.query import Query, query  # noqa: E402

# The rest of the API is imported on first use (PEP 562): it brings Dask, zarr and the store and engine modules
# (~1.5 s), which `palmc --help` and `palmc validate` do not need.
_API = ("info", "load_experiment", "open", "simulate")

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from palmc.api import info, load_experiment, open, simulate  # noqa: A004

__all__ = ["Query", "__version__", "info", "load_experiment", "open", "query", "simulate"]


def __getattr__(name: str) -> object:
    if name in _API:
        value = getattr(importlib.import_module("palmc.api"), name)
        globals()[name] = value  # once imported, a plain attribute
        return value
    raise AttributeError(f"module 'palmc' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
