"""The compiled kernel against the NumPy engine (the specification), option by option.

Each case builds the same small batch three times: one is advanced by ``Simulation.advance`` with two recorders
(every step and every third step), the others by ``driver.advance`` with one recorder each. Final states, records,
generators, presentation orders and current inputs must agree (rtol 1e-9; in practice ~1e-12, the only
difference being the summation order of the mat-vecs).
"""

from __future__ import annotations

import math
import platform
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from palmc.engine.compiled import driver, lanes, libm_exp, neurons, packing
from palmc.engine.params import ModelParams, Protocol, RunSpec
from palmc.engine.tasks import Simulation
from palmc.engine.variables import RECORDABLE, VARIABLES, variables_for
from palmc.store.recorder import ChunkRecorder

RTOL, ATOL = 1e-9, 1e-12
BW_LAYERS = (3, 4, 3, 2)
FW_LAYERS = (2, 4, 3, 2)  # fw_bw needs as many inputs as outputs


def make_params(model: str = "PAL", layers: tuple[int, ...] = BW_LAYERS, **changes: Any) -> ModelParams:
    """Small-network parameters with different values per layer, so that index mix-ups show."""
    L = len(layers) - 1
    base: dict[str, Any] = dict(
        model=model, layers=tuple(layers), activations=("logistic",) * L,
        eta_fw=tuple([2.0, 1.0, 0.5, 0.4, 0.3][:L]), eta_bw=tuple([20.0, 15.0, 10.0, 5.0][: L - 1]),
        eta_IP=tuple([1.0, 0.8, 0.6, 0.4][: L - 1]), eta_PI=tuple([5.0, 4.0, 3.0, 2.0][: L - 1]),
        alpha=tuple([1e-3, 2e-3, 3e-3, 4e-3][: L - 1]), noise_scale=tuple([0.05, 0.04, 0.03, 0.02][: L - 1]),
    )
    if model != "PAL":
        base.update(eta_bw=(0.0,) * (L - 1))
    base.update(changes)
    return ModelParams(**base)


def make_sim(params: list[ModelParams] | ModelParams, task: str = "bw_only", seeds: tuple[int, ...] = (11, 12),
             dataset_size: int = 3, epochs: int = 2, Tp: int = 10, settling: int = 30) -> Simulation:
    """A batch with one run per (params, seed); a single ModelParams is used for every seed."""
    plist = params if isinstance(params, list) else [params] * len(seeds)
    runs = [RunSpec(seed=s, model_name=p.model, params=p, input_seed=seeds[0], teacher_seed_source=seeds[0])
            for s, p in zip(seeds, plist)]
    proto = Protocol(task=task, dataset_size=dataset_size, epochs=epochs, steps_per_presentation=Tp,
                     settling_steps=settling)
    return Simulation(runs, proto)


def recorder(sim: Simulation, every: int) -> ChunkRecorder:
    variables = variables_for(RECORDABLE, sim.protocol.task, {run.params.model for run in sim.runs})
    return ChunkRecorder(sim, variables, every, chunk_records=sim.protocol.total_steps // every + 1)


def assert_same(a: Simulation, b: Simulation, what: str = "") -> None:
    """Same state, generators, order and current input/target (state to rtol, the rest exactly)."""
    assert a.state.step == b.state.step
    sa, sb = a.state.arrays(), b.state.arrays()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].shape == sb[name].shape, name
        np.testing.assert_allclose(sb[name], sa[name], rtol=RTOL, atol=ATOL, err_msg=f"{what} state {name}")
    for ra, rb in zip(a.rngs, b.rngs):
        ka, kb = ra.get_state(), rb.get_state()
        np.testing.assert_array_equal(ka[1], kb[1], err_msg=f"{what} generator key")
        assert ka[2:] == kb[2:], f"{what} generator position / cached gaussian"
    np.testing.assert_array_equal(a.order, b.order)
    np.testing.assert_array_equal(a.current_input, b.current_input)
    if a.current_target is None:
        assert b.current_target is None
    else:
        np.testing.assert_array_equal(a.current_target, b.current_target)


def assert_same_records(ra: ChunkRecorder, rb: ChunkRecorder) -> None:
    steps_a, data_a = ra.take()
    steps_b, data_b = rb.take()
    assert steps_a == steps_b and steps_a
    for name in data_a:
        np.testing.assert_allclose(data_b[name], data_a[name], rtol=RTOL, atol=ATOL, equal_nan=True,
                                   err_msg=f"record {name}")


@pytest.fixture(params=["neurons", "lanes"])
def layout(request: pytest.FixtureRequest) -> str:
    """Both kernel layouts, whichever ``kernel.layout_for`` would pick for the network."""
    return str(request.param)


def check(build: Any, layout: str, splits: tuple[int, ...] | None = None, specialise: bool | None = None) -> None:
    """Run ``build()`` with both engines over the whole protocol and compare everything."""
    ref, one, three = build(), build(), build()
    assert driver.supports(one)
    rec_ref1, rec_ref3 = recorder(ref, 1), recorder(ref, 3)
    rec1, rec3 = recorder(one, 1), recorder(three, 3)
    total = ref.protocol.total_steps
    ref.advance(total, on_step=lambda s: (rec_ref1(s), rec_ref3(s)))
    driver.advance(one, total, rec1, layout=layout, specialise=specialise)
    for n in splits or (total,):  # resume-like calls of any length
        driver.advance(three, n, rec3, layout=layout, specialise=specialise)
    driver.advance(three, total, rec3, layout=layout, specialise=specialise)  # past the end: a no-op
    assert_same(ref, one, "every=1")
    assert_same(ref, three, "every=3")
    assert_same_records(rec_ref1, rec1)
    assert_same_records(rec_ref3, rec3)


PAL_BW_CASES: dict[str, dict[str, Any]] = {
    "base": {},
    "relu": dict(activations=("relu",) * 3),
    "soft_relu": dict(activations=("soft_relu",) * 3),
    "hard_sigmoid": dict(activations=("hard_sigmoid",) * 3),
    "linear": dict(activations=("linear",) * 3),
    "tanh": dict(activations=("tanh",) * 3),
    "activation_list": dict(activations=("tanh", "relu", "logistic")),
    "noise_uP": dict(noise_mode="uP"),
    "noise_uP_breve": dict(noise_mode="uP_breve"),
    "noise_vapi": dict(noise_mode="vapi"),
    "hold_dtxi_3dt": dict(noise_type="hold_white_noise", dtxi=0.03),
    "ou_dtxi_2dt": dict(dtxi=0.02),
    "ou_dtxi_fractional": dict(dtxi=0.015),  # period 1.5: the float modulo path
    "no_pyr_hi_pass": dict(pyr_hi_pass=False),
    "gate_regularizer": dict(gate_regularizer=True),
    "varphi_regularizer": dict(varphi_regularizer=True),
    "gate_and_varphi": dict(gate_regularizer=True, varphi_regularizer=True),
    "no_sps": dict(init_in_SPS=False),
    "eta_PI_zero": dict(eta_PI=(0.0, 4.0)),
    "eta_IP_zero": dict(eta_IP=(0.0, 0.8)),  # the kernel skips adding exact zeros to W^IP
    "eta_IP_zero_tanh": dict(eta_IP=(0.0, 0.0), activations=("tanh",) * 3),
    "taur_half": dict(taur=0.5),
    "taur_zero": dict(taur=0.0),
    "inter_low_pass": dict(inter_low_pass=True),
    "noise_scale_zero": dict(noise_scale=(0.0, 0.04)),  # all-zero noise: redrawn at every step
    "large_weights": dict(init_WPP_range=(-300.0, 300.0), init_BPP_range=(-300.0, 300.0)),  # exp beyond |x|>512
}


@pytest.mark.parametrize("case", sorted(PAL_BW_CASES))
def test_pal_bw_only_options(case: str, layout: str) -> None:
    check(lambda: make_sim(make_params("PAL", **PAL_BW_CASES[case])), layout)


FW_CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "PAL": ("PAL", {}),
    "FA": ("FA", {}),
    "BP": ("BP", {}),
    "PAL_inter_low_pass": ("PAL", dict(inter_low_pass=True)),
    "PAL_r_low_pass": ("PAL", dict(dWPP_r_low_pass=True)),
    "PAL_post_low_pass": ("PAL", dict(dWPP_post_low_pass=True)),
    "PAL_r_and_post_low_pass": ("PAL", dict(dWPP_r_low_pass=True, dWPP_post_low_pass=True)),
    "PAL_no_dWPP_low_pass": ("PAL", dict(dWPP_low_pass=False)),
    "PAL_no_activation": ("PAL", dict(dWPP_use_activation=False)),
    "PAL_no_activation_r_low_pass": ("PAL", dict(dWPP_use_activation=False, dWPP_r_low_pass=True)),
    "PAL_no_activation_post_low_pass": ("PAL", dict(dWPP_use_activation=False, dWPP_post_low_pass=True)),
    "PAL_activation_list": ("PAL", dict(activations=("tanh", "relu", "logistic"))),
    "PAL_copy_teacher_weights": ("PAL", dict(copy_teacher_weights=True)),
    "PAL_copy_teacher_voltages": ("PAL", dict(copy_teacher_voltages=True)),
    "FA_copy_teacher_voltages": ("FA", dict(copy_teacher_voltages=True)),
    "BP_eta_PI": ("BP", dict(eta_PI=(0.5, 0.0))),
}


@pytest.mark.parametrize("case", sorted(FW_CASES))
def test_fw_bw_options(case: str, layout: str) -> None:
    model, changes = FW_CASES[case]
    check(lambda: make_sim(make_params(model, FW_LAYERS, **changes), task="fw_bw"), layout)


@pytest.mark.parametrize("model", ["BP", "FA"])
def test_bp_fa_bw_only(model: str, layout: str) -> None:
    check(lambda: make_sim(make_params(model)), layout)


@pytest.mark.parametrize("task", ["bw_only", "fw_bw"])
def test_mixed_models_in_one_batch(task: str, layout: str) -> None:
    layers = BW_LAYERS if task == "bw_only" else FW_LAYERS
    params = [make_params("BP", layers, eta_PI=(0.5, 0.4)), make_params("FA", layers),
              make_params("PAL", layers, noise_mode="uP", dtxi=0.02), make_params("PAL", layers, gate_regularizer=True)]
    check(lambda: make_sim(params, task=task, seeds=(21, 22, 23, 24)), layout)


def test_one_hidden_layer_networks(layout: str) -> None:
    """The 1-1-1 networks of the fw_bw paper figure, all three models in one batch."""
    params = [make_params(m, (1, 1, 1), activations=("logistic", "logistic")) for m in ("BP", "FA", "PAL")]
    check(lambda: make_sim(params, task="fw_bw", seeds=(123, 456, 789), dataset_size=5, Tp=7, settling=12), layout)


# The lanes kernel compiled for one network (what long batches of small networks use) is the generic kernel's
# code with the network as constants: each network costs a compilation (~40 s), so two networks stand for all.
# Between them they cover one and several hidden layers, every model, both tasks, three activations' code paths
# and the options that take other paths; the golden 1-1-1 cases run through it too (test_golden.py).
SPECIALISED_1_1_1 = [make_params("BP", (1, 1, 1), activations=("logistic",) * 2, eta_PI=(0.5,)),
                     make_params("FA", (1, 1, 1), activations=("logistic",) * 2, copy_teacher_voltages=True),
                     make_params("PAL", (1, 1, 1), activations=("logistic",) * 2, noise_mode="uP", dtxi=0.02),
                     make_params("PAL", (1, 1, 1), activations=("logistic",) * 2, dWPP_r_low_pass=True,
                                 dWPP_post_low_pass=True, inter_low_pass=True),
                     make_params("PAL", (1, 1, 1), activations=("logistic",) * 2, varphi_regularizer=True,
                                 gate_regularizer=True, noise_type="hold_white_noise", dtxi=0.03),
                     make_params("PAL", (1, 1, 1), activations=("logistic",) * 2,  # large weights: saturated rates
                                 init_WPP_range=(-300.0, 300.0), init_BPP_range=(-300.0, 300.0))]
SPECIALISED_DEEP = [make_params(model, FW_LAYERS, activations=("tanh", "relu", "logistic"), **changes)
                    for model, changes in [("BP", dict(eta_PI=(0.5, 0.0))), ("FA", {}),
                                           ("PAL", dict(noise_mode="vapi", dWPP_use_activation=False)),
                                           ("PAL", dict(varphi_regularizer=True, eta_IP=(0.0, 0.8)))]]


@pytest.mark.parametrize("task", ["bw_only", "fw_bw"])
@pytest.mark.parametrize("network", ["1-1-1", "2-4-3-2"])
def test_specialised_lanes_kernel(network: str, task: str) -> None:
    params = SPECIALISED_1_1_1 if network == "1-1-1" else SPECIALISED_DEEP
    seeds = tuple(range(31, 31 + len(params)))
    check(lambda: make_sim(params, task=task, seeds=seeds, dataset_size=4, Tp=7, settling=12), "lanes",
          splits=(5, 1, 24, 30), specialise=True)


def test_long_batches_of_small_networks_get_a_specialised_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """``segment_for`` specialises when the batch is long enough to repay a compilation, or when this process
    has the kernel already; it compiles nothing itself (the first call does)."""
    monkeypatch.setattr(lanes, "specialised", {})
    sim = make_sim(make_params("PAL", (1, 1, 1), activations=("logistic",) * 2))
    *_, layers, acts = packing.tables(sim.params)
    run_steps = len(sim.runs) * sim.protocol.total_steps
    assert lanes.segment_for(sim, layers, acts) is lanes.advance_segment  # short: generic
    assert lanes.segment_for(sim, layers, acts, specialise=False) is lanes.advance_segment
    monkeypatch.setattr(lanes, "SPECIALISE_MIN_RUN_STEPS", run_steps)
    fixed = lanes.segment_for(sim, layers, acts)
    assert fixed is not lanes.advance_segment and fixed.py_func.__name__ == "advance_segment_1x1x1_act0_0"
    monkeypatch.setattr(lanes, "SPECIALISE_MIN_RUN_STEPS", run_steps + 1)
    assert lanes.segment_for(sim, layers, acts) is fixed  # this process has it: kept
    other = make_sim(make_params("PAL", FW_LAYERS), task="fw_bw")
    assert lanes.segment_for(other, *packing.tables(other.params)[3:]) is lanes.advance_segment


def test_wide_odd_layers_and_many_draws(layout: str) -> None:
    """Layers that are not multiples of four, and enough noise draws to cross several twists of MT19937."""
    params = make_params("PAL", (5, 13, 7, 9, 3), noise_mode="vapi")
    check(lambda: make_sim(params, seeds=(3, 4, 5), dataset_size=4, epochs=3, Tp=9, settling=20), layout,
          splits=(1, 5, 17, 40, 3))


def test_split_calls_resume_exactly(layout: str) -> None:
    """advance(5) then advance(rest), with odd pieces across settling and epoch starts, equals one call."""
    params = make_params("PAL", FW_LAYERS, dtxi=0.03, noise_type="hold_white_noise")
    check(lambda: make_sim(params, task="fw_bw"), layout, splits=(5, 1, 24, 30, 7, 11))


def test_without_recorder_and_settling_longer_than_an_epoch(layout: str) -> None:
    ref, sim = (make_sim(make_params("PAL"), settling=70) for _ in range(2))
    ref.advance(1000)
    driver.advance(sim, 1000, layout=layout)
    assert_same(ref, sim)


def test_recorder_of_some_variables(layout: str) -> None:
    """The kernel shows the recorder only the fields it records; records and final state are still exact."""
    names = ("input", "error", "MSE", "WPP", "rP_breve_HI", "noise")
    ref, sim = (make_sim(make_params("PAL", FW_LAYERS), task="fw_bw") for _ in range(2))
    rec_ref, rec = (ChunkRecorder(s, [VARIABLES[n] for n in names], 4, s.protocol.total_steps // 4 + 1)
                    for s in (ref, sim))
    ref.advance(ref.protocol.total_steps, on_step=rec_ref)
    driver.advance(sim, sim.protocol.total_steps, rec, layout=layout)
    assert_same(ref, sim)
    assert_same_records(rec_ref, rec)


class _StateCopier:
    """A recorder that is not a ChunkRecorder (no ``variables``): it reads arbitrary state fields."""

    every = 5

    def __init__(self) -> None:
        self.seen: list[dict[str, np.ndarray]] = []

    def __call__(self, sim: Simulation) -> None:
        if sim.state.step % self.every == 0:
            self.seen.append({k: np.array(v, copy=True) for k, v in sim.state.arrays().items()})


def test_plain_callable_recorder_sees_every_field(layout: str) -> None:
    ref, sim = (make_sim(make_params("PAL")) for _ in range(2))
    rec_ref, rec = _StateCopier(), _StateCopier()
    ref.advance(ref.protocol.total_steps, on_step=rec_ref)
    driver.advance(sim, sim.protocol.total_steps, rec, layout=layout)
    assert len(rec.seen) == len(rec_ref.seen) > 0
    for a, b in zip(rec_ref.seen, rec.seen):
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_allclose(b[name], a[name], rtol=RTOL, atol=ATOL, err_msg=name)


class _FieldsReader(_StateCopier):
    """A recorder that says which state fields it reads (``fields_read``, the recorder protocol of the driver)."""

    fields_read = ("vbas", "BPP")

    def __call__(self, sim: Simulation) -> None:
        self.seen.append({name: [np.array(v, copy=True) for v in getattr(sim.state, name)] for name in self.fields_read})


def test_recorder_that_says_what_it_reads_is_shown_those_fields(layout: str) -> None:
    """The driver shows a recorder with ``fields_read`` exactly those fields (no need to know the store's
    variables), as the NumPy engine has them."""
    ref, sim = (make_sim(make_params("PAL")) for _ in range(2))
    rec_ref, rec = _FieldsReader(), _FieldsReader()
    ref.advance(ref.protocol.total_steps, on_step=lambda s: rec_ref(s) if s.state.step % rec_ref.every == 0 else None)
    assert driver.recorded_fields(rec) == ("vbas", "BPP")
    driver.advance(sim, sim.protocol.total_steps, rec, layout=layout)
    assert len(rec.seen) == len(rec_ref.seen) > 0
    for a, b in zip(rec_ref.seen, rec.seen):
        for name in rec.fields_read:
            for x, y in zip(a[name], b[name]):
                np.testing.assert_allclose(y, x, rtol=RTOL, atol=ATOL, err_msg=name)


def test_threads_run_batches_independently(layout: str) -> None:
    """The kernel releases the GIL: batches advanced in two threads at once still match the NumPy engine."""
    builds = [lambda: make_sim(make_params("PAL", noise_mode="vapi"), seeds=(1, 2, 3)),
              lambda: make_sim(make_params("FA", FW_LAYERS), task="fw_bw", seeds=(4, 5))]
    refs = [build() for build in builds]
    sims = [build() for build in builds]
    for ref in refs:
        ref.advance(ref.protocol.total_steps)
    errors: list[BaseException] = []

    def work(sim: Simulation) -> None:
        try:
            for _ in range(3):  # several calls, so that the threads interleave their Python parts too
                driver.advance(sim, sim.protocol.total_steps // 3 + 1, recorder(sim, 7), layout=layout)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(sim,)) for sim in sims]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for ref, sim in zip(refs, sims):
        assert_same(ref, sim)
    assert neurons.advance_segment.targetoptions.get("nogil")
    assert lanes.advance_segment.targetoptions.get("nogil")


def _glibc_with_fma() -> bool:
    """glibc on x86-64 with FMA: libm's exp is then the algorithm the kernel re-implements, bit for bit."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return platform.libc_ver()[0] == "glibc" and platform.machine() == "x86_64" and " fma" in flags


def test_exp_matches_libm() -> None:
    """The vectorised exp is glibc's algorithm: within one ulp of libm's exp, and equal to it on glibc."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal(20000) * s for s in (1e-300, 1e-20, 1e-3, 1.0, 30.0, 100.0)])
    x = np.concatenate([x, [0.0, -0.0, 5e-324, 511.9, -511.9, 300.5, -450.25]])
    assert all(libm_exp.exp_in_range(v) for v in x)
    assert not any(libm_exp.exp_in_range(v) for v in (512.0, -600.0, 1e300, math.inf, -math.inf, math.nan))
    mine = np.array([libm_exp.exp_fast(v) for v in x])
    libm = np.array([math.exp(v) for v in x])
    ulps = np.abs(mine.view(np.int64) - libm.view(np.int64))
    assert ulps.max() <= 1
    if _glibc_with_fma():
        assert ulps.max() == 0


def test_load_makes_the_kernel_ready(layout: str) -> None:
    """``driver.load`` (called before a run, or as workers start) leaves the kernel compiled for the batches' types."""
    seconds = driver.load([layout])
    segment = neurons.advance_segment if layout == "neurons" else lanes.advance_segment
    assert seconds >= 0.0 and segment.signatures and driver.loaded([layout])
    sim = make_sim(make_params("PAL"))
    before = len(segment.signatures)
    driver.advance(sim, 3, layout=layout)
    assert len(segment.signatures) == before  # a real batch needed no new compilation


def test_layout_for_picks_lanes_for_small_networks() -> None:
    assert driver.layout_for(make_sim(make_params("PAL", (1, 1, 1), activations=("logistic",) * 2))) == "lanes"
    assert driver.layout_for(make_sim(make_params("PAL", BW_LAYERS))) == "lanes"
    assert driver.layout_for(make_sim(make_params("PAL", (5, 13, 7, 9, 3)))) == "neurons"
    with pytest.raises(ValueError, match="layout"):
        driver.advance(make_sim(make_params("PAL")), 3, layout="columns")


def test_supports_rejects_unknown_options() -> None:
    sim = make_sim(make_params("PAL"))
    assert driver.supports(sim)
    sim.params.noise_mode = ("uP_adaptive", "const")  # type: ignore[misc]
    assert not driver.supports(sim)
