"""Reading and writing experiment files (YAML), and turning every kind of failure into an :class:`ExperimentError`.

The YAML dialect is yaml_dialect.py's; reading also remembers the line of every mapping key and sequence item so
that validation problems can name the line they come from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import yaml
from pydantic import ValidationError

from palmc.schema.experiment import Experiment, Location, describe_error, dotted_location, show_value
from palmc.schema.safe_yaml import UnsafeYAML, compose_bounded
from palmc.schema.yaml_dialect import ExperimentLoader, dump_yaml


# --------------------------------------------------------------------------------------------------------------
# errors
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an experiment: the dotted ``field`` path, its YAML ``line`` (if known), and what was
    expected and found."""

    field: str
    line: int | None
    message: str


class ExperimentError(Exception):
    """An experiment could not be read or is invalid. ``path`` is the file (or source name), ``problems`` lists
    every problem found; ``str(error)`` renders one ``file:line: field: message`` line per problem."""

    def __init__(self, path: str | None, problems: Sequence[Problem]) -> None:
        self.path = path
        self.problems: list[Problem] = sorted(
            problems, key=lambda problem: (problem.line is None, problem.line or 0, problem.field)
        )
        super().__init__(self.render())

    def render(self) -> str:
        """One line per problem: ``file:line: field: message``."""
        rendered = []
        for problem in self.problems:
            where = self.path or "<experiment>"
            if problem.line is not None:
                where += f":{problem.line}"
            rendered.append(": ".join(part for part in (where, problem.field, problem.message) if part))
        return "\n".join(rendered)

    def __str__(self) -> str:
        return self.render()


# --------------------------------------------------------------------------------------------------------------
# YAML in
# --------------------------------------------------------------------------------------------------------------

LineMap = dict[Location, int]


def _yaml_error_problem(error: yaml.YAMLError) -> Problem:
    problem_mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    mark = problem_mark or context_mark
    line = mark.line + 1 if mark is not None else None
    problem = getattr(error, "problem", None)
    context = getattr(error, "context", None)
    detail = ", ".join(part for part in (context, problem) if part) or str(error)
    if problem_mark is not None and context_mark is not None and context_mark.line != problem_mark.line:
        detail += f" (the construct started on line {context_mark.line + 1})"
    return Problem(field="", line=line, message=f"malformed YAML: {detail}")


def _collect_lines(node: yaml.Node, location: Location, lines: LineMap, duplicates: list[Problem]) -> None:
    """Record the line of every mapping key and sequence item below ``node``; report repeated keys."""
    if isinstance(node, yaml.MappingNode):
        first_line: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node.value)
            child = (*location, key)
            line = key_node.start_mark.line + 1
            if key in first_line:
                duplicates.append(Problem(
                    field=dotted_location(child),
                    line=line,
                    message=f"expected each key once, got {key!r} again (first on line {first_line[key]}); "
                    "YAML would silently keep only the last value",
                ))
            else:
                first_line[key] = line
            lines[child] = line
            _collect_lines(value_node, child, lines, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for index, item_node in enumerate(node.value):
            child = (*location, index)
            lines[child] = item_node.start_mark.line + 1
            _collect_lines(item_node, child, lines, duplicates)


def read_yaml(text: str, source: str = "<string>") -> tuple[Any, LineMap]:
    """Parse YAML text with :class:`ExperimentLoader`; return the data and the line of every key path.

    Raises :class:`ExperimentError` for malformed YAML or repeated keys."""
    try:
        node, data = compose_bounded(ExperimentLoader, text)
    except UnsafeYAML as error:
        raise ExperimentError(source, [Problem("", error.line, f"refused YAML: {error}")]) from None
    except yaml.YAMLError as error:
        raise ExperimentError(source, [_yaml_error_problem(error)]) from None
    lines: LineMap = {}
    duplicates: list[Problem] = []
    if node is not None:
        _collect_lines(node, (), lines, duplicates)
    if duplicates:
        raise ExperimentError(source, duplicates)
    return data, lines


# --------------------------------------------------------------------------------------------------------------
# validation errors -> problems
# --------------------------------------------------------------------------------------------------------------


def _line_for(location: Location, lines: LineMap) -> int | None:
    """The line of ``location`` or, if it is not in the file, of its closest enclosing key."""
    for length in range(len(location), 0, -1):
        line = lines.get(tuple(location[:length]))
        if line is not None:
            return line
    return None


def _data_location(loc: Sequence[str | int], data: Any, error_type: str) -> Location:
    """Drop pydantic's union-member tags (e.g. ``list[...]``) from an error location, keeping the path through
    the input data (plus the name of a missing field)."""
    location: list[str | int] = []
    current = data
    for position, part in enumerate(loc):
        if isinstance(current, dict) and part in current:
            location.append(part)
            current = current[part]
        elif isinstance(current, dict) and error_type == "missing" and position == len(loc) - 1:
            location.append(part)
        elif isinstance(current, (list, tuple)) and isinstance(part, int) and 0 <= part < len(current):
            location.append(part)
            current = current[part]
    return tuple(location)


def problems_from_validation_error(error: ValidationError, data: Any, lines: LineMap | None = None) -> list[Problem]:
    """Translate a pydantic error of :class:`Experiment` into problems with dotted field paths and lines."""
    lines = lines or {}
    problems: list[Problem] = []
    for item in error.errors(include_url=False):
        if item["type"] == "experiment_checks":
            for location, message in item["ctx"]["problems"]:
                problems.append(Problem(dotted_location(location), _line_for(location, lines), message))
            continue
        location = _data_location(item["loc"], data, item["type"])
        problems.append(Problem(dotted_location(location), _line_for(location, lines), describe_error(item, location)))
    unique: list[Problem] = []
    for problem in problems:
        if problem not in unique:
            unique.append(problem)
    return unique


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------


def validate_experiment(data: Any, source: str = "<dict>", lines: LineMap | None = None) -> Experiment:
    """Validate plain data (as read from YAML) into an :class:`Experiment`; raise :class:`ExperimentError`."""
    if data is None:
        raise ExperimentError(source, [Problem("", 1 if lines is not None else None,
                                               "expected a mapping with the experiment's fields (name, task, "
                                               "network, ...), got an empty document")])
    if not isinstance(data, dict):
        raise ExperimentError(source, [Problem("", 1 if lines is not None else None,
                                               "expected a mapping with the experiment's fields at the top level, "
                                               f"got {show_value(data)}")])
    try:
        return Experiment.model_validate(data)
    except ValidationError as error:
        raise ExperimentError(source, problems_from_validation_error(error, data, lines)) from None


def parse_experiment(text: str, source: str = "<string>") -> Experiment:
    """Parse and validate experiment YAML text; ``source`` names it in error messages."""
    data, lines = read_yaml(text, source)
    experiment = validate_experiment(data, source, lines)
    experiment.remember_source_text(text)
    return experiment


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML file; raise :class:`ExperimentError` naming the file on any problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ExperimentError(source, [Problem("", None, "expected an experiment YAML file, got no such file")]) from None
    except IsADirectoryError:
        raise ExperimentError(source, [Problem("", None, "expected an experiment YAML file, got a directory")]) from None
    except UnicodeDecodeError as error:
        raise ExperimentError(source, [Problem("", None, f"expected UTF-8 text, got undecodable bytes ({error.reason})")]) from None
    except OSError as error:
        raise ExperimentError(source, [Problem("", None, f"cannot read the file: {error.strerror or error}")]) from None
    return parse_experiment(text, source)


def dump_experiment(experiment: Experiment, path: str | Path) -> None:
    """Write ``experiment.to_yaml()`` to ``path`` (parent directories are created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(experiment.to_yaml(), encoding="utf-8")


__all__ = [
    "ExperimentError",
    "ExperimentLoader",
    "LineMap",
    "Problem",
    "dump_experiment",
    "dump_yaml",
    "load_experiment",
    "parse_experiment",
    "problems_from_validation_error",
    "read_yaml",
    "validate_experiment",
]
