"""Declarative query models: what to compute from a recording, written in YAML or in Python.

A :class:`Query` names a metric (or a recorded variable), a selection, a time aggregation and a reduction
over seeds. The same model validates a ``palmc analyze`` YAML file (``queries: {name: {...}}``) and the
keyword arguments of :func:`palmc.query.query` in a notebook.

Example (YAML)::

    queries:
      final_angle:
        metric: angle_BPP_WPPT
        select: {phase: training, seed: [11, 12]}
        aggregate: last
        reduce: {quantile: [0.1, 0.9]}
      angle_trace:
        metric: angle_jacobians
        aggregate: {per_sample_end: true, moving_window: 10 Tpres}
        reduce: mean
      weights:
        variable: WPP
        select: {layer: 1, model: PAL}
      sweep_final:                      # a sweep store (dim variant)
        metric: MSE
        select: {variant: "tauxi=1.0, taur=0.0"}
        aggregate: last
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

__all__ = [
    "Aggregate",
    "Duration",
    "Query",
    "QueryError",
    "QueryFile",
    "Reduce",
    "Selection",
    "load_queries",
    "parse_query",
]


class QueryError(Exception):
    """A query that cannot be evaluated; the message says what is available instead."""


def available_text(values: Any) -> str:
    """``values`` as ``a, b, c`` (``(none)`` if empty), for error messages that list what there is."""
    vals = list(values)
    return ", ".join(str(v) for v in vals) if vals else "(none)"


# ----------------------------------------------------------------------------------------------------------------
# durations
# ----------------------------------------------------------------------------------------------------------------

Duration = Union[float, str]
"""A duration: a number of ms, or a string ``"<x> ms"`` / ``"<x> Tpres"`` (multiples of ``ds.attrs['Tpres']``)."""

_DURATION_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*\*?\s*(ms|Tpres)?\s*$")


def _check_duration(value: Duration) -> Duration:
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of ms or a string like '5 ms' or '10 Tpres'")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise ValueError(f"a duration must be positive, got {value}")
        return float(value)
    if not _DURATION_RE.match(str(value)):
        raise ValueError(f"cannot read duration {value!r}: use a number of ms, '<x> ms' or '<x> Tpres'")
    if float(_DURATION_RE.match(str(value)).group(1)) <= 0:  # type: ignore[union-attr]
        raise ValueError(f"a duration must be positive, got {value!r}")
    return str(value)


def duration_ms(value: Duration, attrs: dict[str, Any]) -> float:
    """Convert a :data:`Duration` to ms, using ``attrs['Tpres']`` for the ``Tpres`` unit."""
    if isinstance(value, (int, float)):
        return float(value)
    m = _DURATION_RE.match(value)
    assert m is not None
    number, unit = float(m.group(1)), m.group(2) or "ms"
    if unit == "ms":
        return number
    if "Tpres" not in attrs:
        raise QueryError(f"duration {value!r} needs the attribute 'Tpres'; dataset attrs: {available_text(attrs)}")
    return number * float(attrs["Tpres"])


# ----------------------------------------------------------------------------------------------------------------
# parts of a query
# ----------------------------------------------------------------------------------------------------------------

Scalar = Union[int, float, str]
Values = Union[Scalar, list[Scalar]]


class Selection(BaseModel):
    """Which part of the recording to use.

    ``model``, ``seed``, ``layer``, ``neuron``, ``pre`` (and any other dimension of the dataset or of the
    metric's result, given as an extra key) take one value (the dimension is dropped) or a list of values.
    ``time`` is an inclusive range ``[t0, t1]`` in ms, ``phase`` is ``"settling"`` or ``"training"``,
    ``epoch`` one epoch number or a list (0 = settling). Layers refer to the result of the metric, e.g. the
    hidden layers for the angles between feedback and forward weights.

    Sweep stores: ``variant`` takes variant indices or labels (``variant_label``, e.g. ``"tauxi=1.0, taur=0.0"``);
    a swept field, given by its coordinate name (e.g. ``tauxi: [1.0, 10.0]``), keeps the variants with those
    values (the ``variant`` dim stays). The records no selected variant has are dropped.
    """

    model_config = ConfigDict(extra="allow")

    model: Values | None = None
    seed: Values | None = None
    layer: Values | None = None
    neuron: Values | None = None
    pre: Values | None = None
    variant: Values | None = None
    time: tuple[float, float] | None = None
    phase: str | None = None
    epoch: int | list[int] | None = None

    def dims(self) -> dict[str, Values]:
        """Dimension selections (everything except ``time``/``phase``/``epoch``), unset ones left out."""
        out: dict[str, Values] = {}
        for key in ("model", "seed", "layer", "neuron", "pre", "variant"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        for key, value in (self.model_extra or {}).items():
            if value is not None:
                out[key] = value
        return out


class Aggregate(BaseModel):
    """How records are aggregated over time, applied in this order.

    1. ``per_sample_end``: keep only the last record of each presentation (steps ``S + k*Tp``, k >= 0, where S
       is the number of settling steps and ``Tp = Tpres/dt``; k = 0 is the end of settling).
    2. ``every``: means over consecutive blocks of that duration N, anchored at the start of settling (t = 0) and
       of each epoch (t_e): block k of an epoch holds the records with ``t_e + k*N < time <= t_e + (k+1)*N`` and
       is labelled by its end ``t_e + (k+1)*N``, or by the epoch's end if that comes first (a shorter last
       block), so every label lies within the run. Or ``moving_window``: trailing mean
       over the records of the last N ms (window = round(N / record spacing) records); the first window-1
       records, which have no full window, are dropped. Both skip NaN records.
    3. ``last``: keep the last remaining record (``time`` stays as a scalar coordinate). On a store that is still
       being written (or was interrupted), each run's latest written record (``time`` then has dims seed, model).

    In a sweep whose variants differ in their time protocol (Tpres, record spacing, epochs), these steps and the
    ``Tpres`` unit of durations apply to each variant on its own records and protocol, and ``last`` is each
    variant's last record.

    Shorthands: ``"last"``, ``"per_sample_end"``, ``"none"``.
    """

    model_config = ConfigDict(extra="forbid")

    per_sample_end: bool = False
    every: Duration | None = None
    moving_window: Duration | None = None
    last: bool = False

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data is None:
            return {}
        if isinstance(data, str):
            if data == "none":
                return {}
            if data in ("last", "per_sample_end"):
                return {data: True}
            raise ValueError(
                f"unknown aggregation {data!r}; use 'last', 'per_sample_end', 'none' or a mapping with "
                "per_sample_end, every, moving_window, last"
            )
        return data

    @field_validator("every", "moving_window")
    @classmethod
    def _duration(cls, value: Duration | None) -> Duration | None:
        return None if value is None else _check_duration(value)

    @model_validator(mode="after")
    def _exclusive(self) -> "Aggregate":
        if self.every is not None and self.moving_window is not None:
            raise ValueError("use either 'every' or 'moving_window', not both")
        return self


ReduceHow = Literal["none", "mean", "std", "median", "min", "max", "quantile"]


class Reduce(BaseModel):
    """Reduction over seeds (or over the dims in ``over``).

    ``how`` is one of none, mean, std (ddof=0), median, min, max, quantile; ``quantile`` lists the quantiles
    (e.g. ``[0.1, 0.9]`` for a band), which become a ``quantile`` dimension. NaNs are skipped.
    Shorthands: ``"mean"``, ``{quantile: [0.1, 0.9]}``, or a bare list of quantiles ``[0.1, 0.9]``.
    """

    model_config = ConfigDict(extra="forbid")

    how: ReduceHow = "none"
    quantile: list[float] | None = None
    over: list[str] = Field(default_factory=lambda: ["seed"])

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if data is None:
            return {"how": "none"}
        if isinstance(data, str):
            return {"how": data}
        if isinstance(data, (list, tuple)):
            return {"how": "quantile", "quantile": list(data)}
        if isinstance(data, dict) and "quantile" in data and "how" not in data:
            q = data["quantile"]
            return {**data, "how": "quantile", "quantile": [q] if isinstance(q, (int, float)) else q}
        return data

    @model_validator(mode="after")
    def _check(self) -> "Reduce":
        if self.how == "quantile":
            if not self.quantile:
                raise ValueError("reduce 'quantile' needs a list of quantiles, e.g. {quantile: [0.1, 0.9]}")
            if any(not 0.0 <= q <= 1.0 for q in self.quantile):
                raise ValueError(f"quantiles must lie in [0, 1], got {self.quantile}")
        elif self.quantile is not None:
            raise ValueError(f"'quantile' values given but how={self.how!r}")
        return self


class Query(BaseModel):
    """One declarative query: metric (or recorded variable) + selection + time aggregation + seed reduction.

    ``metric`` names an entry of the metric registry (:func:`palmc.query.list_metrics`) or a recorded variable;
    ``variable`` is an explicit alternative for recorded variables. ``args`` are keyword arguments of the metric.
    """

    model_config = ConfigDict(extra="forbid")

    metric: str | None = None
    variable: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    select: Selection = Field(default_factory=Selection)
    aggregate: Aggregate = Field(default_factory=Aggregate)
    reduce: Reduce = Field(default_factory=Reduce)
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _none_to_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key in ("select", "args"):
                if key in data and data[key] is None:
                    data.pop(key)
            if "reduce" in data and data["reduce"] is None:
                data["reduce"] = "none"
            if "aggregate" in data and data["aggregate"] is None:
                data["aggregate"] = "none"
        return data

    @model_validator(mode="after")
    def _one_target(self) -> "Query":
        if (self.metric is None) == (self.variable is None):
            raise ValueError("give exactly one of 'metric' or 'variable'")
        return self

    @property
    def target(self) -> str:
        """The metric or variable name."""
        return self.metric if self.metric is not None else self.variable  # type: ignore[return-value]


class QueryFile(BaseModel):
    """A YAML query file: ``queries: {name: {metric: ..., select: ..., aggregate: ..., reduce: ...}, ...}``."""

    model_config = ConfigDict(extra="forbid")

    queries: dict[str, Query]

    @field_validator("queries")
    @classmethod
    def _non_empty(cls, value: dict[str, Query]) -> dict[str, Query]:
        if not value:
            raise ValueError("the file defines no queries")
        return value


def _format_validation_error(err: ValidationError, what: str, root: type[BaseModel]) -> str:
    lines = [f"invalid {what}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; allowed keys: {available_text(_fields_at(tuple(e['loc']), root))}"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def _fields_at(loc: tuple[Any, ...], root: type[BaseModel]) -> list[str]:
    """Allowed keys of the model that owns the field at ``loc`` (for error messages)."""
    path = [str(p) for p in loc]
    if root is QueryFile:
        if len(path) <= 1:
            return list(QueryFile.model_fields)
        path = path[2:]  # drop "queries", <name>
    owner: type[BaseModel] = Query
    for part in path[:-1]:
        owner = {"aggregate": Aggregate, "reduce": Reduce, "select": Selection}.get(part, owner)
    return list(owner.model_fields)


def parse_query(spec: Query | dict[str, Any]) -> Query:
    """Validate a mapping as a :class:`Query`, raising :class:`QueryError` with a readable message."""
    if isinstance(spec, Query):
        return spec
    try:
        return Query.model_validate(spec)
    except ValidationError as err:
        raise QueryError(_format_validation_error(err, "query", Query)) from None


def load_queries(path: str | Path) -> dict[str, Query]:
    """Read a YAML query file (``queries: {name: {...}}``) into named :class:`Query` objects."""
    from palmc.schema.safe_yaml import UnsafeYAML, compose_bounded

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise QueryError(f"{path}: expected a YAML query file, got no such file") from None
    except IsADirectoryError:
        raise QueryError(f"{path}: expected a YAML query file, got a directory") from None
    except UnicodeDecodeError as err:
        raise QueryError(f"{path}: expected UTF-8 text, got undecodable bytes ({err.reason})") from None
    except OSError as err:
        raise QueryError(f"{path}: cannot read the query file: {err.strerror or err}") from None
    try:
        data = compose_bounded(yaml.SafeLoader, text)[1]
    except UnsafeYAML as err:
        raise QueryError(f"{path}: refused YAML: {err}") from None
    except yaml.YAMLError as err:
        raise QueryError(f"cannot parse {path} as YAML: {err}") from None
    if not isinstance(data, dict) or "queries" not in data:
        raise QueryError(f"{path}: expected a mapping with the key 'queries' (queries: {{name: {{metric: ...}}}})")
    try:
        return dict(QueryFile.model_validate(data).queries)
    except ValidationError as err:
        raise QueryError(_format_validation_error(err, f"query file {path}", QueryFile)) from None
