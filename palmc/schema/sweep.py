"""Parameter sweeps: the ``sweep`` section of an experiment and its expansion into variants.

Each combination of swept values is one *variant*: a complete experiment (the shared sections with the swept
fields replaced) that runs every model on every seed. In the store, variants are the points of the ``variant``
dimension, with the swept values as coordinates. ``grid`` fields vary independently (every combination);
``zip`` fields vary together (their lists are read in parallel and form one axis of the grid).
"""

from __future__ import annotations

import copy
import itertools
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

SweepValues = Annotated[list[Any], Field(min_length=1)]

SWEEPABLE_SECTIONS: tuple[str, ...] = ("dynamics", "plasticity", "noise", "filters", "init", "input", "recording")
"""Sections whose fields a sweep may vary (the network, models and seeds are the same in every variant)."""

NOT_SWEEPABLE: dict[str, str] = {
    "dynamics.dt": "all variants share one time step, so that the store has one time axis",
    "dynamics.settling_time": "all variants share the settling phase, so that 'phase' is one coordinate",
    "recording.variables": "every variant records the same variables (one set of data variables in the store)",
    "recording.chunk_records": "the store has one chunk length",
}


class Sweep(BaseModel):
    """Parameter sweep: every combination is one point of the store's ``variant`` dimension.

    Keys are dotted field paths such as ``dynamics.taur`` or ``noise.tauxi``; values are the lists of values to
    run. Per-model overrides still apply on top of a variant (an override of a swept field wins for that model).
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    grid: dict[str, SweepValues] = Field(
        default_factory=dict,
        description="Fields varied independently: every combination of their values is a variant, the first field "
        "varying slowest. Example: {dynamics.taur: [1.0, 0.0], plasticity.alpha: [[1e-5, 1e-5, 1e-5], [0, 0, 0]]}.",
    )
    zip: dict[str, SweepValues] = Field(
        default_factory=dict,
        description="Fields varied together: lists of equal length whose i-th values belong to one variant (e.g. a "
        "noise time scale with the matching learning rates). Combined with 'grid' as one more axis, varied first.",
    )

    def paths(self) -> list[str]:
        """The swept fields, zipped ones first."""
        return [*self.zip, *self.grid]

    def combinations(self) -> list[dict[str, Any]]:
        """One {path: value} per variant: the zip axis (slowest) then each grid field, in order."""
        axes: list[list[dict[str, Any]]] = []
        if self.zip:
            length = len(next(iter(self.zip.values())))
            axes.append([{path: values[i] for path, values in self.zip.items()} for i in range(length)])
        axes += [[{path: value} for value in values] for path, values in self.grid.items()]
        return [{k: v for point in combo for k, v in point.items()} for combo in itertools.product(*axes)]


def structural_problems(sweep: Sweep, settings: dict[str, Any]) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems of the sweep itself (paths and lengths), as (location, message); ``settings`` = the experiment."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if not sweep.paths():
        problems.append((("sweep",), "expected at least one field under 'grid' or 'zip', got an empty sweep"))
    lengths = {path: len(values) for path, values in sweep.zip.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{path}: {n}" for path, n in lengths.items())
        problems.append((("sweep", "zip"), f"expected lists of one length (they are read in parallel), got {shown}"))
    for kind, fields in (("zip", sweep.zip), ("grid", sweep.grid)):
        for path in fields:
            if kind == "grid" and path in sweep.zip:
                problems.append((("sweep", kind, path), "is swept both in 'zip' and in 'grid'; keep it in one"))
            message = path_problem(path, settings)
            if message:
                problems.append((("sweep", kind, path), message))
    return problems


def path_problem(path: str, settings: dict[str, Any]) -> str | None:
    """Why ``path`` cannot be swept, or None."""
    parts = path.split(".")
    if path in NOT_SWEEPABLE:
        return f"cannot be swept: {NOT_SWEEPABLE[path]}"
    if parts[0] not in SWEEPABLE_SECTIONS:
        return (f"expected a field of one of the sections {', '.join(SWEEPABLE_SECTIONS)} (e.g. noise.tauxi), "
                f"got {path!r}")
    node: Any = settings
    for depth, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(parts[:depth]) or "the experiment"
            options = ", ".join(sorted(node)) if isinstance(node, dict) else "none (it is a value)"
            return f"{where} has no field {part!r}; its fields: {options}"
        node = node[part]
    if isinstance(node, dict):
        return f"is a section, expected one of its fields: {', '.join(sorted(node))}"
    return None


def get_path(settings: dict[str, Any], path: str) -> Any:
    node: Any = settings
    for part in path.split("."):
        node = node[part]
    return node


def apply_values(settings: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """A copy of the experiment ``settings`` with the swept ``values`` set and no sweep section."""
    out = copy.deepcopy({key: value for key, value in settings.items() if key != "sweep"})  # (a sweep's lists
    # are long: copying them for each of its variants grew with the square of its size)
    for path, value in values.items():
        *parents, leaf = path.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[leaf] = copy.deepcopy(value)
    return out


def coordinate_names(paths: list[str]) -> dict[str, str]:
    """Short name of each swept path (in the variants' labels, and the store's coordinate of the field unless the
    store has another of that name): its last part (``noise.tauxi`` -> ``tauxi``) unless two paths share it,
    then the whole path with '_' (``init_teacher_WPP_range``)."""
    leaves = [path.split(".")[-1] for path in paths]
    return {path: leaf if leaves.count(leaf) == 1 else path.replace(".", "_") for path, leaf in zip(paths, leaves)}


def label(values: dict[str, Any]) -> str:
    """A short text naming a variant, e.g. ``tauxi=1.0, taur=0.0``."""
    names = coordinate_names(list(values))
    return ", ".join(f"{names[path]}={value}" for path, value in values.items())


LISTED_VARIANTS = 6  # sweeps of up to this many variants are listed in full by 'palmc info' and 'palmc validate'
_TEXT_WIDTH = 60  # longest value or label text shown in a summary


def _short(text: str) -> str:
    return text if len(text) <= _TEXT_WIDTH else text[:_TEXT_WIDTH - 3] + "..."


def summarise_values(name: str, values: list[Any]) -> str:
    """One line on a swept field: its number of distinct values and their range (numbers) or first and last."""
    distinct = list({repr(v): v for v in values}.values())
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in distinct)
    if numbers and len(distinct) > 1:
        return f"{name}: {len(distinct)} values from {min(distinct)} to {max(distinct)}"
    if len(distinct) <= 2:
        return f"{name}: {len(distinct)} value(s): " + ", ".join(_short(str(v)) for v in distinct)
    return f"{name}: {len(distinct)} values: {_short(str(distinct[0]))}, ..., {_short(str(distinct[-1]))}"


def summarise_labels(labels: list[str]) -> str:
    """A few variant labels (the first ones and the last), each kept short."""
    if len(labels) <= LISTED_VARIANTS:
        return "; ".join(labels)
    return "; ".join([_short(x) for x in labels[:2]] + ["...", _short(labels[-1])])
