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

from palmc.engine import equations as eq
from palmc.engine.compiled.activations import HARD_SIGMOID, LOGISTIC, TANH, phi, phi4, phi_prime
from palmc.engine.compiled.codegen import (
    SEGMENT_ARGUMENTS, SEGMENT_DOC, SEGMENT_START, compile_kernel, fill, network, unroll,
)
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

# -- templates (codegen.py: $name is filled in, a statement with @ stands for the four neurons of a block) ------
# the two populations of step 1's template
PYRAMIDAL = dict(layers="L", size="n4[i + U1]", act="acts[i]", taur_tau="lp[r, LP_TAUR_TAU_P, i]",
                 u="uP", u_old="uP_old", u_breve="uP_breve", rate="rP", rate_old="rP_old")
INTERNEURONS = dict(layers="H", size="n4[i + U2]", act="acts[i + U1]", taur_tau="taur_tau_I",
                    u="uI", u_old="uI_old", u_breve="uI_breve", rate="rI", rate_old="rI_old")

# step 1 of one population: lookahead u-breve and rates phi(u-breve), keeping the old rates
LOOKAHEAD = """
for i in range($layers):
    n, code, taur_tau = $size, $act, $taur_tau
    ok = True
    for a in range(U0, n, U4):
        o@ = $u_old[r, i, a + U@]
        u@ = $u[r, i, a + U@]
        q@ = $rate[r, i, a + U@]
        b@ = eq.lookahead_voltage(o@, u@, taur_tau, dt)
        p0, p1, p2, p3, ok4 = phi4(code, b0, b1, b2, b3)
        ok &= ok4
        $rate_old[i, a + U@] = q@
        $u_breve[r, i, a + U@] = b@
        $u_old[r, i, a + U@] = u@
        $rate[r, i, a + U@] = p@
    if not ok:
        for a in range(n):
            $rate[r, i, a] = phi(code, $u_breve[r, i, a])
"""

# a postsynaptic factor of step 4: rate - phi(c v_old) (v^bas for W^PP, v^den for W^IP)
PREDICTION_ERROR = """
ok = True
for a in range(U0, n, U4):
    d@ = eq.dendritic_prediction($c, $v[r, i, a + U@])
    p0, p1, p2, p3, ok4 = phi4(code, d0, d1, d2, d3)
    ok &= ok4
    $post[i, a + U@] = eq.prediction_error($rate[r, i, a + U@], p@)
if not ok:
    for a in range(n):
        $post[i, a] = eq.prediction_error($rate[r, i, a], phi(code, eq.dendritic_prediction($c, $v[r, i, a])))
"""

# step 2's mat-vecs: outputs a, a+1, ... held in registers while summing over the real presynaptic b in order
MATVEC = """
a = U0
while a + U8 <= n:  # eight outputs at a time, then four
    $sums8
    a += U8
if a < n:
    $sums4
"""
SUMS = """
s@ = 0.0
for b in range(n_pre):
    xb = $x
    s@ += $W[r, i, b, a + U@] * xb
$out = s@
"""
APICAL_SUMS = """
s@ = 0.0
t@ = 0.0
for b in range(n_pre):
    xb, xc = rP[r, i + U1, b], rI[r, i, b]
    s@ += BPP[r, i, b, a + U@] * xb
    t@ += BPI[r, i, b, a + U@] * xc
v@ = eq.apical_potential(s@, t@)
vapi[r, i, a + U@] = v@
"""

# step 5 for the weights W[r, i, b, :] of one presynaptic neuron b: W += dW, with the increment dW computed in
# the same pass (blocks of four, all loads before the stores: the strides are run-time values, so the compiler
# cannot tell that a store leaves a neighbour's load alone); $low_pass: PAL moves W^PP by the low-pass of dW
ADD_INCREMENT = """
for a in range(U0, n, U4):
    m@ = $post
    w@ = $W[r, i, b, a + U@]
    d@ = $increment
    $low_pass
    $W[r, i, b, a + U@] = w@ + d@
"""
LOW_PASS = """
d@ = eq.low_pass(dWPP_LO[r, i, b, a + U@], d@, dt_over_tauLO)
dWPP_LO[r, i, b, a + U@] = d@
"""
# the presynaptic factor of dW^PP: the rate of layer i-1 (the input for i = 0), low-passed with r_lp
FORWARD_PRE = """
if r_lp:
    pre = r0_LO[r, b] if i == U0 else r_LO[r, i - U1, b]
else:
    pre = r0_old[b] if i == U0 else rP_old[i - U1, b]
"""

KERNEL = """
def advance_segment($arguments):  # pragma: no cover - compiled
    \"""Advance every run by ``n_steps`` steps (the first is step ``first``) of one phase (settling or one epoch).

    $doc
    Indices: i = engine list entry, a = postsynaptic (or only) neuron, b = presynaptic neuron; weights are
    stored as W[r, i, b, a].
    \"""
    $segment_start
    R, Wd = np.uint64(order.shape[0]), uP.shape[2]
    n4 = (layers + U3) // U4 * U4  # padded layer sizes
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
            $lookahead_P
            $lookahead_I
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
                        $post_P
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
                    # r^I - phi(g_den/(g_l+g_den) v^den_old)
                    $post_I
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
                $matvec_bas
            for i in range(H):  # v^den_i = W^IP_i r_i, low-passed with inter_low_pass
                n, n_pre = n4[i + U2], layers[i + U1]
                $matvec_den
                if inter_lp:
                    for a in range(n):
                        vden[r, i, a] = eq.low_pass(vden[r, i, a], y[a], dt_over_tauLO)
                else:
                    for a in range(n):
                        vden[r, i, a] = y[a]
            for i in range(H):  # v^api_i = B^PP_i r_{i+1} + B^PI_i r^I_i; the soma gets + xi (the old noise)
                n, n_pre = n4[i + U1], layers[i + U2]
                $matvec_api
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
            if last:  # the segment's last step: store every increment (the recorder may read them)
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
                        $forward_pre
                        for a in range(n):
                            dWPP[r, i, b, a] = eq.plasticity_increment(dt_eta_fw, postP[i, a], pre)
            # Then apply the increments the phase allows, each fused with its computation in one pass (at the
            # last step the same numbers again: increments are pure functions of the state before the updates).
            if lateral:
                for i in range(H):
                    n, dt_eta_PI, dt_eta_IP = n4[i + U1], lp[r, LP_DT_ETA_PI, i], lp[r, LP_DT_ETA_IP, i]
                    if lp[r, LP_ETA_PI_ON, i] != 0.0:  # B^PI += dt eta_PI (-v^api_old) (x) r^I_old
                        for b in range(layers[i + U2]):
                            rI_pre = rI_old[i, b]
                            $add_BPI
                    else:  # B^PI += 0
                        for b in range(layers[i + U2]):
                            for a in range(n):
                                BPI[r, i, b, a] = BPI[r, i, b, a] + 0.0
                    n = n4[i + U2]
                    if skip_wip[i]:
                        continue
                    for b in range(layers[i + U1]):  # W^IP += dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
                        pre = rP_old[i, b]
                        $add_WIP
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
                            $add_BPP
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
                        $forward_pre
                        if w_lo:  # PAL moves W^PP by the low-pass of its increments
                            $add_WPP_low_pass
                        else:
                            $add_WPP
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
"""


def _source() -> str:
    """The kernel's text: KERNEL with its blocks filled in and written out for four neurons at a time."""
    fw = dict(post="postP[i, a + U@]", W="WPP", increment="eq.plasticity_increment(dt_eta_fw, m@, pre)")
    parts = dict(
        arguments=fill(SEGMENT_ARGUMENTS, lane_args=""), doc=SEGMENT_DOC, segment_start=SEGMENT_START,
        lookahead_P=fill(LOOKAHEAD, **PYRAMIDAL), lookahead_I=fill(LOOKAHEAD, **INTERNEURONS),
        post_P=fill(PREDICTION_ERROR, c="c", v="vbas", post="postP", rate="rP"),
        post_I=fill(PREDICTION_ERROR, c="c_den", v="vden", post="postI", rate="rI"),
        matvec_bas=_matvec(SUMS, x="x[b]", W="WPP", out="vbas[r, i, a + U@]"),
        matvec_den=_matvec(SUMS, x="rP[r, i, b]", W="WIP", out="y[a + U@]"),
        matvec_api=_matvec(APICAL_SUMS),
        forward_pre=FORWARD_PRE,
        add_BPI=fill(ADD_INCREMENT, post="neg_vapi_old[i, a + U@]", W="BPI", low_pass="",
                     increment="eq.plasticity_increment(dt_eta_PI, m@, rI_pre)"),
        add_WIP=fill(ADD_INCREMENT, post="postI[i, a + U@]", W="WIP", low_pass="",
                     increment="eq.plasticity_increment(dt_eta_IP, m@, pre)"),
        add_BPP=fill(ADD_INCREMENT, post="noise[r, i, a + U@]", W="BPP", low_pass="",
                     increment="pal_increment(WEIGHT_DECAY, dt_eta_bw, dt_alpha_eta_bw, m@, r_pre, w@, 0.0, 0.0)"),
        add_WPP=fill(ADD_INCREMENT, **fw, low_pass=""),
        add_WPP_low_pass=fill(ADD_INCREMENT, **fw, low_pass=LOW_PASS),
    )
    return unroll(fill(KERNEL, **parts)) + "\n"


def _matvec(sums: str, **names: str) -> str:
    return fill(MATVEC, sums8=unroll(fill(sums, **names), 8), sums4=unroll(fill(sums, **names), 4))


advance_segment = compile_kernel(_source(), "advance_segment", globals(), KERNEL_OPTIONS)
