"""The lane-layout kernel, for small networks: the runs are the innermost axis, in blocks of four lanes.

The neuron layout (neurons.py) vectorises over the neurons of a layer, padded to blocks of four: for the 1-1-1
networks of the fw_bw figure three of every four lanes are padding, and the loop overhead of a step (some forty
short loops) is paid by every run alone. Here every operation of a step works on four runs at once, layers need
no padding, and the overhead is paid once per four runs (``packing.Lanes`` says which run is in which lane). For
wider networks the neuron layout is faster: a block of four runs no longer fits in the L1 cache.

The kernel is generated like neurons.py's, from the same step (steps.STEP) with this layout's blocks; each
weight update's increment is written once and used by the last step's store and the other steps' fused update.
The equations are those of equations.py (inlined): the same numbers to the last bit apart from the summation
order of the mat-vecs. The generators are per run, so the PAL noise is drawn run by run in scalar code.

Long batches run a copy of this kernel compiled for their network (``segment_for``): with the layer sizes and
activations as constants, the many one-neuron loops of a 1-1-1 network disappear (same bits).

How the loops are written, and why (measured figures: docs/performance.md):
* every per-neuron operation is a loop over the four runs of a block with a constant trip count, which LLVM
  unrolls and its SLP vectoriser (see ``driver.compiling``) turns into one AVX2 operation;
* indices are unsigned (np.uint64): numba checks signed indices for negative values at every access;
* mat-vecs keep two outputs x four runs in registers while summing over the presynaptic neurons (independent
  chains; the arrays are declared non-aliasing, ``jit.KERNEL_OPTIONS``);
* increments are applied in the same pass that computes them and stored only at a segment's last step (in a
  pass of its own before the usual one);
* no helper that takes arrays is called per step (each call costs reference counting), except rarely.
"""

from __future__ import annotations

import threading
from types import FunctionType
from typing import Callable

import numpy as np
from numba import njit

from palmc.engine.compiled.codegen import compile_kernel, fill
from palmc.engine.compiled.jit import JIT, KERNEL_OPTIONS
from palmc.engine.compiled.steps import (
    FORWARD_PRE, INTERNEURONS, LANE_LAYOUT, NOISE, PYRAMIDAL, kernel_names, kernel_source, population,
)

from palmc.engine.tasks import Simulation

# -- templates (codegen.py: $name is filled in, a statement with @ stands for the four lanes U0..U3) ------------
# step 1 of one population: lookahead u-breve, keeping the old rates; then the rates phi(u-breve)
LOOKAHEAD = """
for i in range($layers):
    n, code = $size, $act
    for a in range(n):
        for l in range(ULANES):
            o, u = $u_old[g, i, a, l], $u[g, i, a, l]
            $rate_old[i, a, l] = $rate[g, i, a, l]
            $u_breve[g, i, a, l] = eq.lookahead_voltage(o, u, $taur_tau, dt)
            $u_old[g, i, a, l] = u
    $rates
"""

# phi(x) of every neuron a of a layer and lane l, with the fast exp for the logistic; $store keeps ``value``
RATES = """
ok = code == LOGISTIC
if ok:
    for a in range(n):
        for l in range(ULANES):
            value, fast = logistic_fast($x)
            $store
            ok &= fast
if not ok:  # another activation, or exp outside the fast range: libm
    for a in range(n):
        for l in range(ULANES):
            value = phi(code, $x)
            $store
"""

# step 2's mat-vecs: two outputs x four lanes held in registers while summing over the presynaptic b in order
MATVEC = """
a = U0
while a + U2 <= n:
    a1 = a + U1
    s@ = 0.0
    t@ = 0.0
    for b in range(n_pre):
        x@ = $x
        s@ += $W[g, i, a, b, U@] * x@
        t@ += $W[g, i, a1, b, U@] * x@
    $out_a = s@
    $out_a1 = t@
    a += U2
if a < n:
    s@ = 0.0
    for b in range(n_pre):
        s@ += $W[g, i, a, b, U@] * $x
    $out_a = s@
"""

APICAL_SUMS = """
for a in range(n):
    s@ = 0.0
    t@ = 0.0
    for b in range(n_pre):
        s@ += BPP[g, i, a, b, U@] * rP[g, i + U1, b, U@]
        t@ += BPI[g, i, a, b, U@] * rI[g, i, b, U@]
    vapi[g, i, a, U@] = eq.apical_potential(s@, t@)
"""

# step 4's increments of the weights of hidden entry i (L entries for W^PP), one expression each ($regularizer:
# the PAL regularizer's code, a constant where the kernel knows it), and the loops over their entries
INCREMENT_BPI = """
d = eq.plasticity_increment(lp[g, LP_DT_ETA_PI, i, l], neg_vapi_old[i, a, l], rI_old[i, b, l])
d = d if lp[g, LP_ETA_PI_ON, i, l] != 0.0 else 0.0  # zero when eta_PI = 0
"""
INCREMENT_BPP = """
r_pre = rHI[g, i + U1, b, l] if hi_pass else rP[g, i + U1, b, l]
w = BPP[g, i, a, b, l]
d = pal_increment($regularizer, lp[g, LP_DT_ETA_BW, i, l], lp[g, LP_DT_ALPHA_ETA_BW, i, l], noise[g, i, a, l],
                  r_pre, w, slope[i, a, l], slope[i + U1, b, l])
d = d if fl[g, FL_PAL, l] != 0 else 0.0  # zero for BP and FA
"""
INCREMENT_WIP = """
d = eq.plasticity_increment(lp[g, LP_DT_ETA_IP, i, l], postI[i, a, l], rP_old[i, b, l])
"""
INCREMENT_WPP = """
$forward_pre
d = eq.plasticity_increment(lp[g, LP_DT_ETA_FW, i, l], postP[i, a, l], pre)
"""
EACH_WEIGHT = """
for a in range($n_post):
    for b in range($n_pre):
        for l in range(ULANES):
            $body
"""
B_SHAPE = dict(n_post="layers[i + U1]", n_pre="layers[i + U2]")
WIP_SHAPE = dict(n_post="layers[i + U2]", n_pre="layers[i + U1]")
WPP_SHAPE = dict(n_post="layers[i + U1]", n_pre="layers[i]")
# PAL moves W^PP by the low-pass of its increments (dW^PP_LO stays for the others)
ADD_WPP = """
w_lo, lo_old = fl[g, FL_W_LO, l] != 0, dWPP_LO[g, i, a, b, l]
lo_d = eq.low_pass(lo_old, d, rp[g, RP_DT_OVER_TAULO, l])
dWPP_LO[g, i, a, b, l] = lo_d if w_lo else lo_old
WPP[g, i, a, b, l] = WPP[g, i, a, b, l] + (lo_d if w_lo else d)
"""

KERNEL = """
def advance_segment($arguments):  # pragma: no cover - compiled
    \"""Advance every run by ``n_steps`` steps (the first is step ``first``) of one phase (settling or one epoch).

    Arrays are in the lane layout of ``Packed``: block g, engine list entry i, postsynaptic (or only) neuron a,
    presynaptic neuron b, lane l; lane l of block g is run ``run_of[g, l]`` (a padding lane when ``real[g, l]`` is
    0: it repeats a real run of its block without drawing noise, and is never read back). The flags in ``fl``
    that select code paths are equal across a block (``Lanes``); per-run constants vary by lane.
    $doc
    \"""
    $segment_start
    G, Wd = np.uint64(run_of.shape[0]), uP.shape[2]
    rP_old, rI_old, r0_old = np.zeros((nL, Wd, LANES)), np.zeros((nH, Wd, LANES)), np.zeros((Wd, LANES))
    dUP, dUI = np.zeros((nL, Wd, LANES)), np.zeros((nH, Wd, LANES))
    postP, postI = np.zeros((nL, Wd, LANES)), np.zeros((nH, Wd, LANES))  # postsynaptic factors of dW^PP, dW^IP
    neg_vapi_old = np.zeros((nH, Wd, LANES))  # postsynaptic factor of dB^PI
    x, y, white = np.zeros((Wd, LANES)), np.zeros((Wd, LANES)), np.zeros(Wd)  # mat-vec input, output; draws
    slope = np.zeros((nL, Wd, LANES))  # phi' for the varphi regularizer; the output row stays 0 (feedback.py)
    smp = np.zeros(LANES, dtype=np.uint64)  # the pattern each lane sees
    redraw, skip_wip = np.zeros(nH, dtype=np.bool_), np.zeros(nH, dtype=np.bool_)
    gbuf = np.zeros(nL * Wd + 2)  # the normals of one step of one run
    pairs = np.zeros((4, nL * Wd))  # scratch of _normals

    for g in range(G):
        any_bp, any_pal = False, False  # the models may differ by lane: BP, FA and PAL share blocks
        for l in range(ULANES):
            any_bp |= fl[g, FL_BP, l] != 0
            any_pal |= fl[g, FL_PAL, l] != 0
        use_act, hi_pass = fl[g, FL_USE_ACT, U0] != 0, fl[g, FL_HI_PASS, U0] != 0
        r_lp, post_lp, inter_lp = fl[g, FL_R_LP, U0] != 0, fl[g, FL_POST_LP, U0] != 0, fl[g, FL_INTER_LP, U0] != 0
        regularizer = fl[g, FL_REGULARIZER, U0]
        pattern, shown = within // Tp, within % Tp  # place in the sequence: pattern and steps it was shown

        for j in range(n_steps):
            $step
"""

# the blocks of steps.STEP in this layout: the four lanes l of block g at a time
STEPS = dict(
    skip_lateral="""
        skip = not last and (code == LOGISTIC or code == TANH or code == HARD_SIGMOID)
        for l in range(ULANES):
            skip &= lp[g, LP_DT_ETA_IP, i, l] == 0.0
        if skip:  # bounded activation: post is finite unless r^I or v^den_old is NaN
            # (branch-free tests into a local: a reduction the compiler vectorises)
            for a in range(n):
                for l in range(ULANES):
                    skip &= (rI[g, i, a, l] == rI[g, i, a, l]) & (vden[g, i, a, l] == vden[g, i, a, l])
            for b in range(layers[i + U1]):
                for l in range(ULANES):
                    skip &= abs(rP_old[i, b, l]) < 1e300  # so post * pre stays finite
    """,
    noise="""
        for l in range(ULANES):  # run by run
            if real[g, l] == 0 or fl[g, FL_PAL, l] == 0:  # padding lanes and BP/FA runs draw nothing
                continue
            q = g * ULANES + l  # the run's generator
            period, period_int, mode = rp[g, RP_PERIOD, l], fl[g, FL_PERIOD_INT, l], fl[g, FL_MODE, l]
            ou, inv_tauxi, sqrt_dt_tauxi = fl[g, FL_OU, l] != 0, rp[g, RP_INV_TAUXI, l], rp[g, RP_SQRT_DT_TAUXI, l]
            pos, has_gauss, cached = np.uint64(mt_pos[q]), mt_has_gauss[q], mt_cached[q]
            $noise_of_run
            mt_pos[q], mt_has_gauss[q], mt_cached[q] = np.int64(pos), has_gauss, cached
    """,
    somatic_increments="""
        for i in range(H):
            for a in range(layers[i + U2]):
                for l in range(ULANES):
                    tau_I = rp[g, RP_TAU_I, l]
                    drive = eq.two_compartment_drive(tau_I, rp[g, RP_GDEN, l], vden[g, i, a, l], rp[g, RP_GNI, l],
                                                     uP_breve[g, i + U1, a, l])
                    dUI[i, a, l] = eq.somatic_increment(drive, uI[g, i, a, l], tau_I, dt)
        for i in range(H):
            for a in range(layers[i + U1]):
                for l in range(ULANES):
                    tau = lp[g, LP_TAU_P, i, l]
                    noisy = feedback & (fl[g, FL_PAL, l] != 0)  # (& keeps the loop branch-free)
                    apical = vapi_noise[g, i, a, l] if noisy else vapi[g, i, a, l]
                    drive = eq.two_compartment_drive(tau, rp[g, RP_GBAS, l], vbas[g, i, a, l], rp[g, RP_GAPI, l],
                                                     apical)
                    dUP[i, a, l] = eq.somatic_increment(drive, uP[g, i, a, l], tau, dt)
        for a in range(layers[L]):
            for l in range(ULANES):
                tau_out = lp[g, LP_TAU_P, H, l]
                if has_target:
                    drive = eq.two_compartment_drive(tau_out, rp[g, RP_GBAS, l], vbas[g, H, a, l], rp[g, RP_GNTGT, l],
                                                     targets[run_of[g, l], smp[l], a])
                else:  # target-free drive, nudged time constant in the division (dynamics.py)
                    drive = eq.basal_drive(rp[g, RP_TAU_OUT_NOTGT, l], rp[g, RP_GBAS, l], vbas[g, H, a, l])
                dUP[H, a, l] = eq.somatic_increment(drive, uP[g, H, a, l], tau_out, dt)
    """,
    reset_bp="""
        for a in range(layers[i + U1]):
            for b in range(layers[i + U2]):
                for l in range(ULANES):
                    bp, w = fl[g, FL_BP, l] != 0, WPP[g, i + U1, b, a, l]
                    BPP[g, i, a, b, l] = w if bp else BPP[g, i, a, b, l]
                    BPI[g, i, a, b, l] = -w if bp else BPI[g, i, a, b, l]
    """,
    store_hidden="""
        $store_BPI
        $store_BPP
        $store_WIP
    """,
    add_BPP="""
        if not any_pal:  # BP, FA: B^PP += 0
            $add_nothing_BPP
            continue
        # the usual regularizer passed as a constant, so that the loop over lanes is branch-free
        if regularizer == WEIGHT_DECAY:
            $add_BPP_weight_decay
        else:
            $add_BPP_regularizer
    """,
)


def _source() -> str:
    """The kernel's text: KERNEL with the blocks of steps.STEP filled in."""
    def each(shape: dict[str, str], *lines: str) -> str:
        return fill(EACH_WEIGHT, **shape, body="\n".join(line.strip("\n") for line in lines))

    bpp = fill(INCREMENT_BPP, regularizer="regularizer")
    wpp = fill(INCREMENT_WPP, forward_pre=fill(FORWARD_PRE, **LANE_LAYOUT))
    blocks = dict(
        lookahead="\n".join(_lookahead(population(names, LANE_LAYOUT)) for names in (PYRAMIDAL, INTERNEURONS)),
        post_P=_prediction_error("c_col", "vbas", "postP", "rP"),
        post_I=_prediction_error("RP_C_DEN", "vden", "postI", "rI"),
        matvec_bas=fill(MATVEC, x="x[b, U@]", W="WPP", out_a="vbas[g, i, a, U@]", out_a1="vbas[g, i, a1, U@]"),
        matvec_den=fill(MATVEC, x="rP[g, i, b, U@]", W="WIP", out_a="y[a, U@]", out_a1="y[a1, U@]"),
        matvec_api=APICAL_SUMS,
        noise_of_run=fill(NOISE, **LANE_LAYOUT, generator="q"),
        store_BPI=each(B_SHAPE, INCREMENT_BPI, "dBPI[g, i, a, b, l] = d"),
        store_BPP=each(B_SHAPE, bpp, "dBPP[g, i, a, b, l] = d"),
        store_WIP=each(WIP_SHAPE, INCREMENT_WIP, "dWIP[g, i, a, b, l] = d"),
        store_WPP=each(WPP_SHAPE, wpp, "dWPP[g, i, a, b, l] = d"),
        add_BPI=each(B_SHAPE, INCREMENT_BPI, "BPI[g, i, a, b, l] = BPI[g, i, a, b, l] + d"),
        add_WIP=each(WIP_SHAPE, INCREMENT_WIP, "WIP[g, i, a, b, l] = WIP[g, i, a, b, l] + d"),
        add_nothing_BPP=each(B_SHAPE, "BPP[g, i, a, b, l] = BPP[g, i, a, b, l] + 0.0"),
        add_BPP_regularizer=each(B_SHAPE, bpp, "BPP[g, i, a, b, l] = w + d"),
        add_BPP_weight_decay=each(B_SHAPE, fill(INCREMENT_BPP, regularizer="WEIGHT_DECAY"), "BPP[g, i, a, b, l] = w + d"),
        add_WPP=each(WPP_SHAPE, wpp, ADD_WPP),
    )
    return kernel_source(KERNEL, LANE_LAYOUT, STEPS, blocks, lane_args="run_of, real,")


def _lookahead(population: dict[str, str]) -> str:
    u_breve, rate = population["u_breve"], population["rate"]
    rates = fill(RATES, x=f"{u_breve}[g, i, a, l]", store=f"{rate}[g, i, a, l] = value")
    return fill(LOOKAHEAD, **population, rates=rates)


def _prediction_error(c: str, v: str, post: str, rate: str) -> str:
    """rate - phi(c v_old), a postsynaptic factor of step 4 (v^bas for W^PP, v^den for W^IP)."""
    return fill(RATES, x=f"eq.dendritic_prediction(rp[g, {c}, l], {v}[g, i, a, l])",
                store=f"{post}[i, a, l] = eq.prediction_error({rate}[g, i, a, l], value)")


advance_segment = compile_kernel(_source(), "advance_segment", kernel_names(__name__, __file__), KERNEL_OPTIONS)



def _fixed_network(layer_sizes, act_codes):  # type: ignore[no-untyped-def]
    """``network`` of a specialised kernel: its globals hold the network as constants (``_specialise``)."""
    return _LAYERS, _ACTS  # noqa: F821 - defined in this copy's globals only


# -- kernels specialised to one network -----------------------------------------------------------------------
# Compiled with the layer sizes and activations as constants, LLVM unrolls the loops over layers and neurons and
# drops the other activations' branches: on the 1-1-1 networks of Fig. 4, where those loops run once each, that
# pays many times over (same bits; figures in docs/performance.md). Wide networks gain little, so the neuron
# layout keeps its generic kernel.
# Each network costs one compilation, cached on disk like the generic kernel; a batch uses it when it is long
# enough to repay that (``SPECIALISE_MIN_RUN_STEPS``: about the compilation's time in run-steps of the generic
# kernel) or when this process has it already.
SPECIALISE_MIN_RUN_STEPS = 200_000_000
# the kernels this process has specialised, by network (layer sizes, activation codes)
specialised: dict[tuple[tuple[int, ...], tuple[int, ...]], Callable[..., None]] = {}
_specialised_lock = threading.Lock()


def segment_for(sim: Simulation, layers: np.ndarray, acts: np.ndarray,
                specialise: bool | None = None) -> Callable[..., None]:
    """The kernel that advances ``sim`` (network ``layers``, activation codes ``acts``): ``advance_segment``, or
    its copy specialised to this network if ``specialise``; None lets the batch's size decide (see above)."""
    key = (tuple(int(n) for n in layers), tuple(int(c) for c in acts))
    if specialise is None:
        specialise = key in specialised or len(sim.runs) * sim.protocol.total_steps >= SPECIALISE_MIN_RUN_STEPS
    if not specialise:
        return advance_segment
    with _specialised_lock:
        if key not in specialised:
            specialised[key] = _specialise(*key)
        return specialised[key]


def _specialise(layers: tuple[int, ...], acts: tuple[int, ...]) -> Callable[..., None]:
    """A copy of ``advance_segment`` whose ``network`` returns ``layers`` and ``acts`` as constants.

    The copy is named after the network: numba names its cache files after the function, so every network gets
    its own, next to the generic kernel's (and a change to this file invalidates them all alike).
    """
    constants = {"_LAYERS": tuple(np.uint64(n) for n in layers), "_ACTS": tuple(np.int64(c) for c in acts)}
    fixed = njit(**dict(JIT, cache=False), inline="always")(_renamed(_fixed_network, constants, "network"))
    generic = advance_segment.py_func
    name = f"advance_segment_{'x'.join(map(str, layers))}_act{'_'.join(map(str, acts))}"
    return njit(**KERNEL_OPTIONS)(_renamed(generic, dict(generic.__globals__, network=fixed), name))


def _renamed(function: FunctionType, namespace: dict[str, object], name: str) -> FunctionType:
    """``function``'s code under another name, resolving its globals in ``namespace``."""
    names = {"co_name": name}
    if hasattr(function.__code__, "co_qualname"):  # code objects have one from Python 3.11 on
        names["co_qualname"] = name
    code = function.__code__.replace(**names)
    copy = FunctionType(code, namespace, name, function.__defaults__)
    copy.__qualname__, copy.__module__, copy.__doc__ = name, function.__module__, function.__doc__
    return copy

