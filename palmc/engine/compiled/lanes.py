"""The lane-layout kernel, for small networks: the runs are the innermost axis, in blocks of four lanes.

The neuron layout (neurons.py) vectorises over the neurons of a layer, padded to blocks of four: for the 1-1-1
networks of the fw_bw figure three of every four lanes are padding, and the loop overhead of a step (some forty
short loops) is paid by every run alone. Here every operation of a step works on four runs at once, layers need
no padding, and the overhead is paid once per four runs (``packing.Lanes`` says which run is in which lane). For
wider networks the neuron layout is faster: a block of four runs no longer fits in the L1 cache.

The equations are those of equations.py (inlined), as in neurons.py: the same numbers to the last bit apart from
the summation order of the mat-vecs. The generators are per run, so the PAL noise is drawn run by run in scalar
code.

Long batches run a copy of this kernel compiled for their network (``segment_for``): with the layer sizes and
activations as constants, the many one-neuron loops of a 1-1-1 network disappear (same bits).

How the loops are written, and why (measured figures: docs/performance.md):
* every per-neuron operation is a loop over the four runs of a block with a constant trip count, which LLVM
  unrolls and its SLP vectoriser (see ``driver.compiling``) turns into one AVX2 operation;
* indices are unsigned (np.uint64): numba checks signed indices for negative values at every access;
* mat-vecs keep two outputs x four runs in registers while summing over the presynaptic neurons (independent
  chains; the arrays are declared non-aliasing, ``jit.KERNEL_OPTIONS``);
* increments are applied in the same pass that computes them and stored only at a segment's last step;
* no helper that takes arrays is called per step (each call costs reference counting), except rarely.
"""

from __future__ import annotations

import threading
from types import FunctionType
from typing import Callable

import numpy as np
from numba import njit

from palmc.engine import equations as eq
from palmc.engine.compiled.activations import HARD_SIGMOID, LOGISTIC, TANH, logistic_fast, phi, phi_prime
from palmc.engine.compiled.feedback import VARPHI, WEIGHT_DECAY, pal_increment
from palmc.engine.compiled.jit import JIT, KERNEL_OPTIONS, U0, U1, U2, U3
from palmc.engine.compiled.mt19937 import normals
from palmc.engine.compiled.packing import (
    FL_BP, FL_HI_PASS, FL_INTER_LP, FL_MODE, FL_OU, FL_PAL, FL_PERIOD_INT, FL_POST_LP, FL_R_LP, FL_REGULARIZER,
    FL_USE_ACT, FL_W_LO, LANES, LP_DT_ALPHA_ETA_BW, LP_DT_ETA_BW, LP_DT_ETA_FW, LP_DT_ETA_IP, LP_DT_ETA_PI,
    LP_ETA_PI_ON, LP_SCALE, LP_TAU_P, LP_TAUR_TAU_P, RP_C_DEN, RP_C_HID, RP_C_OUT, RP_DT_OVER_TAUHP,
    RP_DT_OVER_TAULO, RP_GAPI, RP_GBAS, RP_GDEN, RP_GNI, RP_GNTGT, RP_INV_TAUXI, RP_PERIOD, RP_SQRT_DT_TAUXI,
    RP_TAU_I, RP_TAU_OUT_NOTGT, RP_TAUR_TAU_I,
)
from palmc.engine.compiled.schedule import next_presentation, redraws

from palmc.engine.tasks import Simulation

ULANES = np.uint64(LANES)


@njit(**JIT, inline="always")
def _network(layer_sizes, act_codes):  # type: ignore[no-untyped-def]
    """The layer sizes and activation codes of the generic kernel: the arrays it is given. The kernels that
    ``_specialise`` makes have ``_fixed_network`` here instead."""
    return layer_sizes, act_codes


def _fixed_network(layer_sizes, act_codes):  # type: ignore[no-untyped-def]
    """``_network`` of a specialised kernel: its globals hold the network as constants (``_specialise``)."""
    return _LAYERS, _ACTS  # noqa: F821 - defined in this copy's globals only


@njit(**KERNEL_OPTIONS)
def advance_segment(uP, uP_old, uP_breve, rP, rHI, vbas, noise, r_LO, post_LO,
                     uI, uI_old, uI_breve, rI, vden, vapi, vapi_noise,
                     WPP, dWPP, dWPP_LO, WIP, dWIP, BPP, dBPP, BPI, dBPI,
                     r0, r0_LO, hi_rec, counter, mt_key, mt_out, mt_pos, mt_has_gauss, mt_cached,
                     patterns, targets, order, run_of, real, first, n_steps, settling, per_pattern, layer_sizes, act_codes,
                     dt, rp, lp, fl, forward, lateral, feedback, has_target):  # pragma: no cover - compiled
    """Advance every run by ``n_steps`` steps (the first is step ``first``) of one phase (settling or one epoch).

    Arrays are in the lane layout of ``Packed``: block g, engine list entry i, postsynaptic (or only) neuron a,
    presynaptic neuron b, lane l; lane l of block g is run ``run_of[g, l]`` (a padding lane when ``real[g, l]`` is
    0: it repeats a real run of its block without drawing noise, and is never read back). The flags in ``fl``
    that select code paths are equal across a block (``Lanes``); per-run constants vary by lane.
    The pattern of a step is picked as ``Simulation.step_inputs`` does: the unshuffled sequence while settling
    (``first <= settling``), else ``order[run]``, each pattern for ``per_pattern`` steps. The learning flags and
    ``has_target`` are those of the phase. At the last step every increment is stored (earlier ones are not
    observable), and ``hi_rec`` receives r^HI as the recorder sees it (before that step's high-pass update).
    """
    G, n_steps = np.uint64(run_of.shape[0]), np.uint64(n_steps)
    n_patterns, Tp, S, first = np.uint64(order.shape[1]), np.uint64(per_pattern), np.uint64(settling), np.uint64(first)
    settle = first <= S  # a segment never spans the end of settling
    within = (first - U1) % (n_patterns * Tp) if settle else (first - S - U1) % (n_patterns * Tp)
    layers, acts = _network(layer_sizes, act_codes)
    nL, Wd = len(layers) - 1, uP.shape[2]
    L = np.uint64(nL)
    H = L - U1
    n_in = layers[0]
    nH = max(nL - 1, 1)
    rP_old, rI_old, r0_old = np.zeros((nL, Wd, LANES)), np.zeros((nH, Wd, LANES)), np.zeros((Wd, LANES))
    dUP, dUI = np.zeros((nL, Wd, LANES)), np.zeros((nH, Wd, LANES))
    postP, postI = np.zeros((nL, Wd, LANES)), np.zeros((nH, Wd, LANES))  # postsynaptic factors of dW^PP, dW^IP
    neg_vapi_old = np.zeros((nH, Wd, LANES))  # postsynaptic factor of dB^PI
    xb, y, white = np.zeros((Wd, LANES)), np.zeros((Wd, LANES)), np.zeros(Wd)  # mat-vec input, output; draws
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
            last = j == n_steps - U1
            for l in range(ULANES):
                smp[l] = pattern if settle else np.uint64(order[run_of[g, l], pattern])
            pattern, shown = next_presentation(pattern, shown, Tp, n_patterns)

            # ---- step 1: lookahead u-breve = u_old + taur tau (u - u_old) / dt and rates phi(u-breve),
            # keeping the old rates; then the new input
            for i in range(L):
                n, code = layers[i + U1], acts[i]
                for a in range(n):
                    for l in range(ULANES):
                        o, u = uP_old[g, i, a, l], uP[g, i, a, l]
                        rP_old[i, a, l] = rP[g, i, a, l]
                        uP_breve[g, i, a, l] = eq.lookahead_voltage(o, u, lp[g, LP_TAUR_TAU_P, i, l], dt)
                        uP_old[g, i, a, l] = u
                ok = code == LOGISTIC
                if ok:
                    for a in range(n):
                        for l in range(ULANES):
                            value, fast = logistic_fast(uP_breve[g, i, a, l])
                            rP[g, i, a, l] = value
                            ok &= fast
                if not ok:  # another activation, or exp outside the fast range: libm
                    for a in range(n):
                        for l in range(ULANES):
                            rP[g, i, a, l] = phi(code, uP_breve[g, i, a, l])
            for i in range(H):
                n, code = layers[i + U2], acts[i + U1]
                for a in range(n):
                    for l in range(ULANES):
                        o, u = uI_old[g, i, a, l], uI[g, i, a, l]
                        rI_old[i, a, l] = rI[g, i, a, l]
                        uI_breve[g, i, a, l] = eq.lookahead_voltage(o, u, rp[g, RP_TAUR_TAU_I, l], dt)
                        uI_old[g, i, a, l] = u
                ok = code == LOGISTIC
                if ok:
                    for a in range(n):
                        for l in range(ULANES):
                            value, fast = logistic_fast(uI_breve[g, i, a, l])
                            rI[g, i, a, l] = value
                            ok &= fast
                if not ok:  # another activation, or exp outside the fast range: libm
                    for a in range(n):
                        for l in range(ULANES):
                            rI[g, i, a, l] = phi(code, uI_breve[g, i, a, l])
            for b in range(n_in):
                for l in range(ULANES):
                    r0_old[b, l] = r0[g, b, l]
                    r0[g, b, l] = patterns[run_of[g, l], smp[l], b]

            # ---- step 4, first part (it needs vbas, vden and vapi of the previous step, so it runs before
            # step 2): postsynaptic factors of the increments and the rate filters (dynamics._forward_increments)
            need_fw = forward or last
            for i in range(L):
                n, code = layers[i + U1], acts[i]
                c_col = RP_C_OUT if i == L - U1 else RP_C_HID
                if need_fw or post_lp:
                    if use_act:  # r-breve - phi(c v^bas_old)
                        ok = code == 0
                        if ok:
                            for a in range(n):
                                for l in range(ULANES):
                                    rate, fast = logistic_fast(eq.dendritic_prediction(rp[g, c_col, l], vbas[g, i, a, l]))
                                    postP[i, a, l] = eq.prediction_error(rP[g, i, a, l], rate)
                                    ok &= fast
                        if not ok:
                            for a in range(n):
                                for l in range(ULANES):
                                    predicted = phi(code, eq.dendritic_prediction(rp[g, c_col, l], vbas[g, i, a, l]))
                                    postP[i, a, l] = eq.prediction_error(rP[g, i, a, l], predicted)
                    else:  # u-breve - c v^bas_old
                        for a in range(n):
                            for l in range(ULANES):
                                predicted = eq.dendritic_prediction(rp[g, c_col, l], vbas[g, i, a, l])
                                postP[i, a, l] = eq.prediction_error(uP_breve[g, i, a, l], predicted)
                if r_lp:  # low-passed presynaptic rates: input, then pyramidal layer i-1
                    if i == U0:
                        for b in range(n_in):
                            for l in range(ULANES):
                                r0_LO[g, b, l] = eq.low_pass(r0_LO[g, b, l], r0_old[b, l], rp[g, RP_DT_OVER_TAULO, l])
                    else:
                        for b in range(layers[i]):
                            for l in range(ULANES):
                                r_LO[g, i - U1, b, l] = eq.low_pass(r_LO[g, i - U1, b, l], rP_old[i - U1, b, l],
                                                                    rp[g, RP_DT_OVER_TAULO, l])
                if post_lp:
                    for a in range(n):
                        for l in range(ULANES):
                            lo_post = eq.low_pass(post_LO[g, i, a, l], postP[i, a, l], rp[g, RP_DT_OVER_TAULO, l])
                            post_LO[g, i, a, l] = lo_post
                            postP[i, a, l] = lo_post
            if lateral or last:
                for i in range(H):
                    n, code = layers[i + U2], acts[i + U1]
                    # With eta_IP = 0 the update adds 0 * (finite) = +-0, i.e. leaves W^IP as it is (up to the
                    # sign of a zero weight), unless a NaN or inf is about: then it is computed as usual. Only at
                    # the segment's last step is the (zero) increment itself observable.
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
                    skip_wip[i] = skip
                    if not skip:  # r^I - phi(g_den/(g_l+g_den) v^den_old)
                        ok = code == 0
                        if ok:
                            for a in range(n):
                                for l in range(ULANES):
                                    rate, fast = logistic_fast(eq.dendritic_prediction(rp[g, RP_C_DEN, l], vden[g, i, a, l]))
                                    postI[i, a, l] = eq.prediction_error(rI[g, i, a, l], rate)
                                    ok &= fast
                        if not ok:
                            for a in range(n):
                                for l in range(ULANES):
                                    predicted = phi(code, eq.dendritic_prediction(rp[g, RP_C_DEN, l], vden[g, i, a, l]))
                                    postI[i, a, l] = eq.prediction_error(rI[g, i, a, l], predicted)
                    for a in range(layers[i + U1]):
                        for l in range(ULANES):
                            neg_vapi_old[i, a, l] = -vapi[g, i, a, l]

            # ---- step 2: dendritic potentials. Each mat-vec y = W x sums over the presynaptic b in order; two
            # outputs x four lanes are held in registers.
            for i in range(L):  # v^bas_i = W^PP_i r_{i-1}
                n, n_pre = layers[i + U1], layers[i]
                if i == U0:
                    for b in range(n_pre):
                        for l in range(ULANES):
                            xb[b, l] = r0[g, b, l]
                else:
                    for b in range(n_pre):
                        for l in range(ULANES):
                            xb[b, l] = rP[g, i - U1, b, l]
                a = U0
                while a + U2 <= n:
                    a1 = a + U1
                    s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = 0.0
                    for b in range(n_pre):
                        x0, x1, x2, x3 = xb[b, U0], xb[b, U1], xb[b, U2], xb[b, U3]
                        s0 += WPP[g, i, a, b, U0] * x0
                        s1 += WPP[g, i, a, b, U1] * x1
                        s2 += WPP[g, i, a, b, U2] * x2
                        s3 += WPP[g, i, a, b, U3] * x3
                        t0 += WPP[g, i, a1, b, U0] * x0
                        t1 += WPP[g, i, a1, b, U1] * x1
                        t2 += WPP[g, i, a1, b, U2] * x2
                        t3 += WPP[g, i, a1, b, U3] * x3
                    vbas[g, i, a, U0], vbas[g, i, a, U1], vbas[g, i, a, U2], vbas[g, i, a, U3] = s0, s1, s2, s3
                    vbas[g, i, a1, U0], vbas[g, i, a1, U1], vbas[g, i, a1, U2], vbas[g, i, a1, U3] = t0, t1, t2, t3
                    a += U2
                if a < n:
                    s0 = s1 = s2 = s3 = 0.0
                    for b in range(n_pre):
                        s0 += WPP[g, i, a, b, U0] * xb[b, U0]
                        s1 += WPP[g, i, a, b, U1] * xb[b, U1]
                        s2 += WPP[g, i, a, b, U2] * xb[b, U2]
                        s3 += WPP[g, i, a, b, U3] * xb[b, U3]
                    vbas[g, i, a, U0], vbas[g, i, a, U1], vbas[g, i, a, U2], vbas[g, i, a, U3] = s0, s1, s2, s3
            for i in range(H):  # v^den_i = W^IP_i r_i, low-passed with inter_low_pass
                n, n_pre = layers[i + U2], layers[i + U1]
                a = U0
                while a + U2 <= n:
                    a1 = a + U1
                    s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = 0.0
                    for b in range(n_pre):
                        x0, x1, x2, x3 = rP[g, i, b, U0], rP[g, i, b, U1], rP[g, i, b, U2], rP[g, i, b, U3]
                        s0 += WIP[g, i, a, b, U0] * x0
                        s1 += WIP[g, i, a, b, U1] * x1
                        s2 += WIP[g, i, a, b, U2] * x2
                        s3 += WIP[g, i, a, b, U3] * x3
                        t0 += WIP[g, i, a1, b, U0] * x0
                        t1 += WIP[g, i, a1, b, U1] * x1
                        t2 += WIP[g, i, a1, b, U2] * x2
                        t3 += WIP[g, i, a1, b, U3] * x3
                    y[a, U0], y[a, U1], y[a, U2], y[a, U3] = s0, s1, s2, s3
                    y[a1, U0], y[a1, U1], y[a1, U2], y[a1, U3] = t0, t1, t2, t3
                    a += U2
                if a < n:
                    s0 = s1 = s2 = s3 = 0.0
                    for b in range(n_pre):
                        s0 += WIP[g, i, a, b, U0] * rP[g, i, b, U0]
                        s1 += WIP[g, i, a, b, U1] * rP[g, i, b, U1]
                        s2 += WIP[g, i, a, b, U2] * rP[g, i, b, U2]
                        s3 += WIP[g, i, a, b, U3] * rP[g, i, b, U3]
                    y[a, U0], y[a, U1], y[a, U2], y[a, U3] = s0, s1, s2, s3
                if inter_lp:
                    for a in range(n):
                        for l in range(ULANES):
                            vden[g, i, a, l] = eq.low_pass(vden[g, i, a, l], y[a, l], rp[g, RP_DT_OVER_TAULO, l])
                else:
                    for a in range(n):
                        for l in range(ULANES):
                            vden[g, i, a, l] = y[a, l]
            for i in range(H):  # v^api_i = B^PP_i r_{i+1} + B^PI_i r^I_i; the soma gets + xi (the old noise)
                n, n_pre = layers[i + U1], layers[i + U2]
                for a in range(n):
                    s0 = s1 = s2 = s3 = t0 = t1 = t2 = t3 = 0.0
                    for b in range(n_pre):
                        s0 += BPP[g, i, a, b, U0] * rP[g, i + U1, b, U0]
                        s1 += BPP[g, i, a, b, U1] * rP[g, i + U1, b, U1]
                        s2 += BPP[g, i, a, b, U2] * rP[g, i + U1, b, U2]
                        s3 += BPP[g, i, a, b, U3] * rP[g, i + U1, b, U3]
                        t0 += BPI[g, i, a, b, U0] * rI[g, i, b, U0]
                        t1 += BPI[g, i, a, b, U1] * rI[g, i, b, U1]
                        t2 += BPI[g, i, a, b, U2] * rI[g, i, b, U2]
                        t3 += BPI[g, i, a, b, U3] * rI[g, i, b, U3]
                    y[a, U0], y[a, U1] = eq.apical_potential(s0, t0), eq.apical_potential(s1, t1)
                    y[a, U2], y[a, U3] = eq.apical_potential(s2, t2), eq.apical_potential(s3, t3)
                for a in range(n):
                    for l in range(ULANES):
                        vapi[g, i, a, l] = y[a, l]
                        vapi_noise[g, i, a, l] = eq.with_apical_noise(y[a, l], noise[g, i, a, l])

            # ---- step 3a: PAL noise (noise.draw_noise), run by run. Which layers redraw (xi all zero, or the
            # counter shared by all layers hits the period) does not depend on the draws, so it is settled first
            # and the step's normals are drawn in one batch, in the order draw_noise consumes them.
            if feedback and any_pal:
                for l in range(ULANES):
                    if real[g, l] == 0 or fl[g, FL_PAL, l] == 0:  # padding lanes and BP/FA runs draw nothing
                        continue
                    q = g * ULANES + l  # the run's generator
                    period, period_int = rp[g, RP_PERIOD, l], fl[g, FL_PERIOD_INT, l]
                    m = U0
                    for i in range(H):
                        zero = True
                        for a in range(layers[i + U1]):
                            if noise[g, i, a, l] != 0.0:
                                zero = False
                                break
                        redraw[i] = redraws(zero, counter[g, l], period, period_int)
                        if redraw[i]:
                            counter[g, l] = 0
                            m += layers[i + U1]
                        counter[g, l] += 1
                    pos, has_gauss, cached = normals(mt_key, mt_out, q, np.uint64(mt_pos[q]), mt_has_gauss[q],
                                                      mt_cached[q], m, gbuf, pairs)
                    mt_pos[q], mt_has_gauss[q], mt_cached[q] = np.int64(pos), has_gauss, cached
                    mode = fl[g, FL_MODE, l]
                    k = U0
                    for i in range(H):
                        if not redraw[i]:
                            continue
                        n, scale = layers[i + U1], lp[g, LP_SCALE, i, l]
                        # white = scale * normal(0, sigma) = scale * (0 + sigma * g): sigma is 1, |u^P| (before
                        # this step's update), |u-breve^P| or |v^api| by the noise mode
                        for a in range(n):
                            if mode == 0:
                                sigma = 1.0
                            elif mode == 1:
                                sigma = abs(uP[g, i, a, l])
                            elif mode == 2:
                                sigma = abs(uP_breve[g, i, a, l])
                            else:
                                sigma = abs(vapi[g, i, a, l])
                            white[a] = eq.white_noise(scale, sigma, gbuf[k + a])
                        k += n
                        if fl[g, FL_OU, l] != 0:
                            inv_tauxi, sqrt_dt_tauxi = rp[g, RP_INV_TAUXI, l], rp[g, RP_SQRT_DT_TAUXI, l]
                            for a in range(n):
                                noise[g, i, a, l] = eq.ou_noise_step(noise[g, i, a, l], white[a], dt, inv_tauxi, sqrt_dt_tauxi)
                        else:
                            for a in range(n):
                                noise[g, i, a, l] = white[a]

            # ---- step 3b: somatic increments (the soma sees the previous step's noise via vapi_noise)
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
                        drive = eq.two_compartment_drive(tau, rp[g, RP_GBAS, l], vbas[g, i, a, l], rp[g, RP_GAPI, l], apical)
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

            # ---- step 4, rest, and step 5 (apply). BP's reset reads W^PP before this step's update
            # (dynamics.py order), so it comes first.
            if any_bp:  # feedback.reset_bp_feedback: B^PP = (W^PP_{i+1})^T, B^PI = -B^PP
                for i in range(H):
                    for a in range(layers[i + U1]):
                        for b in range(layers[i + U2]):
                            for l in range(ULANES):
                                bp, w = fl[g, FL_BP, l] != 0, WPP[g, i + U1, b, a, l]
                                BPP[g, i, a, b, l] = w if bp else BPP[g, i, a, b, l]
                                BPI[g, i, a, b, l] = -w if bp else BPI[g, i, a, b, l]
            if any_pal and regularizer == VARPHI and (feedback or last):
                for i in range(H):
                    code = acts[i]
                    for a in range(layers[i + U1]):
                        for l in range(ULANES):
                            slope[i, a, l] = phi_prime(code, uP_breve[g, i, a, l])
            if last:
                # The segment's last step: store every increment (the recorder may read them), then apply
                # those the phase allows. Same equations as the fused passes below, so the same bits.
                for i in range(H):
                    for a in range(layers[i + U1]):
                        for b in range(layers[i + U2]):
                            for l in range(ULANES):
                                # dB^PI = dt eta_PI (-v^api_old) (x) r^I_old, zero when eta_PI = 0
                                inc = eq.plasticity_increment(lp[g, LP_DT_ETA_PI, i, l], neg_vapi_old[i, a, l],
                                                              rI_old[i, b, l])
                                dBPI[g, i, a, b, l] = inc if lp[g, LP_ETA_PI_ON, i, l] != 0.0 else 0.0
                                # dB^PP with this step's noise; 0 for BP and FA
                                r_pre = rHI[g, i + U1, b, l] if hi_pass else rP[g, i + U1, b, l]
                                d = pal_increment(regularizer, lp[g, LP_DT_ETA_BW, i, l], lp[g, LP_DT_ALPHA_ETA_BW, i, l],
                                                  noise[g, i, a, l], r_pre, BPP[g, i, a, b, l], slope[i, a, l],
                                                  slope[i + U1, b, l])
                                dBPP[g, i, a, b, l] = d if fl[g, FL_PAL, l] != 0 else 0.0
                    for a in range(layers[i + U2]):  # dW^IP = dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
                        for b in range(layers[i + U1]):
                            for l in range(ULANES):
                                dWIP[g, i, a, b, l] = eq.plasticity_increment(lp[g, LP_DT_ETA_IP, i, l], postI[i, a, l],
                                                                              rP_old[i, b, l])
                for i in range(L):  # dW^PP = dt eta_fw post (x) pre
                    for a in range(layers[i + U1]):
                        for b in range(layers[i]):
                            for l in range(ULANES):
                                if r_lp:
                                    pre = r0_LO[g, b, l] if i == U0 else r_LO[g, i - U1, b, l]
                                else:
                                    pre = r0_old[b, l] if i == U0 else rP_old[i - U1, b, l]
                                dWPP[g, i, a, b, l] = eq.plasticity_increment(lp[g, LP_DT_ETA_FW, i, l], postP[i, a, l], pre)
                for i in range(H):
                    for a in range(layers[i + U1]):
                        for b in range(layers[i + U2]):
                            for l in range(ULANES):
                                if lateral:
                                    BPI[g, i, a, b, l] = BPI[g, i, a, b, l] + dBPI[g, i, a, b, l]
                                if feedback:
                                    BPP[g, i, a, b, l] = BPP[g, i, a, b, l] + dBPP[g, i, a, b, l]
                    if lateral:
                        for a in range(layers[i + U2]):
                            for b in range(layers[i + U1]):
                                for l in range(ULANES):
                                    WIP[g, i, a, b, l] = WIP[g, i, a, b, l] + dWIP[g, i, a, b, l]
                if forward:
                    for i in range(L):
                        for a in range(layers[i + U1]):
                            for b in range(layers[i]):
                                for l in range(ULANES):
                                    # PAL moves W^PP by the low-pass of its increments (dW^PP_LO stays for the others)
                                    w_lo, inc, lo_old = fl[g, FL_W_LO, l] != 0, dWPP[g, i, a, b, l], dWPP_LO[g, i, a, b, l]
                                    lo_d = eq.low_pass(lo_old, inc, rp[g, RP_DT_OVER_TAULO, l])
                                    dWPP_LO[g, i, a, b, l] = lo_d if w_lo else lo_old
                                    WPP[g, i, a, b, l] = WPP[g, i, a, b, l] + (lo_d if w_lo else inc)
            else:
                # Any other step: increments are only applied (they are overwritten unseen), each fused with
                # its update in one pass.
                if lateral:
                    for i in range(H):
                        # B^PI += dt eta_PI (-v^api_old) (x) r^I_old, or += 0 where eta_PI = 0
                        for a in range(layers[i + U1]):
                            for b in range(layers[i + U2]):
                                for l in range(ULANES):
                                    inc = eq.plasticity_increment(lp[g, LP_DT_ETA_PI, i, l], neg_vapi_old[i, a, l],
                                                                  rI_old[i, b, l])
                                    BPI[g, i, a, b, l] = BPI[g, i, a, b, l] + (inc if lp[g, LP_ETA_PI_ON, i, l] != 0.0 else 0.0)
                        if skip_wip[i]:
                            continue
                        for a in range(layers[i + U2]):  # W^IP += dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
                            for b in range(layers[i + U1]):
                                for l in range(ULANES):
                                    inc = eq.plasticity_increment(lp[g, LP_DT_ETA_IP, i, l], postI[i, a, l], rP_old[i, b, l])
                                    WIP[g, i, a, b, l] = WIP[g, i, a, b, l] + inc
                if feedback:
                    for i in range(H):
                        if not any_pal:  # BP, FA: B^PP += 0
                            for a in range(layers[i + U1]):
                                for b in range(layers[i + U2]):
                                    for l in range(ULANES):
                                        BPP[g, i, a, b, l] = BPP[g, i, a, b, l] + 0.0
                            continue
                        # B^PP += dB^PP in PAL lanes, += 0 in the others; the usual regularizer passed as a
                        # constant, so that the loop over lanes is branch-free
                        for a in range(layers[i + U1]):
                            for b in range(layers[i + U2]):
                                if regularizer == WEIGHT_DECAY:
                                    for l in range(ULANES):
                                        r_pre = rHI[g, i + U1, b, l] if hi_pass else rP[g, i + U1, b, l]
                                        w = BPP[g, i, a, b, l]
                                        d = pal_increment(WEIGHT_DECAY, lp[g, LP_DT_ETA_BW, i, l], lp[g, LP_DT_ALPHA_ETA_BW, i, l],
                                                          noise[g, i, a, l], r_pre, w, 0.0, 0.0)
                                        BPP[g, i, a, b, l] = w + (d if fl[g, FL_PAL, l] != 0 else 0.0)
                                    continue
                                for l in range(ULANES):
                                    r_pre = rHI[g, i + U1, b, l] if hi_pass else rP[g, i + U1, b, l]
                                    w = BPP[g, i, a, b, l]
                                    d = pal_increment(regularizer, lp[g, LP_DT_ETA_BW, i, l], lp[g, LP_DT_ALPHA_ETA_BW, i, l],
                                                      noise[g, i, a, l], r_pre, w, slope[i, a, l], slope[i + U1, b, l])
                                    BPP[g, i, a, b, l] = w + (d if fl[g, FL_PAL, l] != 0 else 0.0)
                if forward:
                    for i in range(L):
                        for a in range(layers[i + U1]):
                            for b in range(layers[i]):
                                for l in range(ULANES):
                                    if r_lp:
                                        pre = r0_LO[g, b, l] if i == U0 else r_LO[g, i - U1, b, l]
                                    else:
                                        pre = r0_old[b, l] if i == U0 else rP_old[i - U1, b, l]
                                    inc = eq.plasticity_increment(lp[g, LP_DT_ETA_FW, i, l], postP[i, a, l], pre)
                                    # PAL moves W^PP by the low-pass of its increments (dW^PP_LO stays for the others)
                                    w_lo, lo_old = fl[g, FL_W_LO, l] != 0, dWPP_LO[g, i, a, b, l]
                                    lo_d = eq.low_pass(lo_old, inc, rp[g, RP_DT_OVER_TAULO, l])
                                    dWPP_LO[g, i, a, b, l] = lo_d if w_lo else lo_old
                                    WPP[g, i, a, b, l] = WPP[g, i, a, b, l] + (lo_d if w_lo else inc)
            for i in range(L):  # somata
                for a in range(layers[i + U1]):
                    for l in range(ULANES):
                        uP[g, i, a, l] = uP[g, i, a, l] + dUP[i, a, l]
            for i in range(H):
                for a in range(layers[i + U2]):
                    for l in range(ULANES):
                        uI[g, i, a, l] = uI[g, i, a, l] + dUI[i, a, l]
            # (the recorder runs here: it sees r^HI before the update below)
            if last:
                for i in range(L):
                    for a in range(layers[i + U1]):
                        for l in range(ULANES):
                            hi_rec[g, i, a, l] = rHI[g, i, a, l]
            # high-pass filter of the rates, every step
            for i in range(L):
                for a in range(layers[i + U1]):
                    for l in range(ULANES):
                        rHI[g, i, a, l] = eq.high_pass(rHI[g, i, a, l], rP[g, i, a, l], rP_old[i, a, l], rp[g, RP_DT_OVER_TAUHP, l])


# -- kernels specialised to one network -----------------------------------------------------------------------
# Compiled with the layer sizes and activations as constants, LLVM unrolls the loops over layers and neurons and
# drops the other activations' branches: on the 1-1-1 networks of Fig. 4, where those loops run once each, that
# pays many times over (same bits; figures in docs/performance.md). Wide networks gain little, so the neuron
# layout keeps its generic kernel.
# Each network costs one compilation, cached on disk like the generic kernel; a batch uses it when it is long
# enough to repay that (``SPECIALISE_MIN_RUN_STEPS``: about the compilation's time in run-steps of the generic
# kernel) or when this process has it already.
SPECIALISE_MIN_RUN_STEPS = 200_000_000
_specialised: dict[tuple[tuple[int, ...], tuple[int, ...]], Callable[..., None]] = {}
_specialised_lock = threading.Lock()


def segment_for(sim: Simulation, layers: np.ndarray, acts: np.ndarray,
                specialise: bool | None = None) -> Callable[..., None]:
    """The kernel that advances ``sim`` (network ``layers``, activation codes ``acts``): ``advance_segment``, or
    its copy specialised to this network if ``specialise``; None lets the batch's size decide (see above)."""
    key = (tuple(int(n) for n in layers), tuple(int(c) for c in acts))
    if specialise is None:
        specialise = key in _specialised or len(sim.runs) * sim.protocol.total_steps >= SPECIALISE_MIN_RUN_STEPS
    if not specialise:
        return advance_segment
    with _specialised_lock:
        if key not in _specialised:
            _specialised[key] = _specialise(*key)
        return _specialised[key]


def _specialise(layers: tuple[int, ...], acts: tuple[int, ...]) -> Callable[..., None]:
    """A copy of ``advance_segment`` whose ``_network`` returns ``layers`` and ``acts`` as constants.

    The copy is named after the network: numba names its cache files after the function, so every network gets
    its own, next to the generic kernel's (and a change to this file invalidates them all alike).
    """
    constants = {"_LAYERS": tuple(np.uint64(n) for n in layers), "_ACTS": tuple(np.int64(c) for c in acts)}
    network = njit(**dict(JIT, cache=False), inline="always")(_renamed(_fixed_network, constants, "_network"))
    generic = advance_segment.py_func
    name = f"advance_segment_{'x'.join(map(str, layers))}_act{'_'.join(map(str, acts))}"
    return njit(**KERNEL_OPTIONS)(_renamed(generic, dict(generic.__globals__, _network=network), name))


def _renamed(function: FunctionType, namespace: dict[str, object], name: str) -> FunctionType:
    """``function``'s code under another name, resolving its globals in ``namespace``."""
    names = {"co_name": name}
    if hasattr(function.__code__, "co_qualname"):  # code objects have one from Python 3.11 on
        names["co_qualname"] = name
    code = function.__code__.replace(**names)
    copy = FunctionType(code, namespace, name, function.__defaults__)
    copy.__qualname__, copy.__module__, copy.__doc__ = name, function.__module__, function.__doc__
    return copy


