"""palmc: exact, fast, reproducible simulations of dendritic microcircuits that learn their feedback weights.

The Python API used by notebooks and the CLI alike::

    import palmc
    exp = palmc.load_experiment("experiments/quickstart.yaml")
    store = palmc.simulate(exp, "results/quickstart.zarr")
    ds = palmc.open(store)                      # lazy, dask-backed xarray Dataset
    palmc.query(ds, "angle_BPP_WPPT", aggregate="last", reduce="mean").compute()
"""

__version__ = "0.1.0"

from palmc.api import info, load_experiment, open, simulate  # noqa: E402,A004
from palmc.query import Query, query  # noqa: E402

__all__ = ["Query", "__version__", "info", "load_experiment", "open", "query", "simulate"]
