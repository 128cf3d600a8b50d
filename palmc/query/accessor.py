"""The ``ds.palmc`` accessor: the query layer at hand on any palmc Dataset in a notebook.

    ds = palmc.open("results/quickstart.zarr")
    ds.palmc.metrics()                                  # what can be computed from this store
    ds.palmc.query("angle_BPP_WPPT", aggregate="last", reduce="mean").compute()
    ds.palmc.run_status()                               # run outcomes as names ("complete", ...)

Registered when palmc (or palmc.query) is imported.
"""

from __future__ import annotations

import inspect
from typing import Any

import pandas as pd
import xarray as xr

from palmc.query.evaluate import query
from palmc.query.metrics import METRICS, list_metrics
from palmc.store.layout import decode_run_status


@xr.register_dataset_accessor("palmc")
class PalmcAccessor:
    """``ds.palmc.query(...)``, ``ds.palmc.metrics()`` and ``ds.palmc.run_status()``."""

    def __init__(self, ds: xr.Dataset) -> None:
        self._ds = ds

    def query(self, metric: str | None = None, **fields: Any) -> xr.DataArray:
        """Evaluate a query lazily on this Dataset: ``palmc.query(ds, metric, **fields)`` (fields: variable, args,
        select, aggregate, reduce, name; see docs/queries.md)."""
        return query(self._ds, metric, **fields)

    def metrics(self) -> pd.DataFrame:
        """Every registered metric (one row each): units, the variables it needs, its arguments, whether this
        Dataset has what it needs, and its description."""
        rows = []
        for name in list_metrics():
            entry = METRICS[name]
            missing = [r for r in entry.requires if r not in self._ds.variables]
            rows.append({
                "metric": name, "units": entry.units, "needs": ", ".join(entry.requires),
                "arguments": ", ".join(arg if default is inspect.Parameter.empty else f"{arg}={default!r}"
                                       for arg, default in entry.arguments.items()),
                "available": not missing, "missing": ", ".join(missing), "description": entry.summary,
            })
        return pd.DataFrame(rows).set_index("metric")

    def run_status(self) -> xr.DataArray:
        """The outcome of each run as names (pending, complete, diverged, failed), decoded from ``run_status``."""
        status = self._ds["run_status"]
        return status.copy(data=decode_run_status(status.values, status.attrs))
