"""Tests of the experiment schema, YAML loading and error reporting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from palmc.engine.params import ModelParams, Protocol
from palmc.schema import (
    Experiment,
    ExperimentError,
    dump_experiment,
    load_experiment,
    parse_experiment,
    validate_experiment,
)
from palmc.plan import make_plan
from palmc.schema.generate import schema_json, schema_path
from palmc.schema.loading import ExperimentLoader, dump_yaml, read_yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = REPO_ROOT / "experiments" / "quickstart.yaml"

BASE_YAML = """\
name: demo
task: bw_only
network:
  layers: [5, 20, 10, 20, 5]
  activation: logistic
dynamics:
  dt: 0.01
  Tpres: 1
  settling_time: 10
plasticity:
  eta_fw: [1, 1, 1, 1]
  eta_bw: [50, 50, 50]
  eta_IP: [0, 0, 0]
  eta_PI: [5, 5, 5]
  alpha: [1e-5, 1e-5, 1e-5]
  dWPP_use_activation: true
noise:
  type: OU
  mode: const
  scale: [0.05, 0.05, 0.05]
  tauxi: 0.1
  dtxi: 0.01
filters:
  dWPP_post_low_pass: false
input:
  dataset_size: 4
  epochs: 2
models:
  - kind: PAL
  - kind: FA
    overrides:
      plasticity:
        eta_bw: [0, 0, 0]
  - kind: BP
    name: backprop
    overrides:
      network:
        activation: [relu, tanh, linear, logistic]
seeds: [123, 456]
recording:
  every: 100
"""


def write(tmp_path: Path, text: str, name: str = "x.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(text: str, fragment: str) -> int:
    """1-based line of the first line containing ``fragment``."""
    for number, line in enumerate(text.splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in text")


# ---- the committed files -------------------------------------------------------------------------------------


def test_schema_file_is_current() -> None:
    assert schema_path().read_text(encoding="utf-8") == schema_json(), (
        "schemas/experiment.schema.json is stale: run python -m palmc.schema.generate"
    )


def test_schema_documents_every_field() -> None:
    import json

    schema = json.loads(schema_json())

    def walk(node: object, where: str) -> None:
        if isinstance(node, dict):
            for name, prop in node.get("properties", {}).items():
                assert prop.get("description"), f"{where}.{name} has no description"
            for key, value in node.items():
                walk(value, f"{where}.{key}")
        elif isinstance(node, list):
            for item in node:
                walk(item, where)

    walk(schema, "schema")


def test_quickstart_loads() -> None:
    experiment = load_experiment(QUICKSTART)
    assert experiment.name == "quickstart"
    assert experiment.model_names() == ["BP", "FA", "PAL"]
    assert experiment.protocol() == Protocol(
        task="bw_only", dataset_size=10, epochs=60, steps_per_presentation=100, settling_steps=500
    )
    assert experiment.recording.every == 100
    assert make_plan(experiment).n_runs == 9
    assert experiment.model_params("FA").eta_bw == (50.0, 50.0)  # shared; FA never updates its feedback anyway
    assert experiment.yaml_text == QUICKSTART.read_text(encoding="utf-8")


# ---- resolution ----------------------------------------------------------------------------------------------


def test_protocol_and_run_specs() -> None:
    experiment = parse_experiment(BASE_YAML)
    assert experiment.protocol() == Protocol(
        task="bw_only", dataset_size=4, epochs=2, steps_per_presentation=100, settling_steps=1000
    )
    plan = make_plan(experiment, seeds_per_batch=2)
    specs = [spec for batch in plan.batches for spec in plan.runs(batch)]
    assert sorted((spec.seed, spec.model_name) for spec in specs) == [
        (123, "FA"), (123, "PAL"), (123, "backprop"), (456, "FA"), (456, "PAL"), (456, "backprop"),
    ]
    assert all(spec.input_seed == 123 and spec.teacher_seed_source == 123 for spec in specs)
    assert all(spec.params == experiment.model_params(spec.model_name) for spec in specs)


def test_overrides_merge_and_model_params() -> None:
    experiment = parse_experiment(BASE_YAML)
    pal, fa, bp = (experiment.model_params(name) for name in ("PAL", "FA", "backprop"))
    assert isinstance(pal, ModelParams)
    assert pal.model == "PAL" and fa.model == "FA" and bp.model == "BP"
    assert pal.layers == (5, 20, 10, 20, 5)
    assert pal.activations == ("logistic",) * 4
    assert bp.activations == ("relu", "tanh", "linear", "logistic")
    assert pal.eta_bw == (50.0, 50.0, 50.0)
    assert fa.eta_bw == (0.0, 0.0, 0.0)
    assert fa.eta_PI == pal.eta_PI == (5.0, 5.0, 5.0)  # untouched fields are inherited
    assert pal.alpha == (1e-5,) * 3 and pal.noise_scale == (0.05,) * 3
    assert pal.settling_time == 10.0 and pal.Tpres == 1.0 and pal.dt == 0.01
    # PAL-only options are passed on as given for BP/FA (the engine ignores them)
    assert bp.noise_scale == (0.05,) * 3 and bp.dWPP_low_pass is True
    assert experiment.model_names() == ["PAL", "FA", "backprop"]


def test_nested_override_keeps_unset_siblings() -> None:
    text = BASE_YAML.replace(
        "  - kind: PAL\n",
        "  - kind: PAL\n    overrides:\n      init:\n        teacher: {WPP_range: [0, 2]}\n      dynamics: {taur: 0}\n",
    )
    params = parse_experiment(text).model_params("PAL")
    assert params.init_teacher_WPP_range == (0.0, 2.0)
    assert params.init_teacher_BPP_range == (-1.0, 1.0)
    assert params.taur == 0.0 and params.gl == 0.03


def test_null_overrides_mean_none() -> None:
    text = BASE_YAML.replace(
        "  - kind: PAL\n",
        "  - kind: PAL\n    overrides: {noise: null}\n"
        "  - kind: FA\n    name: FA2\n    overrides: {plasticity: {alpha: null}}\n"
        "  - kind: FA\n    name: FA3\n    overrides: null\n",
    )
    experiment = parse_experiment(text)
    assert experiment.model_params("PAL").noise_scale == (0.05,) * 3
    assert experiment.model_params("FA2").alpha == ()  # explicitly cleared; allowed without PAL
    assert experiment.model_params("FA3") == experiment.model_params("FA").with_(eta_bw=(50.0, 50.0, 50.0))
    with pytest.raises(ExperimentError, match=r"models\[0\].overrides.plasticity.alpha: required for PAL"):
        parse_experiment(BASE_YAML.replace("  - kind: PAL\n", "  - kind: PAL\n    overrides: {plasticity: {alpha: null}}\n"))
    with pytest.raises(ExperimentError, match=r"models\[0\].overrides.noise.tauxi: expected a number, got null"):
        parse_experiment(BASE_YAML.replace("  - kind: PAL\n", "  - kind: PAL\n    overrides: {noise: {tauxi: null}}\n"))


def test_defaults_are_filled_in() -> None:
    experiment = parse_experiment(BASE_YAML)
    assert experiment.recording.variables == ["WPP", "BPP", "vbas"]
    assert experiment.output.store == "results/demo.zarr"
    assert experiment.models[0].name == "PAL"
    fw_bw = parse_experiment(BASE_YAML.replace("task: bw_only", "task: fw_bw"))
    assert fw_bw.recording.variables == ["WPP", "BPP", "vbas", "MSE", "error", "target"]


def test_fw_bw_with_different_input_and_output_widths_and_long_settling() -> None:
    text = (BASE_YAML.replace("task: bw_only", "task: fw_bw").replace("[5, 20, 10, 20, 5]", "[4, 20, 10, 20, 2]")
            .replace("settling_time: 10", "settling_time: 500"))
    experiment = parse_experiment(text)
    assert experiment.protocol().settling_steps > experiment.protocol().steps_per_epoch


def test_pal_options_are_optional_without_pal() -> None:
    text = """\
name: bp_only
task: fw_bw
network: {layers: [2, 3, 2]}
plasticity: {eta_fw: [1, 1], eta_bw: [0], eta_IP: [0], eta_PI: [0], dWPP_use_activation: false}
filters: {dWPP_post_low_pass: true}
models: [{kind: BP}, {kind: FA}]
seeds: [1]
"""
    experiment = parse_experiment(text)
    assert experiment.model_params("BP").alpha == () and experiment.model_params("FA").noise_scale == ()
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(text.replace("[{kind: BP}, {kind: FA}]", "[{kind: BP}, {kind: PAL}]"), "p.yaml")
    message = str(caught.value)
    assert "plasticity.alpha: for model 'PAL': required for PAL models" in message
    assert "noise.scale" in message and "filters.dWPP_post_low_pass" in message


def test_whole_multiples_use_a_relative_tolerance() -> None:
    text = BASE_YAML.replace("dt: 0.01", "dt: 0.1").replace("Tpres: 1", "Tpres: 0.3").replace("dtxi: 0.01", "dtxi: 0.1")
    assert parse_experiment(text).protocol().steps_per_presentation == 3


def test_constructing_in_python_validates() -> None:
    data = yaml.load(BASE_YAML, Loader=ExperimentLoader)
    assert Experiment.model_validate(data) == parse_experiment(BASE_YAML)
    data["plasticity"]["eta_bw"] = [1, 2]
    with pytest.raises(ExperimentError) as caught:
        validate_experiment(data, "data")
    assert "data: plasticity.eta_bw: for models 'PAL', 'backprop': expected 3 values" in str(caught.value)


# ---- YAML ----------------------------------------------------------------------------------------------------


def test_exponent_scalars_are_floats() -> None:
    data, _ = read_yaml("a: 1e-2\nb: 1e6\nc: -1E+3\nd: .5e1\ne: 12\nf: 1.5\ng: '1e6'\nh: 1_000\n")
    assert data == {"a": 0.01, "b": 1e6, "c": -1000.0, "d": 5.0, "e": 12, "f": 1.5, "g": "1e6", "h": 1000}
    assert isinstance(data["a"], float) and isinstance(data["b"], float) and isinstance(data["e"], int)
    assert isinstance(data["g"], str)
    # plain PyYAML would have read these as strings; the loader must not change the global SafeLoader
    assert yaml.safe_load("a: 1e-2")["a"] == "1e-2"


def test_exponent_scalars_in_experiments() -> None:
    text = BASE_YAML.replace("dt: 0.01", "dt: 1e-2").replace("dataset_size: 4", "dataset_size: 1e1")
    experiment = parse_experiment(text)
    assert experiment.dynamics.dt == 0.01
    assert experiment.input.dataset_size == 10 and isinstance(experiment.input.dataset_size, int)
    assert experiment.plasticity.alpha == [1e-5, 1e-5, 1e-5]
    with pytest.raises(ExperimentError, match="input.dataset_size"):
        parse_experiment(BASE_YAML.replace("dataset_size: 4", "dataset_size: 1.5e0"))


def test_settings_added_later_leave_older_experiments_text_and_identity_alone() -> None:
    """An experiment written before the learning-rate schedule existed (its text has no eta_decay*) keeps that
    text, and so the identity its stores carry: they still resume, and ``palmc reproduce`` still reuses them.
    With a schedule the settings are in the text, and it round-trips."""
    from palmc.schema.experiment import LATER_SETTINGS

    shipped = Path(__file__).resolve().parents[1] / "experiments" / "fig3abc.yaml"
    experiment = load_experiment(shipped)
    older = experiment.to_dict()
    for section, names in LATER_SETTINGS.items():
        for name in names:
            del older[section][name]
    older_text = dump_yaml(older)  # the text a palmc without these settings wrote for this experiment
    assert experiment.to_yaml() == older_text
    assert parse_experiment(older_text).to_yaml() == older_text
    assert make_plan(parse_experiment(older_text)).experiment_sha256 == make_plan(experiment).experiment_sha256

    data = experiment.to_dict()
    data["plasticity"].update(eta_decay=0.9, eta_decay_after=3)
    scheduled = validate_experiment(data)
    text = scheduled.to_yaml()
    assert "eta_decay: 0.9" in text and "eta_decay_after: 3" in text and "eta_decay_rates" not in text
    assert parse_experiment(text) == scheduled
    assert make_plan(scheduled).experiment_sha256 != make_plan(experiment).experiment_sha256


def test_strings_that_look_like_numbers_survive_dumping() -> None:
    text = dump_yaml({"name": "1e6", "x": 1e-5})
    assert read_yaml(text)[0] == {"name": "1e6", "x": 1e-5}


def test_yaml_round_trip(tmp_path: Path) -> None:
    experiment = parse_experiment(BASE_YAML)
    again = parse_experiment(experiment.to_yaml())
    assert again == experiment
    assert again.to_yaml() == experiment.to_yaml()
    path = tmp_path / "out" / "demo.yaml"
    dump_experiment(experiment, path)
    loaded = load_experiment(path)
    assert loaded == experiment
    assert loaded.yaml_text == path.read_text(encoding="utf-8")
    assert [loaded.model_params(name) for name in loaded.model_names()] == [
        experiment.model_params(name) for name in experiment.model_names()
    ]


def test_yaml_text_is_the_original_until_changed() -> None:
    experiment = parse_experiment(BASE_YAML)
    assert experiment.yaml_text == BASE_YAML
    changed = experiment.model_copy(deep=True)
    changed.seeds = [7]
    assert parse_experiment(changed.yaml_text).seeds == [7]


# ---- errors --------------------------------------------------------------------------------------------------

BAD_CASES = {
    # case: (replace this, with this (or tuples of both), expected field, fragment of the reported line, fragment of the message)
    "unknown field": ("  tauxi: 0.1\n", "  tauxi: 0.1\n  colour: red\n", "noise.colour", "colour: red",
                      "unknown field 'colour'"),
    "wrong type": ("dataset_size: 4", "dataset_size: many", "input.dataset_size", "dataset_size: many",
                   "expected an integer, got 'many'"),
    "wrong list length": ("eta_bw: [50, 50, 50]", "eta_bw: [50, 50]", "plasticity.eta_bw", "eta_bw: [50, 50]",
                          "expected 3 values (one per hidden layer of [5,20,10,20,5]), got 2"),
    "wrong eta_fw length": ("eta_fw: [1, 1, 1, 1]", "eta_fw: [1, 1, 1]", "plasticity.eta_fw", "eta_fw:",
                            "expected 4 values (one per weight layer of [5,20,10,20,5]), got 3"),
    "non-multiple Tpres": ("Tpres: 1", "Tpres: 1.005", "dynamics.Tpres", "Tpres: 1.005",
                           "expected a whole multiple of dt = 0.01 ms"),
    "non-multiple settling_time": ("settling_time: 10", "settling_time: 10.001", "dynamics.settling_time",
                                   "settling_time:", "whole multiple"),
    "non-multiple dtxi": ("dtxi: 0.01", "dtxi: 0.015", "noise.dtxi", "dtxi:", "for model 'PAL': expected a whole"),
    "uP_adaptive": ("mode: const", "mode: uP_adaptive", "noise.mode", "mode: uP_adaptive",
                    "the reference never implemented it"),
    "post low-pass without activation": (
        "  - kind: PAL\n",
        "  - kind: PAL\n    overrides:\n      filters: {dWPP_post_low_pass: true}\n"
        "      plasticity: {dWPP_use_activation: false}\n",
        "models[0].overrides.filters.dWPP_post_low_pass", "dWPP_post_low_pass: true", "crashes in the reference"),
    "post low-pass without activation (shared)": (
        ("  dWPP_post_low_pass: false", "  dWPP_use_activation: true"),
        ("  dWPP_post_low_pass: true", "  dWPP_use_activation: false"),
        "filters.dWPP_post_low_pass", "dWPP_post_low_pass: true", "for model 'PAL'"),
    "unknown activation": ("activation: logistic", "activation: sigmoid", "network.activation",
                           "activation: sigmoid", "'logistic', 'hard_sigmoid', 'relu', 'soft_relu', 'linear', 'tanh'"),
    "unknown activation in list": ("activation: [relu, tanh, linear, logistic]",
                                   "activation: [relu, tanh, linear, swish]",
                                   "models[2].overrides.network.activation", "swish", "got 'swish'"),
    "activation list length": ("activation: logistic", "activation: [relu, relu]", "network.activation",
                               "activation: [relu, relu]", "expected 4 values (one per pyramidal layer"),
    "unknown model kind": ("kind: BP", "kind: GN", "models[2].kind", "kind: GN", "'BP', 'FA' or 'PAL'"),
    "unknown noise type": ("type: OU", "type: pink", "noise.type", "type: pink", "'OU' or 'hold_white_noise'"),
    "unknown field in overrides": ("        eta_bw: [0, 0, 0]", "        eta_bw: [0, 0, 0]\n        eta_xx: 1",
                                   "models[1].overrides.plasticity.eta_xx", "eta_xx", "unknown field"),
    "wrong length in overrides": ("        eta_bw: [0, 0, 0]", "        eta_bw: [0, 0]",
                                  "models[1].overrides.plasticity.eta_bw", "eta_bw: [0, 0]", "got 2"),
    "too few layers": ("[5, 20, 10, 20, 5]", "[5, 5]", "network.layers", "layers: [5, 5]", "at least 3 layers"),
    "reversed range": ("filters:\n", "init: {WPP_range: [1, -1]}\nfilters:\n", "init.WPP_range", "WPP_range",
                       "low <= high"),
    "negative seed": ("seeds: [123, 456]", "seeds: [123, -1]", "seeds[1]", "seeds:", ">= 0"),
    "huge seed": ("seeds: [123, 456]", "seeds: [123, 4294967296]", "seeds[1]", "seeds:", "< 4294967296"),
    "repeated seed": ("seeds: [123, 456]", "seeds: [123, 123]", "seeds", "seeds:", "repeated 123"),
    "repeated model name": ("    name: backprop\n", "    name: PAL\n", "models[2].name", "name: PAL",
                            "unique model name"),
    "recording every 0": ("every: 100", "every: 0", "recording.every", "every: 0", ">= 1"),
    "MSE in bw_only": ("  every: 100", "  every: 100\n  variables: [WPP, MSE]", "recording.variables[1]",
                       "variables:", "only in task fw_bw"),
    "unknown variable": ("  every: 100", "  every: 100\n  variables: [WPP, voltage]", "recording.variables[1]",
                         "variables:", "'uP', 'uP_breve'"),
    "infinite Tpres": ("Tpres: 1", "Tpres: .inf", "dynamics.Tpres", "Tpres: .inf", "expected a finite number"),
    "zero leak": ("  settling_time: 10", "  settling_time: 10\n  gl: 0", "dynamics.gl", "gl: 0", "> 0"),
    "missing section field": ("  eta_PI: [5, 5, 5]\n", "", "plasticity.eta_PI", "plasticity:", "missing"),
    "shared dt overridden": ("  - kind: PAL\n", "  - kind: PAL\n    overrides: {dynamics: {dt: 0.02}}\n",
                             "models[0].overrides.dynamics.dt", "dt: 0.02", "cannot differ between models"),
    "layers overridden": ("  - kind: PAL\n", "  - kind: PAL\n    overrides: {network: {layers: [5, 3, 5]}}\n",
                          "models[0].overrides.network.layers", "layers: [5, 3, 5]", "cannot differ"),
    "repeated key": ("  epochs: 2", "  epochs: 2\n  epochs: 3", "input.epochs", "epochs: 3", "first on line"),
    "eta_decay 0": ("  dWPP_use_activation: true\n", "  dWPP_use_activation: true\n  eta_decay: 0\n",
                    "plasticity.eta_decay", "eta_decay: 0", "> 0"),
    "eta_decay above 1": ("  dWPP_use_activation: true\n", "  dWPP_use_activation: true\n  eta_decay: 1.5\n",
                          "plasticity.eta_decay", "eta_decay: 1.5", "<= 1"),
    "negative eta_decay_after": ("  dWPP_use_activation: true\n",
                                 "  dWPP_use_activation: true\n  eta_decay_after: -1\n",
                                 "plasticity.eta_decay_after", "eta_decay_after: -1", ">= 0"),
    "unknown decayed rate": ("  dWPP_use_activation: true\n",
                             "  dWPP_use_activation: true\n  eta_decay_rates: [eta_fw, alpha]\n",
                             "plasticity.eta_decay_rates[1]", "eta_decay_rates:", "'eta_fw', 'eta_bw'"),
    "repeated decayed rate": ("  dWPP_use_activation: true\n",
                              "  dWPP_use_activation: true\n  eta_decay_rates: [eta_fw, eta_fw]\n",
                              "plasticity.eta_decay_rates", "eta_decay_rates:", "expected each rate once"),
    "section of wrong type": ("input:\n  dataset_size: 4\n  epochs: 2\n", "input: 7\n", "input", "input: 7",
                              "expected a mapping"),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_names_file_field_and_line(tmp_path: Path, case: str) -> None:
    old, new, field, line_fragment, message_fragment = BAD_CASES[case]
    text = BASE_YAML
    for before, after in zip(*((old, new) if isinstance(old, tuple) else ((old,), (new,)))):
        assert before in text
        text = text.replace(before, after, 1)
    path = write(tmp_path, text)
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    error = caught.value
    assert error.path == str(path)
    matching = [problem for problem in error.problems if problem.field == field]
    assert matching, f"no problem at {field}: {error}"
    problem = matching[0]
    assert problem.line == line_of(text, line_fragment)
    assert message_fragment in problem.message
    assert f"{path}:{problem.line}: {field}: " in str(error)


def test_error_rendering_example() -> None:
    text = BASE_YAML.replace("eta_bw: [50, 50, 50]", "eta_bw: [50, 50]")
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(text, "experiments/x.yaml")
    assert str(caught.value) == (
        f"experiments/x.yaml:{line_of(text, 'eta_bw: [50, 50]')}: plasticity.eta_bw: for models 'PAL', 'backprop': "
        "expected 3 values (one per hidden layer of [5,20,10,20,5]), got 2"
    )
    single = text.replace("  - kind: FA\n    overrides:\n      plasticity:\n        eta_bw: [0, 0, 0]\n", "")
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(single, "experiments/x.yaml")
    assert str(caught.value) == (
        f"experiments/x.yaml:{line_of(single, 'eta_bw: [50, 50]')}: plasticity.eta_bw: "
        "expected 3 values (one per hidden layer of [5,20,10,20,5]), got 2"
    )


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert "no such file" in str(caught.value)


def test_malformed_yaml_reports_line(tmp_path: Path) -> None:
    text = BASE_YAML.replace("  epochs: 2", "  epochs: [2")
    path = write(tmp_path, text)
    with pytest.raises(ExperimentError) as caught:
        load_experiment(path)
    (problem,) = caught.value.problems
    assert problem.line is not None and problem.line >= line_of(text, "epochs: [2")
    assert "malformed YAML" in problem.message
    assert str(caught.value).startswith(f"{path}:{problem.line}: malformed YAML")


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "just text\n"])
def test_document_must_be_a_mapping(text: str) -> None:
    with pytest.raises(ExperimentError, match="expected a mapping"):
        parse_experiment(text, "top.yaml")


def test_several_problems_are_reported_together() -> None:
    text = BASE_YAML.replace("Tpres: 1", "Tpres: 1.005").replace("eta_IP: [0, 0, 0]", "eta_IP: [0]")
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(text, "many.yaml")
    fields = {problem.field for problem in caught.value.problems}
    assert {"dynamics.Tpres", "plasticity.eta_IP"} <= fields
    lines = [problem.line for problem in caught.value.problems]
    assert lines == sorted(lines)
