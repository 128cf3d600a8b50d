"""The neuron-layout kernel: one numba loop advances every run of a batch, layer by layer, over blocks of four
neurons (the layout of ``packing.NeuronPacked``).

Each block of the loop is labelled with the step of dynamics.py it implements and calls the same equations
(equations.py, inlined); what is written here is only iteration, memory layout and the random streams. The two
engines agree to the last bit apart from the summation order of the mat-vecs and the logistic's exp (libm_exp).
dynamics.py's step 4 is split around step 2 because it needs the previous step's dendritic potentials.

How the loops are written, and why (measured figures: docs/performance.md):
* indices are unsigned (np.uint64): numba checks signed indices for negative values at every access, which
  blocks vectorisation of these short loops; U1 etc. keep the arithmetic unsigned;
* per-neuron loops run over whole blocks of four, which LLVM's SLP vectoriser turns into AVX2 operations (see
  ``driver.compiling``); layers are padded to multiples of four with zeros, and padded lanes never feed a real
  value (every sum over presynaptic neurons runs over the real ones only);
* mat-vecs keep eight (then four) outputs in registers while summing over the presynaptic neurons; the arrays
  are declared non-aliasing (``jit.KERNEL_OPTIONS``);
* increments are applied in the same pass that computes them and stored only at a segment's last step
  (before that they are overwritten unseen), which halves the traffic through the weight matrices;
* no helper that takes arrays is called per step (each call costs reference counting), except rarely;
* flags accumulated over a loop live in locals, combined with ``&`` (an array element or ``and`` in the loop
  serialises it).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from palmc.engine import equations as eq
from palmc.engine.compiled.activations import HARD_SIGMOID, LOGISTIC, TANH, phi, phi4, phi_prime
from palmc.engine.compiled.feedback import VARPHI, WEIGHT_DECAY, pal_increment
from palmc.engine.compiled.jit import KERNEL_OPTIONS, U0, U1, U2, U3, U4, U5, U6, U7, U8
from palmc.engine.compiled.mt19937 import normals
from palmc.engine.compiled.packing import (
    FL_BP, FL_HI_PASS, FL_INTER_LP, FL_MODE, FL_OU, FL_PAL, FL_PERIOD_INT, FL_POST_LP, FL_R_LP, FL_REGULARIZER,
    FL_USE_ACT, FL_W_LO, LP_DT_ALPHA_ETA_BW, LP_DT_ETA_BW, LP_DT_ETA_FW, LP_DT_ETA_IP, LP_DT_ETA_PI, LP_ETA_PI_ON,
    LP_SCALE, LP_TAU_P, LP_TAUR_TAU_P, RP_C_DEN, RP_C_HID, RP_C_OUT, RP_DT_OVER_TAUHP, RP_DT_OVER_TAULO, RP_GAPI,
    RP_GBAS, RP_GDEN, RP_GNI, RP_GNTGT, RP_INV_TAUXI, RP_PERIOD, RP_SQRT_DT_TAUXI, RP_TAU_I, RP_TAU_OUT_NOTGT,
    RP_TAUR_TAU_I,
)
from palmc.engine.compiled.schedule import next_presentation, redraws


@njit(**KERNEL_OPTIONS)
def advance_segment(uP, uP_old, uP_breve, rP, rHI, vbas, noise, r_LO, post_LO,
                     uI, uI_old, uI_breve, rI, vden, vapi, vapi_noise,
                     WPP, dWPP, dWPP_LO, WIP, dWIP, BPP, dBPP, BPI, dBPI,
                     r0, r0_LO, hi_rec, counter, mt_key, mt_out, mt_pos, mt_has_gauss, mt_cached,
                     patterns, targets, order, first, n_steps, settling, per_pattern, layers, acts, dt, rp, lp, fl,
                     forward, lateral, feedback, has_target):  # pragma: no cover - compiled
    """Advance every run by ``n_steps`` steps (the first is step ``first``) of one phase (settling or one epoch).

    The pattern of a step is picked as ``Simulation.step_inputs`` does: the unshuffled sequence while settling
    (``first <= settling``), else ``order[r]``, each pattern for ``per_pattern`` steps. The learning flags and
    ``has_target`` are those of the phase. At the last step every increment is stored (earlier ones are not
    observable), and ``hi_rec`` receives r^HI as the recorder sees it (before that step's high-pass update).
    Indices: i = engine list entry, a = postsynaptic (or only) neuron, b = presynaptic neuron; weights are
    stored as W[r, i, b, a].
    """
    R, n_steps = np.uint64(order.shape[0]), np.uint64(n_steps)
    n_patterns, Tp, S, first = np.uint64(order.shape[1]), np.uint64(per_pattern), np.uint64(settling), np.uint64(first)
    settle = first <= S  # a segment never spans the end of settling
    within = (first - U1) % (n_patterns * Tp) if settle else (first - S - U1) % (n_patterns * Tp)
    nL, Wd = layers.shape[0] - 1, uP.shape[2]
    L = np.uint64(nL)
    H = L - U1
    n_in = layers[0]
    n4 = (layers + U3) // U4 * U4  # padded layer sizes
    nH = max(nL - 1, 1)
    rP_old, rI_old, r0_old = np.zeros((nL, Wd)), np.zeros((nH, Wd)), np.zeros(Wd)
    dUP, dUI = np.zeros((nL, Wd)), np.zeros((nH, Wd))
    postP, postI = np.zeros((nL, Wd)), np.zeros((nH, Wd))  # postsynaptic factors of dW^PP, dW^IP
    neg_vapi_old = np.zeros((nH, Wd))  # postsynaptic factor of dB^PI
    x, y, white = np.zeros(Wd), np.zeros(Wd), np.zeros(Wd)  # mat-vec input and output, noise draws
    slope = np.zeros((nL, Wd))  # phi' for the varphi regularizer; the output row stays 0 (feedback.py)
    redraw, skip_wip = np.zeros(nH, dtype=np.bool_), np.zeros(nH, dtype=np.bool_)
    gbuf = np.zeros(nL * Wd + 2)  # the normals of one step
    pairs = np.zeros((4, nL * Wd))  # scratch of _normals

    for r in range(R):
        taur_tau_I, tau_I, tau_out_notgt = rp[r, RP_TAUR_TAU_I], rp[r, RP_TAU_I], rp[r, RP_TAU_OUT_NOTGT]
        gbas, gapi, gden, gnI, gntgt = rp[r, RP_GBAS], rp[r, RP_GAPI], rp[r, RP_GDEN], rp[r, RP_GNI], rp[r, RP_GNTGT]
        dt_over_tauLO, dt_over_tauHP = rp[r, RP_DT_OVER_TAULO], rp[r, RP_DT_OVER_TAUHP]
        c_hid, c_out, c_den = rp[r, RP_C_HID], rp[r, RP_C_OUT], rp[r, RP_C_DEN]
        inv_tauxi, sqrt_dt_tauxi, period = rp[r, RP_INV_TAUXI], rp[r, RP_SQRT_DT_TAUXI], rp[r, RP_PERIOD]
        tau_out = lp[r, LP_TAU_P, L - U1]
        is_bp, is_pal, ou, mode = fl[r, FL_BP] != 0, fl[r, FL_PAL] != 0, fl[r, FL_OU] != 0, fl[r, FL_MODE]
        use_act, hi_pass, w_lo = fl[r, FL_USE_ACT] != 0, fl[r, FL_HI_PASS] != 0, fl[r, FL_W_LO] != 0
        r_lp, post_lp, inter_lp = fl[r, FL_R_LP] != 0, fl[r, FL_POST_LP] != 0, fl[r, FL_INTER_LP] != 0
        regularizer, period_int = fl[r, FL_REGULARIZER], fl[r, FL_PERIOD_INT]
        pos, has_gauss, cached = np.uint64(mt_pos[r]), mt_has_gauss[r], mt_cached[r]
        pattern, shown = within // Tp, within % Tp  # place in the sequence: pattern and steps it was shown

        for j in range(n_steps):
            last = j == n_steps - U1
            smp = pattern if settle else np.uint64(order[r, pattern])
            pattern, shown = next_presentation(pattern, shown, Tp, n_patterns)

            # ---- step 1: lookahead u-breve = u_old + taur tau (u - u_old) / dt and rates phi(u-breve),
            # keeping the old rates; then the new input
            for i in range(L):
                n, code = n4[i + U1], acts[i]
                taur_tau_P = lp[r, LP_TAUR_TAU_P, i]
                ok = True
                for a in range(U0, n, U4):
                    a1, a2, a3 = a + U1, a + U2, a + U3
                    o0, o1, o2, o3 = uP_old[r, i, a], uP_old[r, i, a1], uP_old[r, i, a2], uP_old[r, i, a3]
                    u0, u1, u2, u3 = uP[r, i, a], uP[r, i, a1], uP[r, i, a2], uP[r, i, a3]
                    q0, q1, q2, q3 = rP[r, i, a], rP[r, i, a1], rP[r, i, a2], rP[r, i, a3]
                    b0, b1 = eq.lookahead_voltage(o0, u0, taur_tau_P, dt), eq.lookahead_voltage(o1, u1, taur_tau_P, dt)
                    b2, b3 = eq.lookahead_voltage(o2, u2, taur_tau_P, dt), eq.lookahead_voltage(o3, u3, taur_tau_P, dt)
                    p0, p1, p2, p3, ok4 = phi4(code, b0, b1, b2, b3)
                    ok &= ok4
                    rP_old[i, a], rP_old[i, a1], rP_old[i, a2], rP_old[i, a3] = q0, q1, q2, q3
                    uP_breve[r, i, a], uP_breve[r, i, a1], uP_breve[r, i, a2], uP_breve[r, i, a3] = b0, b1, b2, b3
                    uP_old[r, i, a], uP_old[r, i, a1], uP_old[r, i, a2], uP_old[r, i, a3] = u0, u1, u2, u3
                    rP[r, i, a], rP[r, i, a1], rP[r, i, a2], rP[r, i, a3] = p0, p1, p2, p3
                if not ok:
                    for a in range(n):
                        rP[r, i, a] = phi(code, uP_breve[r, i, a])
            for i in range(H):
                n, code = n4[i + U2], acts[i + U1]
                ok = True
                for a in range(U0, n, U4):
                    a1, a2, a3 = a + U1, a + U2, a + U3
                    o0, o1, o2, o3 = uI_old[r, i, a], uI_old[r, i, a1], uI_old[r, i, a2], uI_old[r, i, a3]
                    u0, u1, u2, u3 = uI[r, i, a], uI[r, i, a1], uI[r, i, a2], uI[r, i, a3]
                    q0, q1, q2, q3 = rI[r, i, a], rI[r, i, a1], rI[r, i, a2], rI[r, i, a3]
                    b0, b1 = eq.lookahead_voltage(o0, u0, taur_tau_I, dt), eq.lookahead_voltage(o1, u1, taur_tau_I, dt)
                    b2, b3 = eq.lookahead_voltage(o2, u2, taur_tau_I, dt), eq.lookahead_voltage(o3, u3, taur_tau_I, dt)
                    p0, p1, p2, p3, ok4 = phi4(code, b0, b1, b2, b3)
                    ok &= ok4
                    rI_old[i, a], rI_old[i, a1], rI_old[i, a2], rI_old[i, a3] = q0, q1, q2, q3
                    uI_breve[r, i, a], uI_breve[r, i, a1], uI_breve[r, i, a2], uI_breve[r, i, a3] = b0, b1, b2, b3
                    uI_old[r, i, a], uI_old[r, i, a1], uI_old[r, i, a2], uI_old[r, i, a3] = u0, u1, u2, u3
                    rI[r, i, a], rI[r, i, a1], rI[r, i, a2], rI[r, i, a3] = p0, p1, p2, p3
                if not ok:
                    for a in range(n):
                        rI[r, i, a] = phi(code, uI_breve[r, i, a])
            for b in range(n_in):
                r0_old[b] = r0[r, b]
                r0[r, b] = patterns[r, smp, b]

            # ---- step 4, first part (it needs vbas, vden and vapi of the previous step, so it runs before
            # step 2): postsynaptic factors of the increments and the rate filters (dynamics._forward_increments)
            need_fw = forward or last
            for i in range(L):
                n, code = n4[i + U1], acts[i]
                c = c_out if i == L - U1 else c_hid
                if need_fw or post_lp:
                    if use_act:  # r-breve - phi(c v^bas_old)
                        ok = True
                        for a in range(U0, n, U4):
                            a1, a2, a3 = a + U1, a + U2, a + U3
                            p0, p1, p2, p3, ok4 = phi4(code, eq.dendritic_prediction(c, vbas[r, i, a]),
                                                       eq.dendritic_prediction(c, vbas[r, i, a1]),
                                                       eq.dendritic_prediction(c, vbas[r, i, a2]),
                                                       eq.dendritic_prediction(c, vbas[r, i, a3]))
                            ok &= ok4
                            postP[i, a], postP[i, a1] = eq.prediction_error(rP[r, i, a], p0), eq.prediction_error(rP[r, i, a1], p1)
                            postP[i, a2], postP[i, a3] = eq.prediction_error(rP[r, i, a2], p2), eq.prediction_error(rP[r, i, a3], p3)
                        if not ok:
                            for a in range(n):
                                postP[i, a] = eq.prediction_error(rP[r, i, a], phi(code, eq.dendritic_prediction(c, vbas[r, i, a])))
                    else:  # u-breve - c v^bas_old
                        for a in range(n):
                            postP[i, a] = eq.prediction_error(uP_breve[r, i, a], eq.dendritic_prediction(c, vbas[r, i, a]))
                if r_lp:  # low-passed presynaptic rates: input, then pyramidal layer i-1
                    if i == U0:
                        for b in range(n_in):
                            r0_LO[r, b] = eq.low_pass(r0_LO[r, b], r0_old[b], dt_over_tauLO)
                    else:
                        for b in range(layers[i]):
                            r_LO[r, i - U1, b] = eq.low_pass(r_LO[r, i - U1, b], rP_old[i - U1, b], dt_over_tauLO)
                if post_lp:
                    for a in range(n):
                        post_LO[r, i, a] = eq.low_pass(post_LO[r, i, a], postP[i, a], dt_over_tauLO)
                        postP[i, a] = post_LO[r, i, a]
            if lateral or last:
                for i in range(H):
                    n, code = n4[i + U2], acts[i + U1]
                    # With eta_IP = 0 the update adds 0 * (finite) = +-0, i.e. leaves W^IP as it is (up to the
                    # sign of a zero weight), unless a NaN or inf is about: then it is computed as usual. Only at
                    # the segment's last step is the (zero) increment itself observable.
                    skip = (not last and lp[r, LP_DT_ETA_IP, i] == 0.0
                            and (code == LOGISTIC or code == TANH or code == HARD_SIGMOID))
                    if skip:  # bounded activation: post is finite unless r^I or v^den_old is NaN
                        # (branch-free tests into a local: a reduction the compiler vectorises)
                        for a in range(layers[i + U2]):
                            skip &= (rI[r, i, a] == rI[r, i, a]) & (vden[r, i, a] == vden[r, i, a])
                        for b in range(layers[i + U1]):
                            skip &= abs(rP_old[i, b]) < 1e300  # so post * pre stays finite
                    skip_wip[i] = skip
                    if skip:
                        for a in range(n4[i + U1]):
                            neg_vapi_old[i, a] = -vapi[r, i, a]
                        continue
                    ok = True
                    for a in range(U0, n, U4):  # r^I - phi(g_den/(g_l+g_den) v^den_old)
                        a1, a2, a3 = a + U1, a + U2, a + U3
                        p0, p1, p2, p3, ok4 = phi4(code, eq.dendritic_prediction(c_den, vden[r, i, a]),
                                                   eq.dendritic_prediction(c_den, vden[r, i, a1]),
                                                   eq.dendritic_prediction(c_den, vden[r, i, a2]),
                                                   eq.dendritic_prediction(c_den, vden[r, i, a3]))
                        ok &= ok4
                        postI[i, a], postI[i, a1] = eq.prediction_error(rI[r, i, a], p0), eq.prediction_error(rI[r, i, a1], p1)
                        postI[i, a2], postI[i, a3] = eq.prediction_error(rI[r, i, a2], p2), eq.prediction_error(rI[r, i, a3], p3)
                    if not ok:
                        for a in range(n):
                            postI[i, a] = eq.prediction_error(rI[r, i, a], phi(code, eq.dendritic_prediction(c_den, vden[r, i, a])))
                    for a in range(n4[i + U1]):
                        neg_vapi_old[i, a] = -vapi[r, i, a]

            # ---- step 2: dendritic potentials. Each mat-vec y = W x sums over the real presynaptic b in order;
            # eight (then four) outputs at a time are held in registers.
            for i in range(L):  # v^bas_i = W^PP_i r_{i-1}
                n, n_pre = n4[i + U1], layers[i]
                if i == U0:
                    for b in range(n_pre):
                        x[b] = r0[r, b]
                else:
                    for b in range(n_pre):
                        x[b] = rP[r, i - U1, b]
                a = U0
                while a + U8 <= n:  # eight outputs at a time in registers, then four
                    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
                    for b in range(n_pre):
                        xb = x[b]
                        s0 += WPP[r, i, b, a] * xb
                        s1 += WPP[r, i, b, a + U1] * xb
                        s2 += WPP[r, i, b, a + U2] * xb
                        s3 += WPP[r, i, b, a + U3] * xb
                        s4 += WPP[r, i, b, a + U4] * xb
                        s5 += WPP[r, i, b, a + U5] * xb
                        s6 += WPP[r, i, b, a + U6] * xb
                        s7 += WPP[r, i, b, a + U7] * xb
                    vbas[r, i, a], vbas[r, i, a + U1], vbas[r, i, a + U2], vbas[r, i, a + U3] = s0, s1, s2, s3
                    vbas[r, i, a + U4], vbas[r, i, a + U5], vbas[r, i, a + U6], vbas[r, i, a + U7] = s4, s5, s6, s7
                    a += U8
                if a < n:
                    s0 = s1 = s2 = s3 = 0.0
                    for b in range(n_pre):
                        xb = x[b]
                        s0 += WPP[r, i, b, a] * xb
                        s1 += WPP[r, i, b, a + U1] * xb
                        s2 += WPP[r, i, b, a + U2] * xb
                        s3 += WPP[r, i, b, a + U3] * xb
                    vbas[r, i, a], vbas[r, i, a + U1], vbas[r, i, a + U2], vbas[r, i, a + U3] = s0, s1, s2, s3
            for i in range(H):  # v^den_i = W^IP_i r_i, low-passed with inter_low_pass
                n, n_pre = n4[i + U2], layers[i + U1]
                a = U0
                while a + U8 <= n:  # eight outputs at a time in registers, then four
                    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
                    for b in range(n_pre):
                        xb = rP[r, i, b]
                        s0 += WIP[r, i, b, a] * xb
                        s1 += WIP[r, i, b, a + U1] * xb
                        s2 += WIP[r, i, b, a + U2] * xb
                        s3 += WIP[r, i, b, a + U3] * xb
                        s4 += WIP[r, i, b, a + U4] * xb
                        s5 += WIP[r, i, b, a + U5] * xb
                        s6 += WIP[r, i, b, a + U6] * xb
                        s7 += WIP[r, i, b, a + U7] * xb
                    y[a], y[a + U1], y[a + U2], y[a + U3] = s0, s1, s2, s3
                    y[a + U4], y[a + U5], y[a + U6], y[a + U7] = s4, s5, s6, s7
                    a += U8
                if a < n:
                    s0 = s1 = s2 = s3 = 0.0
                    for b in range(n_pre):
                        xb = rP[r, i, b]
                        s0 += WIP[r, i, b, a] * xb
                        s1 += WIP[r, i, b, a + U1] * xb
                        s2 += WIP[r, i, b, a + U2] * xb
                        s3 += WIP[r, i, b, a + U3] * xb
                    y[a], y[a + U1], y[a + U2], y[a + U3] = s0, s1, s2, s3
                if inter_lp:
                    for a in range(n):
                        vden[r, i, a] = eq.low_pass(vden[r, i, a], y[a], dt_over_tauLO)
                else:
                    for a in range(n):
                        vden[r, i, a] = y[a]
            for i in range(H):  # v^api_i = B^PP_i r_{i+1} + B^PI_i r^I_i; the soma gets + xi (the old noise)
                n, n_pre = n4[i + U1], layers[i + U2]
                a = U0
                while a + U8 <= n:  # eight outputs at a time in registers, then four
                    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
                    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
                    for b in range(n_pre):
                        xb, xc = rP[r, i + U1, b], rI[r, i, b]
                        s0 += BPP[r, i, b, a] * xb
                        s1 += BPP[r, i, b, a + U1] * xb
                        s2 += BPP[r, i, b, a + U2] * xb
                        s3 += BPP[r, i, b, a + U3] * xb
                        s4 += BPP[r, i, b, a + U4] * xb
                        s5 += BPP[r, i, b, a + U5] * xb
                        s6 += BPP[r, i, b, a + U6] * xb
                        s7 += BPP[r, i, b, a + U7] * xb
                        t0 += BPI[r, i, b, a] * xc
                        t1 += BPI[r, i, b, a + U1] * xc
                        t2 += BPI[r, i, b, a + U2] * xc
                        t3 += BPI[r, i, b, a + U3] * xc
                        t4 += BPI[r, i, b, a + U4] * xc
                        t5 += BPI[r, i, b, a + U5] * xc
                        t6 += BPI[r, i, b, a + U6] * xc
                        t7 += BPI[r, i, b, a + U7] * xc
                    v0, v1 = eq.apical_potential(s0, t0), eq.apical_potential(s1, t1)
                    v2, v3 = eq.apical_potential(s2, t2), eq.apical_potential(s3, t3)
                    v4, v5 = eq.apical_potential(s4, t4), eq.apical_potential(s5, t5)
                    v6, v7 = eq.apical_potential(s6, t6), eq.apical_potential(s7, t7)
                    vapi[r, i, a], vapi[r, i, a + U1], vapi[r, i, a + U2], vapi[r, i, a + U3] = v0, v1, v2, v3
                    vapi[r, i, a + U4], vapi[r, i, a + U5], vapi[r, i, a + U6], vapi[r, i, a + U7] = v4, v5, v6, v7
                    a += U8
                if a < n:
                    s0 = s1 = s2 = s3 = 0.0
                    t0 = t1 = t2 = t3 = 0.0
                    for b in range(n_pre):
                        xb, xc = rP[r, i + U1, b], rI[r, i, b]
                        s0 += BPP[r, i, b, a] * xb
                        s1 += BPP[r, i, b, a + U1] * xb
                        s2 += BPP[r, i, b, a + U2] * xb
                        s3 += BPP[r, i, b, a + U3] * xb
                        t0 += BPI[r, i, b, a] * xc
                        t1 += BPI[r, i, b, a + U1] * xc
                        t2 += BPI[r, i, b, a + U2] * xc
                        t3 += BPI[r, i, b, a + U3] * xc
                    v0, v1 = eq.apical_potential(s0, t0), eq.apical_potential(s1, t1)
                    v2, v3 = eq.apical_potential(s2, t2), eq.apical_potential(s3, t3)
                    vapi[r, i, a], vapi[r, i, a + U1], vapi[r, i, a + U2], vapi[r, i, a + U3] = v0, v1, v2, v3
                for a in range(n):  # the noise the soma sees
                    vapi_noise[r, i, a] = eq.with_apical_noise(vapi[r, i, a], noise[r, i, a])

            # ---- step 3a: PAL noise (noise.draw_noise). Which layers redraw (xi all zero, or the counter
            # shared by all layers hits the period) does not depend on the draws, so it is settled first and
            # the step's normals are drawn in one batch, in the order draw_noise consumes them.
            if feedback and is_pal:
                m = U0
                for i in range(H):
                    zero = True
                    for a in range(layers[i + U1]):
                        if noise[r, i, a] != 0.0:
                            zero = False
                            break
                    redraw[i] = redraws(zero, counter[r], period, period_int)
                    if redraw[i]:
                        counter[r] = 0
                        m += layers[i + U1]
                    counter[r] += 1
                pos, has_gauss, cached = normals(mt_key, mt_out, r, pos, has_gauss, cached, m, gbuf, pairs)
                k = U0
                for i in range(H):
                    if not redraw[i]:
                        continue
                    n, scale = layers[i + U1], lp[r, LP_SCALE, i]
                    # white = scale * normal(0, sigma) = scale * (0 + sigma * g): sigma is 1, |u^P| (before this
                    # step's update), |u-breve^P| or |v^api| by the noise mode
                    for a in range(n):
                        if mode == 0:
                            sigma = 1.0
                        elif mode == 1:
                            sigma = abs(uP[r, i, a])
                        elif mode == 2:
                            sigma = abs(uP_breve[r, i, a])
                        else:
                            sigma = abs(vapi[r, i, a])
                        white[a] = eq.white_noise(scale, sigma, gbuf[k + a])
                    k += n
                    if ou:
                        for a in range(n):
                            noise[r, i, a] = eq.ou_noise_step(noise[r, i, a], white[a], dt, inv_tauxi, sqrt_dt_tauxi)
                    else:
                        for a in range(n):
                            noise[r, i, a] = white[a]

            # ---- step 3b: somatic increments (the soma sees the previous step's noise via vapi_noise)
            for i in range(H):
                for a in range(n4[i + U2]):
                    drive = eq.two_compartment_drive(tau_I, gden, vden[r, i, a], gnI, uP_breve[r, i + U1, a])
                    dUI[i, a] = eq.somatic_increment(drive, uI[r, i, a], tau_I, dt)
            noisy = is_pal and feedback
            for i in range(H):
                tau = lp[r, LP_TAU_P, i]
                if noisy:
                    for a in range(n4[i + U1]):
                        drive = eq.two_compartment_drive(tau, gbas, vbas[r, i, a], gapi, vapi_noise[r, i, a])
                        dUP[i, a] = eq.somatic_increment(drive, uP[r, i, a], tau, dt)
                else:
                    for a in range(n4[i + U1]):
                        drive = eq.two_compartment_drive(tau, gbas, vbas[r, i, a], gapi, vapi[r, i, a])
                        dUP[i, a] = eq.somatic_increment(drive, uP[r, i, a], tau, dt)
            if has_target:
                for a in range(n4[L]):
                    drive = eq.two_compartment_drive(tau_out, gbas, vbas[r, H, a], gntgt, targets[r, smp, a])
                    dUP[H, a] = eq.somatic_increment(drive, uP[r, H, a], tau_out, dt)
            else:  # target-free drive, nudged time constant in the division (dynamics.py)
                for a in range(n4[L]):
                    drive = eq.basal_drive(tau_out_notgt, gbas, vbas[r, H, a])
                    dUP[H, a] = eq.somatic_increment(drive, uP[r, H, a], tau_out, dt)

            # ---- step 4, rest, and step 5 (apply). BP's reset reads W^PP before this step's update
            # (dynamics.py order), so it comes first.
            if is_bp:  # feedback.reset_bp_feedback: B^PP = (W^PP_{i+1})^T, B^PI = -B^PP
                for i in range(H):
                    for b in range(layers[i + U2]):
                        for a in range(n4[i + U1]):
                            w = WPP[r, i + U1, a, b]
                            BPP[r, i, b, a] = w
                            BPI[r, i, b, a] = -w
            if is_pal and regularizer == VARPHI and (feedback or last):
                for i in range(H):
                    code = acts[i]
                    for a in range(layers[i + U1]):
                        slope[i, a] = phi_prime(code, uP_breve[r, i, a])
            if last:
                # The segment's last step: store every increment (the recorder may read them), then apply
                # those the phase allows. Same equations as the fused passes below, so the same bits.
                for i in range(H):
                    n, n_int = n4[i + U1], n4[i + U2]
                    dt_eta_PI, eta_PI_on = lp[r, LP_DT_ETA_PI, i], lp[r, LP_ETA_PI_ON, i] != 0.0
                    dt_eta_bw, dt_alpha_eta_bw = lp[r, LP_DT_ETA_BW, i], lp[r, LP_DT_ALPHA_ETA_BW, i]
                    dt_eta_IP = lp[r, LP_DT_ETA_IP, i]
                    for b in range(layers[i + U2]):
                        rI_pre = rI_old[i, b]  # dB^PI = dt eta_PI (-v^api_old) (x) r^I_old, zero when eta_PI = 0
                        r_pre = rHI[r, i + U1, b] if hi_pass else rP[r, i + U1, b]  # dB^PP: zero for BP and FA
                        for a in range(n):
                            dBPI[r, i, b, a] = (eq.plasticity_increment(dt_eta_PI, neg_vapi_old[i, a], rI_pre)
                                                if eta_PI_on else 0.0)
                            dBPP[r, i, b, a] = (pal_increment(regularizer, dt_eta_bw, dt_alpha_eta_bw, noise[r, i, a],
                                                              r_pre, BPP[r, i, b, a], slope[i, a], slope[i + U1, b])
                                                if is_pal else 0.0)
                    for b in range(layers[i + U1]):  # dW^IP = dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
                        pre = rP_old[i, b]
                        for a in range(n_int):
                            dWIP[r, i, b, a] = eq.plasticity_increment(dt_eta_IP, postI[i, a], pre)
                for i in range(L):  # dW^PP = dt eta_fw post (x) pre
                    n, dt_eta_fw = n4[i + U1], lp[r, LP_DT_ETA_FW, i]
                    for b in range(layers[i]):
                        if r_lp:
                            pre = r0_LO[r, b] if i == U0 else r_LO[r, i - U1, b]
                        else:
                            pre = r0_old[b] if i == U0 else rP_old[i - U1, b]
                        for a in range(n):
                            dWPP[r, i, b, a] = eq.plasticity_increment(dt_eta_fw, postP[i, a], pre)
                for i in range(H):
                    for b in range(layers[i + U2]):
                        for a in range(n4[i + U1]):
                            if lateral:
                                BPI[r, i, b, a] = BPI[r, i, b, a] + dBPI[r, i, b, a]
                            if feedback:
                                BPP[r, i, b, a] = BPP[r, i, b, a] + dBPP[r, i, b, a]
                    if lateral:
                        for b in range(layers[i + U1]):
                            for a in range(n4[i + U2]):
                                WIP[r, i, b, a] = WIP[r, i, b, a] + dWIP[r, i, b, a]
                if forward:
                    for i in range(L):
                        for b in range(layers[i]):
                            for a in range(n4[i + U1]):
                                if w_lo:  # PAL moves W^PP by the low-pass of its increments
                                    lo_d = eq.low_pass(dWPP_LO[r, i, b, a], dWPP[r, i, b, a], dt_over_tauLO)
                                    dWPP_LO[r, i, b, a] = lo_d
                                    WPP[r, i, b, a] = WPP[r, i, b, a] + lo_d
                                else:
                                    WPP[r, i, b, a] = WPP[r, i, b, a] + dWPP[r, i, b, a]
            else:
                # Any other step: increments are only applied (they are overwritten unseen), each fused with
                # its update in one pass over blocks of four neighbours, all loads before the stores (the strides
                # are run-time values: the compiler cannot tell that a store leaves a neighbour's load alone).
                if lateral:
                    for i in range(H):
                        n, dt_eta_PI, dt_eta_IP = n4[i + U1], lp[r, LP_DT_ETA_PI, i], lp[r, LP_DT_ETA_IP, i]
                        if lp[r, LP_ETA_PI_ON, i] != 0.0:  # B^PI += dt eta_PI (-v^api_old) (x) r^I_old
                            for b in range(layers[i + U2]):
                                rI_pre = rI_old[i, b]
                                for a in range(U0, n, U4):
                                    a1, a2, a3 = a + U1, a + U2, a + U3
                                    m0, m1 = neg_vapi_old[i, a], neg_vapi_old[i, a1]
                                    m2, m3 = neg_vapi_old[i, a2], neg_vapi_old[i, a3]
                                    w0, w1, w2, w3 = BPI[r, i, b, a], BPI[r, i, b, a1], BPI[r, i, b, a2], BPI[r, i, b, a3]
                                    BPI[r, i, b, a] = w0 + eq.plasticity_increment(dt_eta_PI, m0, rI_pre)
                                    BPI[r, i, b, a1] = w1 + eq.plasticity_increment(dt_eta_PI, m1, rI_pre)
                                    BPI[r, i, b, a2] = w2 + eq.plasticity_increment(dt_eta_PI, m2, rI_pre)
                                    BPI[r, i, b, a3] = w3 + eq.plasticity_increment(dt_eta_PI, m3, rI_pre)
                        else:  # B^PI += 0
                            for b in range(layers[i + U2]):
                                for a in range(n):
                                    BPI[r, i, b, a] = BPI[r, i, b, a] + 0.0
                        n = n4[i + U2]
                        if skip_wip[i]:
                            continue
                        for b in range(layers[i + U1]):  # W^IP += dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
                            pre = rP_old[i, b]
                            for a in range(U0, n, U4):
                                a1, a2, a3 = a + U1, a + U2, a + U3
                                m0, m1, m2, m3 = postI[i, a], postI[i, a1], postI[i, a2], postI[i, a3]
                                w0, w1, w2, w3 = WIP[r, i, b, a], WIP[r, i, b, a1], WIP[r, i, b, a2], WIP[r, i, b, a3]
                                WIP[r, i, b, a] = w0 + eq.plasticity_increment(dt_eta_IP, m0, pre)
                                WIP[r, i, b, a1] = w1 + eq.plasticity_increment(dt_eta_IP, m1, pre)
                                WIP[r, i, b, a2] = w2 + eq.plasticity_increment(dt_eta_IP, m2, pre)
                                WIP[r, i, b, a3] = w3 + eq.plasticity_increment(dt_eta_IP, m3, pre)
                if feedback:
                    for i in range(H):
                        n, dt_eta_bw, dt_alpha_eta_bw = n4[i + U1], lp[r, LP_DT_ETA_BW, i], lp[r, LP_DT_ALPHA_ETA_BW, i]
                        if not is_pal:  # BP, FA: B^PP += 0
                            for b in range(layers[i + U2]):
                                for a in range(n):
                                    BPP[r, i, b, a] = BPP[r, i, b, a] + 0.0
                            continue
                        for b in range(layers[i + U2]):
                            r_pre = rHI[r, i + U1, b] if hi_pass else rP[r, i + U1, b]
                            if regularizer == WEIGHT_DECAY:  # the usual case, branch-free: blocks of four
                                for a in range(U0, n, U4):
                                    a1, a2, a3 = a + U1, a + U2, a + U3
                                    z0, z1, z2, z3 = noise[r, i, a], noise[r, i, a1], noise[r, i, a2], noise[r, i, a3]
                                    w0, w1, w2, w3 = BPP[r, i, b, a], BPP[r, i, b, a1], BPP[r, i, b, a2], BPP[r, i, b, a3]
                                    d0 = pal_increment(WEIGHT_DECAY, dt_eta_bw, dt_alpha_eta_bw, z0, r_pre, w0, 0.0, 0.0)
                                    d1 = pal_increment(WEIGHT_DECAY, dt_eta_bw, dt_alpha_eta_bw, z1, r_pre, w1, 0.0, 0.0)
                                    d2 = pal_increment(WEIGHT_DECAY, dt_eta_bw, dt_alpha_eta_bw, z2, r_pre, w2, 0.0, 0.0)
                                    d3 = pal_increment(WEIGHT_DECAY, dt_eta_bw, dt_alpha_eta_bw, z3, r_pre, w3, 0.0, 0.0)
                                    BPP[r, i, b, a], BPP[r, i, b, a1], BPP[r, i, b, a2], BPP[r, i, b, a3] = w0 + d0, w1 + d1, w2 + d2, w3 + d3
                            else:
                                for a in range(n):
                                    w = BPP[r, i, b, a]
                                    BPP[r, i, b, a] = w + pal_increment(regularizer, dt_eta_bw, dt_alpha_eta_bw,
                                                                        noise[r, i, a], r_pre, w, slope[i, a],
                                                                        slope[i + U1, b])
                if forward:
                    for i in range(L):
                        n, dt_eta_fw = n4[i + U1], lp[r, LP_DT_ETA_FW, i]
                        for b in range(layers[i]):
                            if r_lp:
                                pre = r0_LO[r, b] if i == U0 else r_LO[r, i - U1, b]
                            else:
                                pre = r0_old[b] if i == U0 else rP_old[i - U1, b]
                            if w_lo:  # PAL moves W^PP by the low-pass of its increments
                                for a in range(U0, n, U4):
                                    a1, a2, a3 = a + U1, a + U2, a + U3
                                    m0, m1, m2, m3 = postP[i, a], postP[i, a1], postP[i, a2], postP[i, a3]
                                    l0, l1 = dWPP_LO[r, i, b, a], dWPP_LO[r, i, b, a1]
                                    l2, l3 = dWPP_LO[r, i, b, a2], dWPP_LO[r, i, b, a3]
                                    w0, w1, w2, w3 = WPP[r, i, b, a], WPP[r, i, b, a1], WPP[r, i, b, a2], WPP[r, i, b, a3]
                                    l0 = eq.low_pass(l0, eq.plasticity_increment(dt_eta_fw, m0, pre), dt_over_tauLO)
                                    l1 = eq.low_pass(l1, eq.plasticity_increment(dt_eta_fw, m1, pre), dt_over_tauLO)
                                    l2 = eq.low_pass(l2, eq.plasticity_increment(dt_eta_fw, m2, pre), dt_over_tauLO)
                                    l3 = eq.low_pass(l3, eq.plasticity_increment(dt_eta_fw, m3, pre), dt_over_tauLO)
                                    dWPP_LO[r, i, b, a], dWPP_LO[r, i, b, a1] = l0, l1
                                    dWPP_LO[r, i, b, a2], dWPP_LO[r, i, b, a3] = l2, l3
                                    WPP[r, i, b, a], WPP[r, i, b, a1] = w0 + l0, w1 + l1
                                    WPP[r, i, b, a2], WPP[r, i, b, a3] = w2 + l2, w3 + l3
                            else:
                                for a in range(U0, n, U4):
                                    a1, a2, a3 = a + U1, a + U2, a + U3
                                    m0, m1, m2, m3 = postP[i, a], postP[i, a1], postP[i, a2], postP[i, a3]
                                    w0, w1, w2, w3 = WPP[r, i, b, a], WPP[r, i, b, a1], WPP[r, i, b, a2], WPP[r, i, b, a3]
                                    WPP[r, i, b, a] = w0 + eq.plasticity_increment(dt_eta_fw, m0, pre)
                                    WPP[r, i, b, a1] = w1 + eq.plasticity_increment(dt_eta_fw, m1, pre)
                                    WPP[r, i, b, a2] = w2 + eq.plasticity_increment(dt_eta_fw, m2, pre)
                                    WPP[r, i, b, a3] = w3 + eq.plasticity_increment(dt_eta_fw, m3, pre)
            for i in range(L):  # somata
                for a in range(n4[i + U1]):
                    uP[r, i, a] = uP[r, i, a] + dUP[i, a]
            for i in range(H):
                for a in range(n4[i + U2]):
                    uI[r, i, a] = uI[r, i, a] + dUI[i, a]
            # (the recorder runs here: it sees r^HI before the update below)
            if last:
                for i in range(L):
                    for a in range(n4[i + U1]):
                        hi_rec[r, i, a] = rHI[r, i, a]
            # high-pass filter of the rates, every step
            for i in range(L):
                for a in range(n4[i + U1]):
                    rHI[r, i, a] = eq.high_pass(rHI[r, i, a], rP[r, i, a], rP_old[i, a], dt_over_tauHP)

        mt_pos[r], mt_has_gauss[r], mt_cached[r] = np.int64(pos), has_gauss, cached
