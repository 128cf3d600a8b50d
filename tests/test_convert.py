"""Tests of the import of reference parameter files (tests/data/legacy holds copies of the reference's files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palmc.schema import ExperimentError, convert_legacy, parse_experiment, read_legacy_params

LEGACY_DIR = Path(__file__).resolve().parent / "data" / "legacy"
LEGACY_FILES = sorted(LEGACY_DIR.glob("*.json"))


def tasks_for(path: Path) -> list[str]:
    """Fig4ab files are fw_bw experiments, the others bw_only; the template makes sense for both."""
    if path.stem.startswith("Fig4ab"):
        return ["fw_bw"]
    if path.stem == "template":
        return ["bw_only", "fw_bw"]
    return ["bw_only"]


CASES = [(path, task) for path in LEGACY_FILES for task in tasks_for(path)]


def test_all_reference_files_are_vendored() -> None:
    assert len(LEGACY_FILES) == 12


@pytest.mark.parametrize(("path", "task"), CASES, ids=[f"{path.stem}-{task}" for path, task in CASES])
def test_reference_file_converts(path: Path, task: str) -> None:
    experiment, notes = convert_legacy(path, task)
    raw = json.loads(path.read_text(encoding="utf-8"))  # json keeps the last of repeated keys
    assert experiment.task == task
    assert experiment.name == path.stem
    assert experiment.output.store == f"results/{path.stem}.zarr"
    assert [entry.kind for entry in experiment.models] == [raw["model_type"]]
    assert experiment.seeds == raw["random_seed"]
    assert experiment.recording.every == raw["rec_per_steps"]
    assert experiment.network.layers == raw["layers"]
    # validates and round-trips through YAML
    again = parse_experiment(experiment.to_yaml(), f"{path.stem}.yaml")
    assert again == experiment
    # resolves to engine parameters that carry the file's values
    params = experiment.model_params(raw["model_type"])
    n_hidden = len(raw["layers"]) - 2
    assert params.eta_fw == tuple(raw["eta_fw"][: n_hidden + 1])
    assert params.eta_bw == tuple(raw["eta_bw"][:n_hidden])
    assert params.alpha == tuple(raw["alpha"][:n_hidden])
    assert params.noise_scale == tuple(raw["noise_scale"][:n_hidden])
    assert params.taur == raw.get("taur", 1.0)
    assert params.varphi_regularizer is raw.get("varphi_regularizer", False)
    assert params.init_teacher_WPP_range == tuple(raw["init_teacher_WPP_range"])
    assert experiment.protocol().steps_per_presentation == round(raw["Tpres"] / raw["dt"])
    # unused keys are reported, never silently dropped
    text = "\n".join(notes)
    assert "noise_deg" in text
    assert "rec_epsilon" in text and "rec_lat_mismatch" in text and "unsupported" in text
    assert "rec_per_steps" in text


def test_recording_flags_map_to_variables() -> None:
    experiment, notes = convert_legacy(LEGACY_DIR / "template.json", "fw_bw")
    assert experiment.recording.variables == [
        "MSE", "error", "input", "target", "WPP", "WIP", "BPP", "BPI", "dWPP", "rP_breve", "vbas",
    ]
    experiment, notes = convert_legacy(LEGACY_DIR / "template.json", "bw_only")
    assert "MSE" not in experiment.recording.variables
    assert any(note.startswith("rec_MSE = true") and "fw_bw" in note for note in notes)


def test_pal_only_recordings_are_kept() -> None:
    params, _ = read_legacy_params(LEGACY_DIR / "Fig3abc.json")
    params.update(rec_noise=True, rec_vapi_noise=True, rec_rP_breve_HI=True, rec_epsilon=True)
    experiment, notes = convert_legacy(params, "bw_only")
    assert {"noise", "vapi_noise", "rP_breve_HI"} <= set(experiment.recording.variables)
    assert any(note.startswith("rec_epsilon = true") and "dropped" in note for note in notes)


def test_per_layer_lists_are_truncated_with_a_note() -> None:
    experiment, notes = convert_legacy(LEGACY_DIR / "Fig4ab_PAL.json", "fw_bw")
    assert experiment.plasticity.alpha == [1e-6]
    assert any(note.startswith("alpha: 3 values given") and "[1,1,1]" in note for note in notes)


def test_repeated_comment_keys_are_read_and_other_repeats_reported(tmp_path: Path) -> None:
    source = (LEGACY_DIR / "template.json").read_text(encoding="utf-8")
    assert source.count('"_comment"') > 1
    repeated = source.replace('"epochs": 5000,', '"epochs": 5000,\n    "epochs": 7,')
    path = tmp_path / "params.json"
    path.write_text(repeated, encoding="utf-8")
    experiment, notes = convert_legacy(path, "bw_only")
    assert experiment.input.epochs == 7
    assert any(note.startswith("epochs: given more than once") for note in notes)
    assert experiment.name == tmp_path.name  # a params.json is named after its folder


def test_taur_and_unknown_keys() -> None:
    experiment, notes = convert_legacy(LEGACY_DIR / "Fig6_tauxi10_rescale_lr_u.json", "bw_only")
    assert experiment.dynamics.taur == 0.0
    params, _ = read_legacy_params(LEGACY_DIR / "Fig6_tauxi10_rescale_lr_u.json")
    params.update(taueps=5.0, bw_connection_mode="layered", favourite_colour="blue")
    experiment, notes = convert_legacy(params, "fw_bw", name="fig6")
    assert experiment.name == "fig6"
    text = "\n".join(notes)
    assert "taueps = 5.0: unused" in text
    assert "bw_connection_mode" in text
    assert "favourite_colour" in text
    assert "taur = 0.0" in text  # only the students' prospectivity is modulated in the reference


def test_missing_optional_keys_use_defaults() -> None:
    params, _ = read_legacy_params(LEGACY_DIR / "Fig4ab_BP.json")
    del params["gl"], params["tauHP"]
    experiment, notes = convert_legacy(params, "fw_bw")
    assert experiment.dynamics.gl == 0.03 and experiment.filters.varphi_regularizer is False
    assert any(note.startswith("gl: absent") for note in notes)
    assert not any(note.startswith("taur") or note.startswith("varphi_regularizer") for note in notes)


def test_invalid_reference_parameters_raise() -> None:
    params, _ = read_legacy_params(LEGACY_DIR / "Fig3abc.json")
    params["noise_mode"] = "uP_adaptive"
    with pytest.raises(ExperimentError) as caught:
        convert_legacy(params, "bw_only")
    assert "noise.mode" in str(caught.value) and "'noise_mode'" in str(caught.value)
    params, _ = read_legacy_params(LEGACY_DIR / "Fig3abc.json")
    params["eta_bw"] = [1, 2]
    with pytest.raises(ExperimentError, match=r"plasticity.eta_bw: expected 3 values"):
        convert_legacy(params, "bw_only")
    with pytest.raises(ExperimentError, match="task"):
        convert_legacy(LEGACY_DIR / "Fig3abc.json", "both")


def test_missing_legacy_file(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError) as caught:
        convert_legacy(tmp_path / "absent.json", "bw_only")
    assert str(tmp_path / "absent.json") in str(caught.value)
