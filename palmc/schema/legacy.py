"""Import of the reference implementation's ``params.json`` files as palmc experiments.

A reference parameter file describes one model type and its seeds; the task (``bw_only`` or ``fw_bw``) was a
command-line option of the reference runner, so it is given here explicitly. Everything the conversion does not carry
over one to one (unused keys, recording flags, truncated per-layer lists, defaults filled in) is reported as a note.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from palmc.schema.experiment import (
    FW_BW_ONLY_VARIABLES,
    PAL_ONLY_VARIABLES,
    RECORDABLE_VARIABLES,
    TASKS,
    Experiment,
    dotted_location,
    format_layers,
)
from palmc.schema.loading import ExperimentError, Problem, validate_experiment

COMMENT_KEY = "_comment"

PARAMETER_TARGETS: dict[str, tuple[str, ...]] = {
    "layers": ("network", "layers"),
    "activation": ("network", "activation"),
    "dt": ("dynamics", "dt"),
    "Tpres": ("dynamics", "Tpres"),
    "settling_time": ("dynamics", "settling_time"),
    "gl": ("dynamics", "gl"),
    "gbas": ("dynamics", "gbas"),
    "gapi": ("dynamics", "gapi"),
    "gden": ("dynamics", "gden"),
    "gnI": ("dynamics", "gnI"),
    "gntgt": ("dynamics", "gntgt"),
    "taur": ("dynamics", "taur"),
    "eta_fw": ("plasticity", "eta_fw"),
    "eta_bw": ("plasticity", "eta_bw"),
    "eta_IP": ("plasticity", "eta_IP"),
    "eta_PI": ("plasticity", "eta_PI"),
    "alpha": ("plasticity", "alpha"),
    "dWPP_use_activation": ("plasticity", "dWPP_use_activation"),
    "noise_type": ("noise", "type"),
    "noise_mode": ("noise", "mode"),
    "noise_scale": ("noise", "scale"),
    "tauxi": ("noise", "tauxi"),
    "dtxi": ("noise", "dtxi"),
    "tauHP": ("filters", "tauHP"),
    "tauLO": ("filters", "tauLO"),
    "pyr_hi_pass": ("filters", "pyr_hi_pass"),
    "dWPP_low_pass": ("filters", "dWPP_low_pass"),
    "dWPP_r_low_pass": ("filters", "dWPP_r_low_pass"),
    "dWPP_post_low_pass": ("filters", "dWPP_post_low_pass"),
    "inter_low_pass": ("filters", "inter_low_pass"),
    "gate_regularizer": ("filters", "gate_regularizer"),
    "varphi_regularizer": ("filters", "varphi_regularizer"),
    "init_WPP_range": ("init", "WPP_range"),
    "init_WIP_range": ("init", "WIP_range"),
    "init_BPP_range": ("init", "BPP_range"),
    "init_BPI_range": ("init", "BPI_range"),
    "init_teacher_WPP_range": ("init", "teacher", "WPP_range"),
    "init_teacher_WIP_range": ("init", "teacher", "WIP_range"),
    "init_teacher_BPP_range": ("init", "teacher", "BPP_range"),
    "init_teacher_BPI_range": ("init", "teacher", "BPI_range"),
    "init_in_SPS": ("init", "in_SPS"),
    "copy_teacher_weights": ("init", "copy_teacher_weights"),
    "copy_teacher_voltages": ("init", "copy_teacher_voltages"),
    "input_signal": ("input", "signal"),
    "dataset_size": ("input", "dataset_size"),
    "epochs": ("input", "epochs"),
    "model_type": ("models",),
    "random_seed": ("seeds",),
    "rec_per_steps": ("recording", "every"),
}
"""Reference parameter -> location in the experiment."""

OPTIONAL_IN_REFERENCE = {"taur", "varphi_regularizer"}
"""Parameters the reference itself treats as optional (no note when absent)."""

REQUIRED_PARAMETERS = {"layers", "eta_fw", "eta_bw", "eta_IP", "eta_PI", "model_type", "random_seed"}
"""Parameters without a palmc default (absence is a validation error, not a note)."""

PAL_ONLY_PARAMETERS = (
    "alpha", "noise_type", "noise_mode", "noise_scale", "tauxi", "dtxi", "tauHP", "tauLO", "pyr_hi_pass",
    "dWPP_low_pass", "dWPP_r_low_pass", "dWPP_post_low_pass", "inter_low_pass", "gate_regularizer",
    "varphi_regularizer",
)

UNUSED_PARAMETERS: dict[str, str] = {
    "noise_deg": "only read by the 'uP_adaptive' noise mode, which the reference never implemented",
    "taueps": "only read by the 'uP_adaptive' noise mode, which the reference never implemented",
    "bw_connection_mode": "the reference always builds 'layered' feedback connections, as palmc does",
}
"""Reference parameters palmc does not use, with the reason."""

UNSUPPORTED_RECORDINGS: dict[str, str] = {
    "rec_epsilon": "epsilon belongs to the never-implemented 'uP_adaptive' noise mode",
    "rec_epsilon_LO": "epsilon belongs to the never-implemented 'uP_adaptive' noise mode",
    "rec_lat_mismatch": "palmc does not record the lateral mismatch",
}

PER_LAYER_PARAMETERS: dict[str, tuple[int, str]] = {
    # parameter -> (offset from len(layers), what one entry is for)
    "activation": (1, "pyramidal layer"),
    "eta_fw": (1, "weight layer"),
    "eta_bw": (2, "hidden layer"),
    "eta_IP": (2, "hidden layer"),
    "eta_PI": (2, "hidden layer"),
    "alpha": (2, "hidden layer"),
    "noise_scale": (2, "hidden layer"),
}


def read_legacy_params(path: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Read a reference ``params.json``: ``_comment`` keys are dropped, a repeated key keeps its last value (as
    ``json.load`` does) and is reported in the returned notes."""
    notes: list[str] = []

    def keep_last(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        for key, value in pairs:
            if key == COMMENT_KEY:
                continue
            if key in mapping:
                notes.append(f"{key}: given more than once; the last value {value!r} is used (as the reference did)")
            mapping[key] = value
        return mapping

    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ExperimentError(source, [Problem("", None, f"cannot read the file: {error.strerror or error}")]) from None
    except UnicodeDecodeError as error:
        raise ExperimentError(source, [Problem("", None, "expected a params.json text file (UTF-8), got "
                                               f"undecodable bytes ({error.reason})")]) from None
    try:
        params = json.loads(text, object_pairs_hook=keep_last)
    except json.JSONDecodeError as error:
        raise ExperimentError(source, [Problem("", error.lineno, f"malformed JSON: {error.msg}")]) from None
    except RecursionError:
        raise ExperimentError(source, [Problem("", None, "expected a JSON object of parameters, got nesting too "
                                               "deep to read")]) from None
    if not isinstance(params, dict):
        raise ExperimentError(source, [Problem("", None, "expected a JSON object of parameters")])
    return params, notes


def is_reference_params(path: str | Path) -> bool:
    """Whether ``path`` holds a reference ``params.json`` (a JSON object of the reference's parameter keys) rather
    than a palmc experiment (which has sections such as ``network``)."""
    try:
        params, _ = read_legacy_params(path)
    except ExperimentError:
        return False
    return "network" not in params and len(PARAMETER_TARGETS.keys() & params.keys()) >= 3


def _default_name(path: Path | None) -> str:
    if path is None:
        return "legacy"
    stem = path.parent.name if path.stem == "params" and path.parent.name else path.stem
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", stem).lstrip("_.+-")
    return name or "legacy"


def _set(tree: dict[str, Any], location: tuple[str, ...], value: Any) -> None:
    for key in location[:-1]:
        tree = tree.setdefault(key, {})
    tree[location[-1]] = value


def _truncate_per_layer(params: dict[str, Any], notes: list[str]) -> None:
    """Cut per-layer lists that are longer than the network needs (the reference only reads them from the front)."""
    layers = params.get("layers")
    if not (isinstance(layers, list) and len(layers) >= 3):
        return
    for key, (offset, per) in PER_LAYER_PARAMETERS.items():
        values = params.get(key)
        needed = len(layers) - offset
        if isinstance(values, list) and len(values) > needed:
            params[key] = values[:needed]
            notes.append(
                f"{key}: {len(values)} values given but the network {format_layers(layers)} has {needed} "
                f"{per}{'s' if needed != 1 else ''}; kept the first {needed} ({values[:needed]}), as the reference "
                "only reads them from the front"
            )


def _recording(params: dict[str, Any], task: str, model_type: Any, notes: list[str]) -> dict[str, Any]:
    """Map ``rec_per_steps`` and the ``rec_*`` flags to the recording section."""
    recording: dict[str, Any] = {}
    if "rec_per_steps" in params:
        recording["every"] = params["rec_per_steps"]
    variables: list[str] = []
    for key, value in params.items():
        if not key.startswith("rec_") or key == "rec_per_steps":
            continue
        variable = key[len("rec_"):]
        if key in UNSUPPORTED_RECORDINGS:
            verdict = "dropped" if value else "ignored"
            notes.append(f"{key} = {json.dumps(value)}: unsupported ({UNSUPPORTED_RECORDINGS[key]}); {verdict}")
        elif variable not in RECORDABLE_VARIABLES:
            notes.append(f"{key} = {json.dumps(value)}: not a variable palmc can record; ignored")
        elif value is True:
            if variable in FW_BW_ONLY_VARIABLES and task == "bw_only":
                notes.append(f"{key} = true: {variable} exists only in task fw_bw (bw_only has no target); dropped")
            else:
                variables.append(variable)
                if variable in PAL_ONLY_VARIABLES and model_type != "PAL":
                    notes.append(f"{key} = true: kept, but only PAL models have {variable} (the reference never "
                                 f"recorded it for {model_type}); it will be NaN for this model")
        elif value is not False:
            notes.append(f"{key} = {json.dumps(value)}: expected true or false; treated as false")
    flags = sorted(key for key in params if key.startswith("rec_") and key != "rec_per_steps")
    if flags or "rec_per_steps" in params:
        every = f"rec_per_steps = {params['rec_per_steps']} -> recording.every; " if "rec_per_steps" in params else ""
        notes.append(f"recording: {every}{len(flags)} rec_* flags -> recording.variables = {variables}")
        recording["variables"] = variables
    return recording


def convert_legacy(
    params: dict[str, Any] | str | Path, task: str, name: str | None = None
) -> tuple[Experiment, list[str]]:
    """Turn a reference ``params.json`` (a path or the parsed dict) into an :class:`Experiment` for ``task``.

    Returns the experiment and human-readable notes on everything not carried over one to one. Raises
    :class:`ExperimentError` if the parameters do not make a valid experiment."""
    path: Path | None = None
    notes: list[str] = []
    if isinstance(params, (str, Path)):
        path = Path(params)
        params, notes = read_legacy_params(path)
    else:
        params = {key: value for key, value in params.items() if key != COMMENT_KEY}
    source = str(path) if path is not None else "<legacy params>"
    if task not in TASKS:
        raise ExperimentError(source, [Problem("task", None, f"expected one of {', '.join(map(repr, TASKS))}, "
                                                             f"got {task!r}")])
    params = dict(params)
    _truncate_per_layer(params, notes)

    model_type = params.get("model_type")
    experiment_name = name or _default_name(path)
    data: dict[str, Any] = {
        "name": experiment_name,
        "description": f"Converted from the reference parameter file {path.name if path else '(dict)'} "
        f"for task {task}.",
        "task": task,
    }
    for key, location in PARAMETER_TARGETS.items():
        if key not in params:
            if key not in OPTIONAL_IN_REFERENCE | REQUIRED_PARAMETERS and location[0] != "recording":
                notes.append(f"{key}: absent; palmc's default for {dotted_location(location)} is used")
            continue
        value = params[key]
        if key == "model_type":
            data["models"] = [{"kind": value}]
        elif key == "random_seed":
            data["seeds"] = value if isinstance(value, list) else [value]
        elif key != "rec_per_steps":
            _set(data, location, value)
    data["recording"] = _recording(params, task, model_type, notes)

    for key, value in params.items():
        if key in PARAMETER_TARGETS or key.startswith("rec_"):
            continue
        reason = UNUSED_PARAMETERS.get(key, "not a parameter palmc knows")
        notes.append(f"{key} = {json.dumps(value)}: unused ({reason}); ignored")
    if model_type in ("BP", "FA"):
        present = [key for key in PAL_ONLY_PARAMETERS if key in params]
        if present:
            notes.append(f"model_type {model_type}: PAL-only settings ({', '.join(present)}) are kept as given but "
                         f"{model_type} ignores them")
    if "taur" in params and task == "fw_bw":
        notes.append(f"taur = {params['taur']}: in the reference it modulates the students' prospective voltages "
                     "only, not the teacher's")

    try:
        experiment = validate_experiment(data, source)
    except ExperimentError as error:
        raise ExperimentError(source, [_with_legacy_key(problem) for problem in error.problems]) from None
    return experiment, notes


def _with_legacy_key(problem: Problem) -> Problem:
    """Name the reference parameter a problem comes from."""
    for key, location in PARAMETER_TARGETS.items():
        dotted = dotted_location(location)
        if problem.field == dotted or problem.field.startswith(dotted + ".") or problem.field.startswith(dotted + "["):
            return Problem(problem.field, problem.line, f"{problem.message} (from reference parameter {key!r})")
    return problem


__all__ = ["convert_legacy", "read_legacy_params"]
