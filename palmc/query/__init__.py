"""Declarative, lazy queries over palmc recordings.

Notebook style (one function, keyword arguments = the YAML fields)::

    from palmc.query import open_store, query
    ds = open_store("run.zarr")
    band = query(ds, "angle_BPP_WPPT", select={"phase": "training"}, aggregate="last",
                 reduce={"quantile": [0.1, 0.9]})          # lazy DataArray (layer, quantile, model)
    band.compute()

or ``evaluate(Query(metric="angle_jacobians", aggregate={"moving_window": "10 Tpres"}, reduce="mean"), ds)``.

Files (``palmc analyze``): :func:`run_query_file` evaluates a YAML file ``queries: {name: {...}}``;
:func:`format_table` renders scalar results, :func:`save_results` writes .zarr/.nc/.csv.
Metrics: :func:`list_metrics`, :func:`describe_metrics`; add one with the :func:`metric` decorator.
Bad queries raise :class:`QueryError`, whose message lists what is available.
On any Dataset: ``ds.palmc.query(...)``, ``ds.palmc.metrics()``, ``ds.palmc.run_status()`` (:mod:`palmc.query.accessor`).
"""

from palmc.query import accessor  # noqa: F401 - registers ds.palmc
from palmc.query.evaluate import evaluate, open_store, query, run_queries, run_query_file
from palmc.query.metrics import METRICS, Metric, describe_metrics, get_metric, list_metrics, metric
from palmc.query.model import Aggregate, Query, QueryError, QueryFile, Reduce, Selection, load_queries, parse_query
from palmc.query.table import format_table, load_results, save_results, to_frame

__all__ = [
    "METRICS",
    "Aggregate",
    "Metric",
    "Query",
    "QueryError",
    "QueryFile",
    "Reduce",
    "Selection",
    "describe_metrics",
    "evaluate",
    "format_table",
    "get_metric",
    "list_metrics",
    "load_queries",
    "load_results",
    "metric",
    "open_store",
    "parse_query",
    "query",
    "run_queries",
    "run_query_file",
    "save_results",
    "to_frame",
]
