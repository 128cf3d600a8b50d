"""Templates of the steps both kernels share, in their layout's terms (codegen.py fills them in).

A vector element is ``x[$run, i, a$lane]``: ``x[r, i, a]`` in the neuron layout (neurons.py), ``x[g, i, a, l]``
in the lane layout (lanes.py). ``$lanes`` opens the loop over the four lanes ``l`` of block ``g`` there; in the
neuron layout it is dropped and its body dedented. A layer's size is padded to blocks of four in the neuron layout
(``$size_P``, ``$size_I``); per-run constants are locals there and table entries per lane here.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from palmc.engine import equations as eq
from palmc.engine.compiled import jit, packing
from palmc.engine.compiled.activations import HARD_SIGMOID, LOGISTIC, TANH, logistic_fast, phi, phi4, phi_prime
from palmc.engine.compiled.codegen import fill, unroll
from palmc.engine.compiled.feedback import VARPHI, WEIGHT_DECAY, pal_increment
from palmc.engine.compiled.jit import JIT
from palmc.engine.compiled.mt19937 import normals
from palmc.engine.compiled.schedule import next_presentation, redraws


@njit(**JIT, inline="always")
def network(layer_sizes, act_codes):  # type: ignore[no-untyped-def]
    """The layer sizes and activation codes of a generic kernel: the arrays it is given. A kernel specialised to
    one network (``lanes.segment_for``) has a ``network`` that returns them as constants."""
    return layer_sizes, act_codes


def kernel_names(module: str, file: str) -> dict[str, object]:
    """The global names of a kernel generated in module ``module`` (file ``file``): NumPy, equations.py, the
    compiled helpers, the index constants and the columns of the parameter tables (packing.py)."""
    helpers = dict(np=np, eq=eq, network=network, next_presentation=next_presentation, redraws=redraws,
                   normals=normals, pal_increment=pal_increment, phi=phi, phi4=phi4, phi_prime=phi_prime,
                   logistic_fast=logistic_fast, LOGISTIC=LOGISTIC, TANH=TANH, HARD_SIGMOID=HARD_SIGMOID,
                   VARPHI=VARPHI, WEIGHT_DECAY=WEIGHT_DECAY, LANES=packing.LANES, ULANES=np.uint64(packing.LANES))
    columns = {name: value for name, value in vars(packing).items() if name[:3] in ("RP_", "LP_", "FL_")}
    unsigned = {name: value for name, value in vars(jit).items() if name[:1] == "U" and name[1:].isdigit()}
    return dict(helpers, **columns, **unsigned, __name__=module, __file__=file)


# the layouts' terms (module docstring)
NEURON_LAYOUT = dict(run="r", lane="", lanes="", the_run="r", sample="smp", size_P="n4[i + U1]", size_I="n4[i + U2]",
                     is_bp="is_bp", is_pal="is_pal", select_c="c = c_out if i == L - U1 else c_hid", c="c",
                     dt_over_tauLO="dt_over_tauLO", dt_over_tauHP="dt_over_tauHP")
# (the models may differ by lane: BP, FA and PAL runs share blocks)
LANE_LAYOUT = dict(run="g", lane=", l", lanes="for l in range(ULANES):", the_run="run_of[g, l]", sample="smp[l]",
                   size_P="layers[i + U1]", size_I="layers[i + U2]", is_bp="any_bp", is_pal="any_pal",
                   select_c="c_col = RP_C_OUT if i == L - U1 else RP_C_HID", c="rp[g, c_col, l]",
                   dt_over_tauLO="rp[g, RP_DT_OVER_TAULO, l]", dt_over_tauHP="rp[g, RP_DT_OVER_TAUHP, l]")

# the ``def`` line of both kernels: the arguments ``driver.advance`` passes, in its order ($lane_args: the lane
# layout's map of runs to lanes)
SEGMENT_ARGUMENTS = """uP, uP_old, uP_breve, rP, rHI, vbas, noise, r_LO, post_LO, uI, uI_old, uI_breve, rI, vden, vapi,
        vapi_noise, WPP, dWPP, dWPP_LO, WIP, dWIP, BPP, dBPP, BPI, dBPI, r0, r0_LO, hi_rec, counter, mt_key, mt_out,
        mt_pos, mt_has_gauss, mt_cached, patterns, targets, order, $lane_args first, n_steps, settling, per_pattern,
        layer_sizes, act_codes, dt, rp, lp, fl, forward, lateral, feedback, has_target"""

# what both kernels' docstrings say about a segment
SEGMENT_DOC = """
The pattern of a step is picked as ``Simulation.step_inputs`` does: the unshuffled sequence while settling
(``first <= settling``), else the run's ``order``, each pattern for ``per_pattern`` steps. The learning flags
and ``has_target`` are those of the phase. At the last step every increment is stored (earlier ones are not
observable), and ``hi_rec`` receives r^HI as the recorder sees it (before that step's high-pass update).
"""

# where the segment starts in the presentation sequence (both kernels)
SEGMENT_START = """n_steps, first = np.uint64(n_steps), np.uint64(first)
n_patterns, Tp, S = np.uint64(order.shape[1]), np.uint64(per_pattern), np.uint64(settling)
settle = first <= S  # a segment never spans the end of settling
within = (first - U1) % (n_patterns * Tp) if settle else (first - S - U1) % (n_patterns * Tp)
layers, acts = network(layer_sizes, act_codes)
nL = len(layers) - 1
L = np.uint64(nL)
H = L - U1
n_in = layers[0]
nH = max(nL - 1, 1)"""

# the presynaptic factor of dW^PP_i: the rate of layer i-1 (the input for i = 0), low-passed with r_lp
FORWARD_PRE = """
if r_lp:
    pre = r0_LO[$run, b$lane] if i == U0 else r_LO[$run, i - U1, b$lane]
else:
    pre = r0_old[b$lane] if i == U0 else rP_old[i - U1, b$lane]
"""

# step 3a, PAL noise (noise.draw_noise) of one run. Which layers redraw (xi all zero, or the counter shared by
# all layers hits the period) does not depend on the draws, so it is settled first and the step's normals are
# drawn in one batch (from generator number $generator into gbuf), in the order draw_noise consumes them.
NOISE = """
m = U0
for i in range(H):
    zero = True
    for a in range(layers[i + U1]):
        if noise[$run, i, a$lane] != 0.0:
            zero = False
            break
    redraw[i] = redraws(zero, counter[$run$lane], period, period_int)
    if redraw[i]:
        counter[$run$lane] = 0
        m += layers[i + U1]
    counter[$run$lane] += 1
pos, has_gauss, cached = normals(mt_key, mt_out, $generator, pos, has_gauss, cached, m, gbuf, pairs)
k = U0
for i in range(H):
    if not redraw[i]:
        continue
    n, scale = layers[i + U1], lp[$run, LP_SCALE, i$lane]
    # white = scale * normal(0, sigma) = scale * (0 + sigma * g): sigma is 1, |u^P| (before this step's
    # update), |u-breve^P| or |v^api| by the noise mode
    for a in range(n):
        if mode == 0:
            sigma = 1.0
        elif mode == 1:
            sigma = abs(uP[$run, i, a$lane])
        elif mode == 2:
            sigma = abs(uP_breve[$run, i, a$lane])
        else:
            sigma = abs(vapi[$run, i, a$lane])
        white[a] = eq.white_noise(scale, sigma, gbuf[k + a])
    k += n
    if ou:
        for a in range(n):
            noise[$run, i, a$lane] = eq.ou_noise_step(noise[$run, i, a$lane], white[a], dt, inv_tauxi, sqrt_dt_tauxi)
    else:
        for a in range(n):
            noise[$run, i, a$lane] = white[a]
"""

# the populations of step 1's templates (in a layout's terms: ``population``)
PYRAMIDAL = dict(layers="L", size="$size_P", act="acts[i]", taur_tau="lp[$run, LP_TAUR_TAU_P, i$lane]",
                 u="uP", u_old="uP_old", u_breve="uP_breve", rate="rP", rate_old="rP_old")
INTERNEURONS = dict(layers="H", size="$size_I", act="acts[i + U1]", taur_tau="rp[$run, RP_TAUR_TAU_I$lane]",
                    u="uI", u_old="uI_old", u_breve="uI_breve", rate="rI", rate_old="rI_old")


def population(names: dict[str, str], layout: dict[str, str]) -> dict[str, str]:
    """The names of a population in ``layout``."""
    return {key: fill(value, **layout) for key, value in names.items()}


def kernel_source(kernel: str, layout: dict[str, str], steps: dict[str, str], blocks: dict[str, str],
                  lane_args: str) -> str:
    """A kernel's text: ``kernel`` with STEP as its loop's body, filled in with the layout's ``steps`` and
    ``blocks``, every statement with @ written out for four neurons or lanes."""
    parts = dict(layout, **blocks)
    parts.update({name: fill(text, **parts) for name, text in steps.items()})
    return unroll(fill(kernel, arguments=fill(SEGMENT_ARGUMENTS, lane_args=lane_args), doc=SEGMENT_DOC,
                       segment_start=SEGMENT_START, step=fill(STEP, **parts))) + "\n"

# One step of dynamics.py for the runs at hand (one run, or the four lanes of a block); the blocks in $... are
# each kernel's, in its layout. Step 4 is split around step 2 because it needs the previous step's dendritic
# potentials.
STEP = """
last = j == n_steps - U1
$lanes
    $sample = pattern if settle else np.uint64(order[$the_run, pattern])
pattern, shown = next_presentation(pattern, shown, Tp, n_patterns)

# ---- step 1: lookahead u-breve = u_old + taur tau (u - u_old) / dt and rates phi(u-breve) of the pyramidal
# neurons and the interneurons, keeping the old rates; then the new input
$lookahead
for b in range(n_in):
    $lanes
        r0_old[b$lane] = r0[$run, b$lane]
        r0[$run, b$lane] = patterns[$the_run, $sample, b]

# ---- step 4, first part (it needs vbas, vden and vapi of the previous step, so it runs before step 2):
# postsynaptic factors of the increments and the rate filters (dynamics._forward_increments)
need_fw = forward or last
for i in range(L):
    n, code = $size_P, acts[i]
    $select_c
    if need_fw or post_lp:
        if use_act:  # r-breve - phi(c v^bas_old)
            $post_P
        else:  # u-breve - c v^bas_old
            for a in range(n):
                $lanes
                    predicted = eq.dendritic_prediction($c, vbas[$run, i, a$lane])
                    postP[i, a$lane] = eq.prediction_error(uP_breve[$run, i, a$lane], predicted)
    if r_lp:  # low-passed presynaptic rates: input, then pyramidal layer i-1
        if i == U0:
            for b in range(n_in):
                $lanes
                    r0_LO[$run, b$lane] = eq.low_pass(r0_LO[$run, b$lane], r0_old[b$lane], $dt_over_tauLO)
        else:
            for b in range(layers[i]):
                $lanes
                    r_LO[$run, i - U1, b$lane] = eq.low_pass(r_LO[$run, i - U1, b$lane], rP_old[i - U1, b$lane],
                                                             $dt_over_tauLO)
    if post_lp:
        for a in range(n):
            $lanes
                lo_post = eq.low_pass(post_LO[$run, i, a$lane], postP[i, a$lane], $dt_over_tauLO)
                post_LO[$run, i, a$lane] = lo_post
                postP[i, a$lane] = lo_post
if lateral or last:
    for i in range(H):
        n, code = $size_I, acts[i + U1]
        # With eta_IP = 0 the update adds 0 * (finite) = +-0, i.e. leaves W^IP as it is (up to the sign of a zero
        # weight), unless a NaN or inf is about: then it is computed as usual. Only at the segment's last step is
        # the (zero) increment itself observable.
        $skip_lateral
        skip_wip[i] = skip
        if not skip:  # r^I - phi(g_den/(g_l+g_den) v^den_old)
            $post_I
        for a in range($size_P):
            $lanes
                neg_vapi_old[i, a$lane] = -vapi[$run, i, a$lane]

# ---- step 2: dendritic potentials. Each mat-vec y = W x sums over the real presynaptic b in order, several
# outputs at a time held in registers.
for i in range(L):  # v^bas_i = W^PP_i r_{i-1}
    n, n_pre = $size_P, layers[i]
    if i == U0:
        for b in range(n_pre):
            $lanes
                x[b$lane] = r0[$run, b$lane]
    else:
        for b in range(n_pre):
            $lanes
                x[b$lane] = rP[$run, i - U1, b$lane]
    $matvec_bas
for i in range(H):  # v^den_i = W^IP_i r_i, low-passed with inter_low_pass
    n, n_pre = $size_I, layers[i + U1]
    $matvec_den
    if inter_lp:
        for a in range(n):
            $lanes
                vden[$run, i, a$lane] = eq.low_pass(vden[$run, i, a$lane], y[a$lane], $dt_over_tauLO)
    else:
        for a in range(n):
            $lanes
                vden[$run, i, a$lane] = y[a$lane]
for i in range(H):  # v^api_i = B^PP_i r_{i+1} + B^PI_i r^I_i; the soma gets + xi (the old noise)
    n, n_pre = $size_P, layers[i + U2]
    $matvec_api
    for a in range(n):
        $lanes
            vapi_noise[$run, i, a$lane] = eq.with_apical_noise(vapi[$run, i, a$lane], noise[$run, i, a$lane])

# ---- step 3a: PAL noise (steps.NOISE)
if feedback and $is_pal:
    $noise

# ---- step 3b: somatic increments (the soma sees the previous step's noise via vapi_noise)
$somatic_increments

# ---- step 4, rest, and step 5 (apply). BP's reset reads W^PP before this step's update (dynamics.py
# order), so it comes first.
if $is_bp:  # feedback.reset_bp_feedback: B^PP = (W^PP_{i+1})^T, B^PI = -B^PP
    for i in range(H):
        $reset_bp
if $is_pal and regularizer == VARPHI and (feedback or last):  # phi'(u-breve) for the varphi regularizer
    for i in range(H):
        code = acts[i]
        for a in range(layers[i + U1]):
            $lanes
                slope[i, a$lane] = phi_prime(code, uP_breve[$run, i, a$lane])
if last:  # the segment's last step: store every increment (the recorder may read them)
    for i in range(H):
        $store_hidden
    for i in range(L):  # dW^PP = dt eta_fw post (x) pre
        $store_WPP
# Then apply the increments the phase allows, each fused with its computation in one pass (at the last step
# the same numbers again: increments are pure functions of the state before the updates).
if lateral:
    for i in range(H):
        $add_BPI
        if skip_wip[i]:
            continue
        $add_WIP
if feedback:
    for i in range(H):
        $add_BPP
if forward:
    for i in range(L):
        $add_WPP
for i in range(L):  # the somata move
    for a in range($size_P):
        $lanes
            uP[$run, i, a$lane] = uP[$run, i, a$lane] + dUP[i, a$lane]
for i in range(H):
    for a in range($size_I):
        $lanes
            uI[$run, i, a$lane] = uI[$run, i, a$lane] + dUI[i, a$lane]
# (the recorder runs here: it sees r^HI before the update below)
if last:
    for i in range(L):
        for a in range($size_P):
            $lanes
                hi_rec[$run, i, a$lane] = rHI[$run, i, a$lane]
# high-pass filter of the rates, every step
for i in range(L):
    for a in range($size_P):
        $lanes
            rHI[$run, i, a$lane] = eq.high_pass(rHI[$run, i, a$lane], rP[$run, i, a$lane], rP_old[i, a$lane],
                                                $dt_over_tauHP)
"""
