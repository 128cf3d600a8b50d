"""The YAML dialect of experiment files: PyYAML's safe loader and dumper, except that scalars such as ``1e-2`` or
``1e6`` (floats without a decimal point, which YAML 1.1 reads as strings) are floats.

Both the schema (``Experiment.to_yaml``) and the loader (loading.py) use it, so it imports neither.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

FLOAT_TAG = "tag:yaml.org,2002:float"

FLOAT_PATTERN = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)[eE][-+]?[0-9]+
    |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
"""YAML 1.1 floats plus exponent forms without a decimal point (``1e6``, ``-1E-2``)."""


class ExperimentLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-2``-style scalars as floats."""


ExperimentLoader.yaml_implicit_resolvers = {
    first_char: [(tag, pattern) for tag, pattern in resolvers if tag != FLOAT_TAG]
    for first_char, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ExperimentLoader.add_implicit_resolver(FLOAT_TAG, FLOAT_PATTERN, list("-+0123456789."))


class ExperimentDumper(yaml.SafeDumper):
    """``yaml.SafeDumper`` that resolves scalars like :class:`ExperimentLoader` (so ``"1e6"`` strings get quoted)
    and writes lists of scalars in flow style (``[5, 20, 10, 20, 5]``)."""


ExperimentDumper.yaml_implicit_resolvers = ExperimentLoader.yaml_implicit_resolvers


def _represent_list(dumper: yaml.SafeDumper, values: list[Any]) -> yaml.SequenceNode:
    scalars_only = all(not isinstance(value, (list, tuple, dict)) for value in values)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", values, flow_style=scalars_only)


ExperimentDumper.add_representer(list, _represent_list)
ExperimentDumper.add_representer(tuple, _represent_list)


def dump_yaml(data: Any) -> str:
    """YAML text of plain data, readable by :class:`ExperimentLoader`; top-level entries separated by blank lines."""
    options: dict[str, Any] = dict(Dumper=ExperimentDumper, sort_keys=False, default_flow_style=False,
                                   allow_unicode=True, width=120)
    if not isinstance(data, dict) or not data:
        return yaml.dump(data, **options)
    return "\n".join(yaml.dump({key: value}, **options) for key, value in data.items())
