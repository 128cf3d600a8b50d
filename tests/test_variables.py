"""The variable declaration (palmc.engine.variables) against everything that must agree with it: the engine's
State, the compiled kernels' packed fields, the recorder, the schema and the dataset contract."""

from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pytest

from palmc.engine.params import ModelParams, Protocol, RunSpec
from palmc.engine.state import State
from palmc.engine.tasks import Simulation
from palmc.engine.variables import (PLACES, RECORDABLE, STATE_FIELDS, VARIABLES, fields_of, fields_read,
                                    variables_for)
from palmc.schema.experiment import FW_BW_ONLY_VARIABLES, PAL_ONLY_VARIABLES, RECORDABLE_VARIABLES
from palmc.schema.generate import contract_path, contract_text, schema_json
from palmc.store.recorder import ChunkRecorder

LAYERS = (2, 4, 3, 2)  # fw_bw needs as many inputs as outputs; ragged, so that padding shows


def make_sim(models: tuple[str, ...] = ("PAL", "BP"), task: str = "fw_bw") -> Simulation:
    L = len(LAYERS) - 1
    def params(model: str) -> ModelParams:
        return ModelParams(model=model, layers=LAYERS, activations=("logistic",) * L, eta_fw=(1.0,) * L,
                           eta_bw=(5.0 if model == "PAL" else 0.0,) * (L - 1), eta_IP=(0.5,) * (L - 1),
                           eta_PI=(0.5,) * (L - 1), alpha=(1e-3,) * (L - 1), noise_scale=(0.05,) * (L - 1))

    runs = [RunSpec(seed=11 + i, model_name=m, params=params(m), input_seed=11, teacher_seed_source=11)
            for i, m in enumerate(models)]
    return Simulation(runs, Protocol(task=task, dataset_size=3, epochs=2, steps_per_presentation=5,
                                     settling_steps=10))


def test_state_fields_are_the_declared_ones_in_order() -> None:
    assert [f.name for f in fields(State) if f.name != "step"] == list(STATE_FIELDS)


def test_state_entries_have_the_declared_shapes() -> None:
    sim = make_sim()
    R = len(sim.runs)
    for name, var in STATE_FIELDS.items():
        value = getattr(sim.state, name)
        if var.place.per_layer:
            assert [a.shape for a in value] == [(R, *shape) for _, shape in var.place.entry_shapes(LAYERS)], name
        elif var.kind == "input":
            assert value.shape == (R, LAYERS[0]), name
        else:
            assert var.kind == "run" and value.shape == (R,), name


def test_kernels_pack_the_declared_fields() -> None:
    """Each packed field tuple holds exactly the State fields of one place (the kernels' argument order is
    theirs to choose)."""
    from palmc.engine.compiled import packing

    groups = {"pyramidal": packing.VEC_P, "interneuron": packing.VEC_I, "apical": packing.VEC_A,
              "forward": packing.MAT_W, "lateral": packing.MAT_I, "feedback": packing.MAT_B}
    for place, packed in groups.items():
        assert sorted(packed) == sorted(fields_of(place)), place
    assert sorted(packing.PLAIN) == sorted(fields_of("input") + fields_of("run"))
    assert sorted(packing.VEC_FIELDS + packing.MAT_FIELDS + packing.PLAIN) == sorted(STATE_FIELDS)


def test_declaration_is_consistent() -> None:
    assert set(PLACES) >= {v.kind for v in STATE_FIELDS.values()}
    for var in VARIABLES.values():
        assert var.recordable and var.dims[0] == "time" and var.dims[-2:] == ("seed", "model")
        assert set(var.fields_read) <= set(STATE_FIELDS), var.name
    assert not any(v.recordable for v in STATE_FIELDS.values() if v.name not in VARIABLES)


def test_schema_allows_exactly_the_declared_variables() -> None:
    assert RECORDABLE_VARIABLES == RECORDABLE
    assert set(FW_BW_ONLY_VARIABLES) == {"MSE", "error", "target"}
    assert set(PAL_ONLY_VARIABLES) == {"rP_breve_HI", "vapi_noise", "noise"}
    recording = json.loads(schema_json())["$defs"]["Recording"]["properties"]["variables"]
    allowed = next(option for option in recording["anyOf"] if option.get("type") == "array")["items"]["enum"]
    assert allowed == list(RECORDABLE)


def test_dataset_contract_table_is_current() -> None:
    current = contract_path().read_text(encoding="utf-8")
    assert contract_text(current) == current, (
        "docs/dataset-contract.md's variables table is stale: run python -m palmc.schema.generate")


@pytest.mark.parametrize("task, models, expected", [
    ("fw_bw", {"PAL"}, set(RECORDABLE)),
    ("fw_bw", {"BP", "FA"}, set(RECORDABLE) - {"rP_breve_HI", "vapi_noise", "noise"}),
    ("bw_only", {"BP", "PAL"}, set(RECORDABLE) - {"MSE", "error", "target"}),
    ("supervised", {"BP"}, set(RECORDABLE) - {"rP_breve_HI", "vapi_noise", "noise"}),
])
def test_variables_for(task: str, models: set[str], expected: set[str]) -> None:
    assert {v.name for v in variables_for(RECORDABLE, task, models)} == expected


def test_fields_read() -> None:
    variables = [VARIABLES[name] for name in ("input", "target", "MSE", "WPP", "error", "noise")]
    assert fields_read(variables) == ("uP_breve", "WPP", "noise")


@pytest.mark.parametrize("task", ["fw_bw", "bw_only"])
def test_recorder_reads_only_its_fields_read(task: str) -> None:
    """A record made from a state whose other fields are garbage equals one made from the true state: the
    recorder's ``fields_read`` is all a compiled engine must keep current at a record step."""
    sim = make_sim(task=task)
    sim.advance(17)
    variables = variables_for(RECORDABLE, task, {"PAL", "BP"})
    true_rec, partial_rec = (ChunkRecorder(sim, variables, 1, 1) for _ in range(2))
    true_rec(sim)
    assert set(partial_rec.fields_read) == {v.name for v in variables if v.name in STATE_FIELDS} | (
        {"uP_breve"} if task == "fw_bw" else set())
    for name in set(STATE_FIELDS) - set(partial_rec.fields_read):
        value = getattr(sim.state, name)
        setattr(sim.state, name, [np.full_like(a, np.inf) for a in value] if isinstance(value, list)
                else np.full_like(value, 7))
    partial_rec(sim)
    _, expected = true_rec.take()
    _, got = partial_rec.take()
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
