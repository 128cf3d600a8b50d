"""The compiled kernel for small networks: runs in the vector lanes (kernel.py chooses it, and drives it).

kernel.py's layout vectorises over the neurons of a layer, padded to blocks of four: for the 1-1-1 networks of
the fw_bw figure three of every four lanes are padding, and the loop overhead of a step (some forty short loops)
is paid by every run alone. Here the runs are the innermost axis, in blocks of four: every operation of a step
works on four runs at once, layers need no padding, and the overhead is paid once per four runs. For wider
networks (Fig. 3abc) kernel.py's layout is faster: a block of four runs no longer fits in the L1 cache.

The arithmetic is kernel.py's (and so dynamics.py's), expression for expression, with the same helpers: the same
numbers to the last bit apart from the summation order of the mat-vecs. The generators are per run, so the PAL
noise is drawn run by run in scalar code.

Long batches run a copy of this kernel compiled for their network (``segment_for``): with the layer sizes and
activations as constants, the many one-neuron loops of a 1-1-1 network disappear (2.4-3.8x faster, same bits).
"""

from __future__ import annotations

import threading
from types import FunctionType
from typing import TYPE_CHECKING, Callable

import numpy as np
from numba import njit

from palmc.engine.kernel import (
    _JIT, _KERNEL_OPTIONS, FL_BP, FL_GATE, FL_HI_PASS, FL_INTER_LP, FL_MODE, FL_OU, FL_PAL, FL_PERIOD_INT, FL_POST_LP,
    FL_R_LP, FL_USE_ACT, FL_VARPHI, FL_W_LO, LP_A_P, LP_DECAY, LP_DT_ETA_BW, LP_DT_ETA_FW, LP_DT_ETA_IP,
    LP_DT_ETA_PI, LP_ETA_PI_ON, LP_SCALE, LP_TAU_P, MAT_FIELDS, PLAIN, RP_A_I, RP_C_DEN, RP_C_HID, RP_C_OUT,
    RP_GAPI, RP_GBAS, RP_GDEN, RP_GNI, RP_GNTGT, RP_HP, RP_INV_TAUXI, RP_LO, RP_PERIOD, RP_SQRT_DT_TAUXI,
    RP_TAU_I, RP_TAU_OUT_NOTGT, U0, U1, U2, U3, VEC_FIELDS, _exp_fast, _exp_in_range, _heaviside0, _next_presentation,
    _normals, _Packed, _per_run_fields, _phi, _phi_prime, _redraws, _shapes,
)
from palmc.engine.state import State

if TYPE_CHECKING:  # pragma: no cover
    from palmc.engine.tasks import Simulation

_LANES = 4  # runs per block: one AVX2 register of float64
LANES = np.uint64(_LANES)

# Speed notes (measured on the Fig. 3abc and 1-1-1 networks; they shape how the loops below are written):
# * runs are the innermost axis, in blocks of four (``LANES``): every per-neuron operation is a loop over the four
#   runs of a block with a constant trip count, which LLVM unrolls and its SLP vectoriser (see ``_compiling``)
#   turns into one AVX2 operation. Layers need no padding, tiny layers (1-1-1) waste nothing, and the loop
#   overhead of a step is paid once per four runs;
# * indices are unsigned (np.uint64): numba checks signed indices for negative values at every access, which
#   blocks vectorisation; U1 etc. keep the arithmetic unsigned;
# * mat-vecs keep two outputs x four runs in registers while summing over the presynaptic neurons (independent
#   chains; the arrays are declared non-aliasing, ``_kernel_options``);
# * increments are applied in the same pass that computes them and stored only at a segment's last step
#   (before that they are overwritten unseen), which halves the traffic through the weight matrices;
# * no helper that takes arrays is called per step (each call costs reference counting), except rarely;
# * flags accumulated over a loop live in locals, combined with ``&``; MT19937 words are stored as uint32,
#   eight per AVX2 operation (a twist costs ~0.3 us).
# The generators are per run, so the PAL noise is drawn run by run (scalar code): the polar method's candidates
# and libm's log.


@njit(**_JIT, inline="always")
def _logistic_fast(x: float) -> tuple[float, bool]:
    """The logistic 1 / (1 + exp(-x)) with ``_exp_fast``, and whether that was glibc's exp (else: use ``_phi``)."""
    return 1.0 / (1.0 + _exp_fast(-x)), _exp_in_range(-x)


@njit(**_JIT, inline="always")
def _network(layer_sizes, act_codes):  # type: ignore[no-untyped-def]
    """The layer sizes and activation codes of the generic kernel: the arrays it is given. The kernels that
    ``_specialise`` makes have ``_fixed_network`` here instead."""
    return layer_sizes, act_codes


def _fixed_network(layer_sizes, act_codes):  # type: ignore[no-untyped-def]
    """``_network`` of a specialised kernel: its globals hold the network as constants (``_specialise``)."""
    return _LAYERS, _ACTS  # noqa: F821 - defined in this copy's globals only


@njit(**_KERNEL_OPTIONS)
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
    The pattern of a step is picked as ``Simulation._prepare_step`` does: the unshuffled sequence while settling
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
    rP_old, rI_old, r0_old = np.zeros((nL, Wd, _LANES)), np.zeros((nH, Wd, _LANES)), np.zeros((Wd, _LANES))
    dUP, dUI = np.zeros((nL, Wd, _LANES)), np.zeros((nH, Wd, _LANES))
    postP, postI = np.zeros((nL, Wd, _LANES)), np.zeros((nH, Wd, _LANES))  # postsynaptic factors of dW^PP, dW^IP
    neg_vapi_old = np.zeros((nH, Wd, _LANES))  # postsynaptic factor of dB^PI
    xb, y, white = np.zeros((Wd, _LANES)), np.zeros((Wd, _LANES)), np.zeros(Wd)  # mat-vec input, output; draws
    slope = np.zeros((nL, Wd, _LANES))  # phi' for the varphi regularizer; the output row stays 0 (feedback.py)
    smp = np.zeros(_LANES, dtype=np.uint64)  # the pattern each lane sees
    redraw, skip_wip = np.zeros(nH, dtype=np.bool_), np.zeros(nH, dtype=np.bool_)
    gbuf = np.zeros(nL * Wd + 2)  # the normals of one step of one run
    pairs = np.zeros((4, nL * Wd))  # scratch of _normals

    for g in range(G):
        any_bp, any_pal = False, False  # the models may differ by lane: BP, FA and PAL share blocks
        for l in range(LANES):
            any_bp |= fl[g, FL_BP, l] != 0
            any_pal |= fl[g, FL_PAL, l] != 0
        use_act, hi_pass = fl[g, FL_USE_ACT, U0] != 0, fl[g, FL_HI_PASS, U0] != 0
        r_lp, post_lp, inter_lp = fl[g, FL_R_LP, U0] != 0, fl[g, FL_POST_LP, U0] != 0, fl[g, FL_INTER_LP, U0] != 0
        gate, varphi = fl[g, FL_GATE, U0] != 0, fl[g, FL_VARPHI, U0] != 0
        pattern, shown = within // Tp, within % Tp  # place in the sequence: pattern and steps it was shown

        for j in range(n_steps):
            last = j == n_steps - U1
            for l in range(LANES):
                smp[l] = pattern if settle else np.uint64(order[run_of[g, l], pattern])
            pattern, shown = _next_presentation(pattern, shown, Tp, n_patterns)

            # ---- step 1: lookahead u-breve = u_old + taur tau (u - u_old) / dt and rates phi(u-breve),
            # keeping the old rates; then the new input
            for i in range(L):
                n, code = layers[i + U1], acts[i]
                for a in range(n):
                    for l in range(LANES):
                        o, u = uP_old[g, i, a, l], uP[g, i, a, l]
                        rP_old[i, a, l] = rP[g, i, a, l]
                        uP_breve[g, i, a, l] = o + lp[g, LP_A_P, i, l] * (u - o) / dt
                        uP_old[g, i, a, l] = u
                ok = code == 0
                if ok:
                    for a in range(n):
                        for l in range(LANES):
                            rate, fast = _logistic_fast(uP_breve[g, i, a, l])
                            rP[g, i, a, l] = rate
                            ok &= fast
                if not ok:  # another activation, or exp outside the fast range: libm
                    for a in range(n):
                        for l in range(LANES):
                            rP[g, i, a, l] = _phi(code, uP_breve[g, i, a, l])
            for i in range(H):
                n, code = layers[i + U2], acts[i + U1]
                for a in range(n):
                    for l in range(LANES):
                        o, u = uI_old[g, i, a, l], uI[g, i, a, l]
                        rI_old[i, a, l] = rI[g, i, a, l]
                        uI_breve[g, i, a, l] = o + rp[g, RP_A_I, l] * (u - o) / dt
                        uI_old[g, i, a, l] = u
                ok = code == 0
                if ok:
                    for a in range(n):
                        for l in range(LANES):
                            rate, fast = _logistic_fast(uI_breve[g, i, a, l])
                            rI[g, i, a, l] = rate
                            ok &= fast
                if not ok:
                    for a in range(n):
                        for l in range(LANES):
                            rI[g, i, a, l] = _phi(code, uI_breve[g, i, a, l])
            for b in range(n_in):
                for l in range(LANES):
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
                                for l in range(LANES):
                                    rate, fast = _logistic_fast(rp[g, c_col, l] * vbas[g, i, a, l])
                                    postP[i, a, l] = rP[g, i, a, l] - rate
                                    ok &= fast
                        if not ok:
                            for a in range(n):
                                for l in range(LANES):
                                    postP[i, a, l] = rP[g, i, a, l] - _phi(code, rp[g, c_col, l] * vbas[g, i, a, l])
                    else:  # u-breve - c v^bas_old
                        for a in range(n):
                            for l in range(LANES):
                                postP[i, a, l] = uP_breve[g, i, a, l] - rp[g, c_col, l] * vbas[g, i, a, l]
                if r_lp:  # low-passed presynaptic rates: input, then pyramidal layer i-1
                    if i == U0:
                        for b in range(n_in):
                            for l in range(LANES):
                                r0_LO[g, b, l] = r0_LO[g, b, l] + rp[g, RP_LO, l] * (r0_old[b, l] - r0_LO[g, b, l])
                    else:
                        for b in range(layers[i]):
                            for l in range(LANES):
                                lo_r = r_LO[g, i - U1, b, l]
                                r_LO[g, i - U1, b, l] = lo_r + rp[g, RP_LO, l] * (rP_old[i - U1, b, l] - lo_r)
                if post_lp:
                    for a in range(n):
                        for l in range(LANES):
                            lo_post = post_LO[g, i, a, l] + rp[g, RP_LO, l] * (postP[i, a, l] - post_LO[g, i, a, l])
                            post_LO[g, i, a, l] = lo_post
                            postP[i, a, l] = lo_post
            if lateral or last:
                for i in range(H):
                    n, code = layers[i + U2], acts[i + U1]
                    # With eta_IP = 0 the update adds 0 * (finite) = +-0, i.e. leaves W^IP as it is (up to the
                    # sign of a zero weight), unless a NaN or inf is about: then it is computed as usual. Only at
                    # the segment's last step is the (zero) increment itself observable.
                    skip = not last and (code == 0 or code == 1 or code == 5)
                    for l in range(LANES):
                        skip &= lp[g, LP_DT_ETA_IP, i, l] == 0.0
                    if skip:  # bounded activation: post is finite unless r^I or v^den_old is NaN
                        # (branch-free tests into a local: a reduction the compiler vectorises)
                        for a in range(n):
                            for l in range(LANES):
                                skip &= (rI[g, i, a, l] == rI[g, i, a, l]) & (vden[g, i, a, l] == vden[g, i, a, l])
                        for b in range(layers[i + U1]):
                            for l in range(LANES):
                                skip &= abs(rP_old[i, b, l]) < 1e300  # so post * pre stays finite
                    skip_wip[i] = skip
                    if not skip:  # r^I - phi(g_den/(g_l+g_den) v^den_old)
                        ok = code == 0
                        if ok:
                            for a in range(n):
                                for l in range(LANES):
                                    rate, fast = _logistic_fast(rp[g, RP_C_DEN, l] * vden[g, i, a, l])
                                    postI[i, a, l] = rI[g, i, a, l] - rate
                                    ok &= fast
                        if not ok:
                            for a in range(n):
                                for l in range(LANES):
                                    postI[i, a, l] = rI[g, i, a, l] - _phi(code, rp[g, RP_C_DEN, l] * vden[g, i, a, l])
                    for a in range(layers[i + U1]):
                        for l in range(LANES):
                            neg_vapi_old[i, a, l] = -vapi[g, i, a, l]

            # ---- step 2: dendritic potentials. Each mat-vec y = W x sums over the presynaptic b in order; two
            # outputs x four lanes are held in registers.
            for i in range(L):  # v^bas_i = W^PP_i r_{i-1}
                n, n_pre = layers[i + U1], layers[i]
                if i == U0:
                    for b in range(n_pre):
                        for l in range(LANES):
                            xb[b, l] = r0[g, b, l]
                else:
                    for b in range(n_pre):
                        for l in range(LANES):
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
                        for l in range(LANES):
                            vden[g, i, a, l] = vden[g, i, a, l] + rp[g, RP_LO, l] * (y[a, l] - vden[g, i, a, l])
                else:
                    for a in range(n):
                        for l in range(LANES):
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
                    y[a, U0], y[a, U1], y[a, U2], y[a, U3] = s0 + t0, s1 + t1, s2 + t2, s3 + t3
                for a in range(n):
                    for l in range(LANES):
                        vapi[g, i, a, l] = y[a, l]
                        vapi_noise[g, i, a, l] = y[a, l] + noise[g, i, a, l]

            # ---- step 3a: PAL noise (noise.draw_noise), run by run. Which layers redraw (xi all zero, or the
            # counter shared by all layers hits the period) does not depend on the draws, so it is settled first
            # and the step's normals are drawn in one batch, in the order draw_noise consumes them.
            if feedback and any_pal:
                for l in range(LANES):
                    if real[g, l] == 0 or fl[g, FL_PAL, l] == 0:  # padding lanes and BP/FA runs draw nothing
                        continue
                    q = g * LANES + l  # the run's generator
                    period, period_int = rp[g, RP_PERIOD, l], fl[g, FL_PERIOD_INT, l]
                    m = U0
                    for i in range(H):
                        zero = True
                        for a in range(layers[i + U1]):
                            if noise[g, i, a, l] != 0.0:
                                zero = False
                                break
                        redraw[i] = _redraws(zero, counter[g, l], period, period_int)
                        if redraw[i]:
                            counter[g, l] = 0
                            m += layers[i + U1]
                        counter[g, l] += 1
                    pos, has_gauss, cached = _normals(mt_key, mt_out, q, np.uint64(mt_pos[q]), mt_has_gauss[q],
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
                                white[a] = scale * (0.0 + 1.0 * gbuf[k + a])
                            elif mode == 1:
                                white[a] = scale * (0.0 + abs(uP[g, i, a, l]) * gbuf[k + a])
                            elif mode == 2:
                                white[a] = scale * (0.0 + abs(uP_breve[g, i, a, l]) * gbuf[k + a])
                            else:
                                white[a] = scale * (0.0 + abs(vapi[g, i, a, l]) * gbuf[k + a])
                        k += n
                        if fl[g, FL_OU, l] != 0:
                            inv_tauxi, sqrt_dt_tauxi = rp[g, RP_INV_TAUXI, l], rp[g, RP_SQRT_DT_TAUXI, l]
                            for a in range(n):
                                xi = noise[g, i, a, l]
                                noise[g, i, a, l] = xi + inv_tauxi * (-dt * xi + sqrt_dt_tauxi * white[a])
                        else:
                            for a in range(n):
                                noise[g, i, a, l] = white[a]

            # ---- step 3b: somatic increments (the soma sees the previous step's noise via vapi_noise)
            for i in range(H):
                for a in range(layers[i + U2]):
                    for l in range(LANES):
                        tau_I = rp[g, RP_TAU_I, l]
                        drive = tau_I * (rp[g, RP_GDEN, l] * vden[g, i, a, l] + rp[g, RP_GNI, l] * uP_breve[g, i + U1, a, l])
                        dUI[i, a, l] = dt * ((drive - uI[g, i, a, l]) / tau_I)
            for i in range(H):
                for a in range(layers[i + U1]):
                    for l in range(LANES):
                        tau = lp[g, LP_TAU_P, i, l]
                        noisy = feedback & (fl[g, FL_PAL, l] != 0)  # (& keeps the loop branch-free)
                        apical = vapi_noise[g, i, a, l] if noisy else vapi[g, i, a, l]
                        drive = tau * (rp[g, RP_GBAS, l] * vbas[g, i, a, l] + rp[g, RP_GAPI, l] * apical)
                        dUP[i, a, l] = dt * ((drive - uP[g, i, a, l]) / tau)
            for a in range(layers[L]):
                for l in range(LANES):
                    tau_out = lp[g, LP_TAU_P, H, l]
                    if has_target:
                        drive = tau_out * (rp[g, RP_GBAS, l] * vbas[g, H, a, l]
                                           + rp[g, RP_GNTGT, l] * targets[run_of[g, l], smp[l], a])
                    else:  # target-free drive, nudged time constant in the division (dynamics.py)
                        drive = rp[g, RP_TAU_OUT_NOTGT, l] * (rp[g, RP_GBAS, l] * vbas[g, H, a, l])
                    dUP[H, a, l] = dt * ((drive - uP[g, H, a, l]) / tau_out)

            # ---- step 4, rest, and step 5 (apply). BP's reset reads W^PP before this step's update
            # (dynamics.py order), so it comes first.
            if any_bp:  # feedback.reset_bp_feedback: B^PP = (W^PP_{i+1})^T, B^PI = -B^PP
                for i in range(H):
                    for a in range(layers[i + U1]):
                        for b in range(layers[i + U2]):
                            for l in range(LANES):
                                bp, w = fl[g, FL_BP, l] != 0, WPP[g, i + U1, b, a, l]
                                BPP[g, i, a, b, l] = w if bp else BPP[g, i, a, b, l]
                                BPI[g, i, a, b, l] = -w if bp else BPI[g, i, a, b, l]
            if any_pal and varphi and (feedback or last):
                for i in range(H):
                    code = acts[i]
                    for a in range(layers[i + U1]):
                        for l in range(LANES):
                            slope[i, a, l] = _phi_prime(code, uP_breve[g, i, a, l])
            if last:
                # The segment's last step: store every increment (the recorder may read them), then apply
                # those the phase allows. Same formulas as the fused passes below, so the same bits.
                for i in range(H):
                    for a in range(layers[i + U1]):
                        for b in range(layers[i + U2]):
                            for l in range(LANES):
                                # dB^PI = dt eta_PI (-v^api_old) (x) r^I_old, zero when eta_PI = 0
                                eta_PI, eta_PI_on = lp[g, LP_DT_ETA_PI, i, l], lp[g, LP_ETA_PI_ON, i, l] != 0.0
                                dBPI[g, i, a, b, l] = eta_PI * (neg_vapi_old[i, a, l] * rI_old[i, b, l]) if eta_PI_on else 0.0
                                # dB^PP (feedback.pal_feedback_increment) with this step's noise; 0 for BP and FA
                                r_pre = rHI[g, i + U1, b, l] if hi_pass else rP[g, i + U1, b, l]
                                eta_bw, decay = lp[g, LP_DT_ETA_BW, i, l], lp[g, LP_DECAY, i, l]
                                if fl[g, FL_PAL, l] == 0:
                                    d = 0.0
                                elif gate:
                                    d = eta_bw * (noise[g, i, a, l] * r_pre) - decay * BPP[g, i, a, b, l] * _heaviside0(r_pre)
                                elif varphi:
                                    reg = ((decay * slope[i, a, l]) * BPP[g, i, a, b, l]) * slope[i + U1, b, l]
                                    d = eta_bw * (noise[g, i, a, l] * r_pre) - reg
                                else:
                                    d = eta_bw * (noise[g, i, a, l] * r_pre) - decay * BPP[g, i, a, b, l]
                                dBPP[g, i, a, b, l] = d
                    for a in range(layers[i + U2]):  # dW^IP = dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
                        for b in range(layers[i + U1]):
                            for l in range(LANES):
                                dWIP[g, i, a, b, l] = lp[g, LP_DT_ETA_IP, i, l] * (postI[i, a, l] * rP_old[i, b, l])
                for i in range(L):  # dW^PP = dt eta_fw post (x) pre
                    for a in range(layers[i + U1]):
                        for b in range(layers[i]):
                            for l in range(LANES):
                                if r_lp:
                                    pre = r0_LO[g, b, l] if i == U0 else r_LO[g, i - U1, b, l]
                                else:
                                    pre = r0_old[b, l] if i == U0 else rP_old[i - U1, b, l]
                                dWPP[g, i, a, b, l] = lp[g, LP_DT_ETA_FW, i, l] * (postP[i, a, l] * pre)
                for i in range(H):
                    for a in range(layers[i + U1]):
                        for b in range(layers[i + U2]):
                            for l in range(LANES):
                                if lateral:
                                    BPI[g, i, a, b, l] = BPI[g, i, a, b, l] + dBPI[g, i, a, b, l]
                                if feedback:
                                    BPP[g, i, a, b, l] = BPP[g, i, a, b, l] + dBPP[g, i, a, b, l]
                    if lateral:
                        for a in range(layers[i + U2]):
                            for b in range(layers[i + U1]):
                                for l in range(LANES):
                                    WIP[g, i, a, b, l] = WIP[g, i, a, b, l] + dWIP[g, i, a, b, l]
                if forward:
                    for i in range(L):
                        for a in range(layers[i + U1]):
                            for b in range(layers[i]):
                                for l in range(LANES):
                                    # PAL moves W^PP by the low-pass of its increments (dW^PP_LO stays for the others)
                                    w_lo, inc, lo_old = fl[g, FL_W_LO, l] != 0, dWPP[g, i, a, b, l], dWPP_LO[g, i, a, b, l]
                                    lo_d = lo_old + rp[g, RP_LO, l] * (inc - lo_old)
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
                                for l in range(LANES):
                                    inc = lp[g, LP_DT_ETA_PI, i, l] * (neg_vapi_old[i, a, l] * rI_old[i, b, l])
                                    BPI[g, i, a, b, l] = BPI[g, i, a, b, l] + (inc if lp[g, LP_ETA_PI_ON, i, l] != 0.0 else 0.0)
                        if skip_wip[i]:
                            continue
                        for a in range(layers[i + U2]):  # W^IP += dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
                            for b in range(layers[i + U1]):
                                for l in range(LANES):
                                    inc = lp[g, LP_DT_ETA_IP, i, l] * (postI[i, a, l] * rP_old[i, b, l])
                                    WIP[g, i, a, b, l] = WIP[g, i, a, b, l] + inc
                if feedback:
                    for i in range(H):
                        if not any_pal:  # BP, FA: B^PP += 0
                            for a in range(layers[i + U1]):
                                for b in range(layers[i + U2]):
                                    for l in range(LANES):
                                        BPP[g, i, a, b, l] = BPP[g, i, a, b, l] + 0.0
                        elif gate or varphi:  # the regularizer variants (feedback.pal_feedback_increment)
                            for a in range(layers[i + U1]):
                                for b in range(layers[i + U2]):
                                    for l in range(LANES):
                                        r_pre = rHI[g, i + U1, b, l] if hi_pass else rP[g, i + U1, b, l]
                                        eta_bw, decay, w = lp[g, LP_DT_ETA_BW, i, l], lp[g, LP_DECAY, i, l], BPP[g, i, a, b, l]
                                        if gate:
                                            d = eta_bw * (noise[g, i, a, l] * r_pre) - decay * w * _heaviside0(r_pre)
                                        else:
                                            reg = ((decay * slope[i, a, l]) * w) * slope[i + U1, b, l]
                                            d = eta_bw * (noise[g, i, a, l] * r_pre) - reg
                                        BPP[g, i, a, b, l] = w + (d if fl[g, FL_PAL, l] != 0 else 0.0)
                        else:  # B^PP += dt eta_bw (xi (x) r_pre - alpha B^PP)
                            for a in range(layers[i + U1]):
                                for b in range(layers[i + U2]):
                                    for l in range(LANES):
                                        r_pre = rHI[g, i + U1, b, l] if hi_pass else rP[g, i + U1, b, l]
                                        eta_bw, decay, w = lp[g, LP_DT_ETA_BW, i, l], lp[g, LP_DECAY, i, l], BPP[g, i, a, b, l]
                                        d = eta_bw * (noise[g, i, a, l] * r_pre) - decay * w
                                        BPP[g, i, a, b, l] = w + (d if fl[g, FL_PAL, l] != 0 else 0.0)
                if forward:
                    for i in range(L):
                        for a in range(layers[i + U1]):
                            for b in range(layers[i]):
                                for l in range(LANES):
                                    if r_lp:
                                        pre = r0_LO[g, b, l] if i == U0 else r_LO[g, i - U1, b, l]
                                    else:
                                        pre = r0_old[b, l] if i == U0 else rP_old[i - U1, b, l]
                                    inc = lp[g, LP_DT_ETA_FW, i, l] * (postP[i, a, l] * pre)
                                    # PAL moves W^PP by the low-pass of its increments (dW^PP_LO stays for the others)
                                    w_lo, lo_old = fl[g, FL_W_LO, l] != 0, dWPP_LO[g, i, a, b, l]
                                    lo_d = lo_old + rp[g, RP_LO, l] * (inc - lo_old)
                                    dWPP_LO[g, i, a, b, l] = lo_d if w_lo else lo_old
                                    WPP[g, i, a, b, l] = WPP[g, i, a, b, l] + (lo_d if w_lo else inc)
            for i in range(L):  # somata
                for a in range(layers[i + U1]):
                    for l in range(LANES):
                        uP[g, i, a, l] = uP[g, i, a, l] + dUP[i, a, l]
            for i in range(H):
                for a in range(layers[i + U2]):
                    for l in range(LANES):
                        uI[g, i, a, l] = uI[g, i, a, l] + dUI[i, a, l]
            # (the recorder runs here: it sees r^HI before the update below)
            if last:
                for i in range(L):
                    for a in range(layers[i + U1]):
                        for l in range(LANES):
                            hi_rec[g, i, a, l] = rHI[g, i, a, l]
            # high-pass filter of the rates, every step
            for i in range(L):
                for a in range(layers[i + U1]):
                    for l in range(LANES):
                        rHI[g, i, a, l] = rHI[g, i, a, l] + ((rP[g, i, a, l] - rP_old[i, a, l]) - rp[g, RP_HP, l] * rHI[g, i, a, l])


# -- kernels specialised to one network -----------------------------------------------------------------------
# Compiled with the layer sizes and activations as constants, LLVM unrolls the loops over layers and neurons and
# drops the other activations' branches. On the 1-1-1 networks of Fig. 4, where those loops run once each, that
# made the kernel 3.0-3.8x faster per seed-step for BP and FA and 2.4-2.7x for PAL (same bits; alternated in one
# process). On Fig. 3abc's network it gained nothing in this layout and 3-8 % in kernel.py's, which keeps its
# generic kernel.
# Each network costs one compilation (~40 s), cached on disk like the generic kernel; a batch uses it when it is
# long enough to repay that (``SPECIALISE_MIN_RUN_STEPS``) or when this process has it already.
SPECIALISE_MIN_RUN_STEPS = 200_000_000  # ~40 s of the generic kernel's time at ~0.2 us per run-step
_specialised: dict[tuple[tuple[int, ...], tuple[int, ...]], Callable[..., None]] = {}
_specialised_lock = threading.Lock()


def segment_for(sim: "Simulation", layers: np.ndarray, acts: np.ndarray,
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
    network = njit(**dict(_JIT, cache=False), inline="always")(_renamed(_fixed_network, constants, "_network"))
    generic = advance_segment.py_func
    name = f"advance_segment_{'x'.join(map(str, layers))}_act{'_'.join(map(str, acts))}"
    return njit(**_KERNEL_OPTIONS)(_renamed(generic, dict(generic.__globals__, _network=network), name))


def _renamed(function: FunctionType, namespace: dict[str, object], name: str) -> FunctionType:
    """``function``'s code under another name, resolving its globals in ``namespace``."""
    names = {"co_name": name}
    if hasattr(function.__code__, "co_qualname"):  # code objects have one from Python 3.11 on
        names["co_qualname"] = name
    code = function.__code__.replace(**names)
    copy = FunctionType(code, namespace, name, function.__defaults__)
    copy.__qualname__, copy.__module__, copy.__doc__ = name, function.__module__, function.__doc__
    return copy


# the flags that choose the kernel's code paths: equal within a block of lanes. The model (BP, FA, PAL and what
# comes with it: the noise, dW^PP's low-pass, eta_PI = 0) may differ by lane, so the three models of a figure
# fill blocks together.
_PATH_FLAGS = (FL_USE_ACT, FL_HI_PASS, FL_R_LP, FL_POST_LP, FL_INTER_LP, FL_GATE, FL_VARPHI)


class Lanes:
    """Which run sits in which lane: runs that take the same code paths share blocks of ``LANES`` lanes.

    Runs keep their order within a group; a group's last block is filled with padding lanes that repeat its
    first run (finite values, no draws) and are never read back.
    """

    def __init__(self, fl: np.ndarray) -> None:
        groups: dict[tuple[int, ...], list[int]] = {}
        for r, key in enumerate(map(tuple, fl[:, _PATH_FLAGS].tolist())):
            groups.setdefault(key, []).append(r)
        run_of: list[int] = []
        real: list[int] = []
        for group in groups.values():
            padding = -len(group) % _LANES
            run_of += group + [group[0]] * padding
            real += [1] * len(group) + [0] * padding
        self.n_blocks = len(run_of) // _LANES
        self.run_of = np.array(run_of, dtype=np.int64).reshape(self.n_blocks, _LANES)
        self.real = np.array(real, dtype=np.int64).reshape(self.n_blocks, _LANES)
        self.lane_of_run = np.empty(len(fl), dtype=np.int64)  # flat lane index g * LANES + l of each run
        self.lane_of_run[self.run_of.ravel()[self.real.ravel() == 1]] = np.flatnonzero(self.real.ravel())
        self.block_of_run, self.lane_in_block = np.divmod(self.lane_of_run, _LANES)

    def pack(self, per_run: np.ndarray) -> np.ndarray:
        """(R, ...) -> (blocks, ..., LANES), C-contiguous."""
        lanes = per_run[self.run_of]  # (blocks, LANES, ...)
        return np.ascontiguousarray(np.moveaxis(lanes, 1, -1))

    def unpack(self, packed: np.ndarray) -> np.ndarray:
        """(blocks, ..., LANES) -> (R, ...): a fresh array of the real lanes, in run order (one gather: indices
        on the first and last axes, split by slices, put the run axis first)."""
        return packed[self.block_of_run, ..., self.lane_in_block]


class Packed(_Packed):
    """The state of ``sim`` in the kernel's lane layout (plus the generators' states, one per lane).

    Vectors are (blocks, n_entries, width, LANES), weights (blocks, n_entries, width, width, LANES) as
    W[post, pre], width = the widest layer, zero padding. Built once per ``advance`` call; the kernel updates
    these arrays in place across all its segments. Unlike kernel.py's layout this one has no views in the
    engine's layout: the recorder is shown copies.
    """

    def __init__(self, sim: "Simulation", lanes: Lanes) -> None:  # its own layout: no super().__init__
        s = sim.state
        self.lanes = lanes
        self.shapes = _shapes(sim.params.layers)
        self.width = max(sim.params.layers)
        vecs, mats = _per_run_fields(s, self.shapes, self.width, transposed=False)
        self.vecs, self.mats = [lanes.pack(v) for v in vecs], [lanes.pack(m) for m in mats]
        self.arrays = dict(zip(VEC_FIELDS + MAT_FIELDS, self.vecs + self.mats))
        self.r0 = lanes.pack(np.asarray(s.r0, dtype=np.float64))
        self.r0_LO = lanes.pack(np.asarray(s.r0_LO, dtype=np.float64))
        self.counter = lanes.pack(np.asarray(s.noise_counter, dtype=np.int64))
        self.hi_rec = np.zeros_like(self.arrays["rP_breve_HI"])
        self._generators(lanes.lane_of_run, lanes.n_blocks * _LANES)  # padding lanes' generators stay unused

    def field(self, name: str, as_recorded: bool = False) -> list[np.ndarray] | np.ndarray:
        """One state field in the engine's layout (fresh arrays); r^HI as the recorder saw it if ``as_recorded``."""
        plain = {"r0": self.r0, "r0_LO": self.r0_LO, "noise_counter": self.counter}
        if name in plain:
            return self.lanes.unpack(plain[name])
        recorded_hi = as_recorded and name == "rP_breve_HI"
        per_run = self.lanes.unpack(self.hi_rec if recorded_hi else self.arrays[name])
        if per_run.ndim == 3:
            return [per_run[:, i, :n].copy() for i, (n,) in enumerate(self.shapes[name])]
        return [per_run[:, i, :n_post, :n_pre].copy() for i, (n_post, n_pre) in enumerate(self.shapes[name])]

    def views(self, name: str) -> list[np.ndarray]:  # type: ignore[override]
        """Copies, not views (see the class): valid as long as the caller keeps them."""
        return self.field(name, as_recorded=True)  # type: ignore[return-value]

    def show(self, state: State, names: tuple[str, ...], step: int) -> None:
        """Let ``state`` show the fields ``names`` as the recorder sees them at ``step``.

        The other fields keep their values from before the ``advance`` call until ``unpack_into`` replaces them.
        """
        for name in names:
            setattr(state, name, self.field(name, as_recorded=True))
        state.step = step

    def unpack_into(self, state: State, step: int) -> None:
        """Write the packed state into ``state`` (fresh contiguous arrays)."""
        for name in VEC_FIELDS + MAT_FIELDS + PLAIN:
            setattr(state, name, self.field(name))
        state.step = step
