"""Generate ``docs/queries.md``, the reference of the query language, from the pydantic query models and the
metric registry.

Run ``python -m palmc.query.reference`` after changing a query model or a metric; a test checks that the committed
file is current.
"""

from __future__ import annotations

import inspect
import types
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from palmc.query.metrics import METRICS, list_metrics
from palmc.query.model import Aggregate, Query, QueryFile, Reduce, Selection

# One example per aggregation and per reduction: query name -> (query as a YAML flow mapping, comment). Each block
# is a whole query file (a test evaluates them all); the README shows the same examples.
AGGREGATION_EXAMPLES: dict[str, tuple[str, str]] = {
    "every_record": ("{metric: angle_BPP_WPPT, aggregate: none}", "all records (the default)"),
    "final": ("{metric: angle_BPP_WPPT, aggregate: last}", "each run's last record; time kept as a coordinate"),
    "sample_ends": ("{metric: angle_BPP_WPPT, aggregate: per_sample_end}", "the last record of each presentation"),
    "blocks": ("{metric: angle_BPP_WPPT, aggregate: {every: 10 Tpres}}", "means over blocks of 10 presentations"),
    "smoothed": ("{metric: angle_BPP_WPPT, aggregate: {moving_window: 5 Tpres}}", "trailing mean over 5 Tpres"),
    "combined": ("{metric: angle_BPP_WPPT, aggregate: {per_sample_end: true, every: 10 Tpres, last: true}}",
                 "steps applied in this order"),
}
REDUCTION_EXAMPLES: dict[str, tuple[str, str]] = {
    "per_seed": ("{metric: angle_BPP_WPPT, aggregate: last, reduce: none}", "every seed (the default)"),
    "mean": ("{metric: angle_BPP_WPPT, aggregate: last, reduce: mean}", "mean over seeds"),
    "std": ("{metric: angle_BPP_WPPT, aggregate: last, reduce: std}", "standard deviation over seeds (ddof=0)"),
    "median": ("{metric: angle_BPP_WPPT, aggregate: last, reduce: median}", "median over seeds"),
    "lowest": ("{metric: angle_BPP_WPPT, aggregate: last, reduce: min}", "minimum over seeds"),
    "highest": ("{metric: angle_BPP_WPPT, aggregate: last, reduce: max}", "maximum over seeds"),
    "band": ("{metric: angle_BPP_WPPT, aggregate: last, reduce: {quantile: [0.1, 0.5, 0.9]}}",
             "quantiles over seeds (a quantile dim)"),
    "overall": ("{metric: angle_BPP_WPPT, aggregate: last, reduce: {how: mean, over: [seed, layer]}}",
                "mean over seeds and layers"),
}


def example_file(examples: dict[str, tuple[str, str]]) -> str:
    """A query file (YAML) of ``examples``."""
    width = max(len(name) for name in examples) + 1
    return "queries:\n" + "\n".join(f"  {name + ':':<{width}} {query}  # {comment}"
                                     for name, (query, comment) in examples.items())


def docs_path() -> Path:
    """Location of the generated reference: ``docs/queries.md`` at the repository root."""
    return Path(__file__).resolve().parents[2] / "docs" / "queries.md"


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in get_args(annotation) if arg is not type(None))
    if origin is Literal:
        return " / ".join(str(arg) for arg in get_args(annotation))
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(arg) for arg in get_args(annotation))}]"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return f"`{value!r}`" if not isinstance(value, BaseModel) else "(all defaults)"
    return "required" if field.is_required() else f"`{field.default!r}`"


def _fields_table(model: type[BaseModel]) -> list[str]:
    lines = ["| key | type | default |", "|---|---|---|"]
    for name, field in model.model_fields.items():
        lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} |")
    if model.model_config.get("extra") == "allow":
        lines.append("| any other dim or coordinate | one value or a list | |")
    return lines


def _yaml_block(text: str) -> list[str]:
    return ["```yaml", text, "```"]


def _examples(title: str, examples: dict[str, tuple[str, str]]) -> list[str]:
    return [f"One example per {title}:", "", *_yaml_block(example_file(examples)), ""]


def _metric_section(name: str) -> list[str]:
    entry = METRICS[name]
    args = ", ".join(f"`{arg}`" if default is inspect.Parameter.empty else f"`{arg}={default!r}`"
                     for arg, default in entry.arguments.items())
    return [f"### `{name}`", "",
            f"units: {entry.units or '(none)'}; needs: {', '.join(f'`{r}`' for r in entry.requires) or '(nothing)'}; "
            f"arguments (`args:`): {args or '(none)'}; result `long_name`: {entry.long_name}", "",
            entry.doc, ""]


def queries_markdown() -> str:
    """The text of ``docs/queries.md``."""
    lines = [
        "# The palmc query language",
        "",
        "<!-- Generated by `python -m palmc.query.reference` from palmc/query/model.py and the metric registry "
        "(palmc/query/metrics.py); do not edit by hand: a test checks that it is current. -->",
        "",
        "A query names a metric (or a recorded variable), a selection, a time aggregation and a reduction over "
        "seeds. The same fields are used everywhere:",
        "",
        "- `palmc analyze STORE queries.yaml [-o results.csv|.nc|.zarr]` and `palmc plot STORE queries.yaml` read "
        "a YAML file `queries: {name: {...}}`;",
        "- in Python, `palmc.query(ds, metric, select=..., aggregate=..., reduce=...)` or "
        "`ds.palmc.query(metric, ...)` return a lazy DataArray (`.compute()` it);",
        "- `palmc metrics` lists the metrics with what they need (also below).",
        "",
        "## A query file",
        "",
        inspect.getdoc(QueryFile) or "",
        "",
        *_yaml_block("queries:\n  final_angle:\n    metric: angle_BPP_WPPT\n    select: {phase: training}\n"
                     "    aggregate: last\n    reduce: {quantile: [0.1, 0.9]}\n  weights:\n    variable: WPP\n"
                     "    select: {layer: 1, model: PAL}"),
        "",
        "## A query",
        "",
        inspect.getdoc(Query) or "",
        "",
        *_fields_table(Query),
        "",
        "## `select`",
        "",
        inspect.getdoc(Selection) or "",
        "",
        *_fields_table(Selection),
        "",
        "## `aggregate`",
        "",
        inspect.getdoc(Aggregate) or "",
        "",
        *_fields_table(Aggregate),
        "",
        *_examples("aggregation", AGGREGATION_EXAMPLES),
        "## `reduce`",
        "",
        inspect.getdoc(Reduce) or "",
        "",
        *_fields_table(Reduce),
        "",
        *_examples("reduction", REDUCTION_EXAMPLES),
        "## Metrics",
        "",
        "Any recorded variable of the store can be queried too (`variable: NAME`, or `metric: NAME` when no metric "
        "has that name); see docs/dataset-contract.md.",
        "",
    ]
    for name in list_metrics():
        lines += _metric_section(name)
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    """Write the reference and say where."""
    path = docs_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(queries_markdown(), encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
