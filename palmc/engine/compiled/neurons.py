"""The neuron-layout kernel: one numba loop advances every run of a batch, layer by layer, over blocks of four
neurons (the layout of ``packing.NeuronPacked``).

The kernel is generated (codegen.py; ``python -m palmc.engine.compiled.codegen neurons`` prints it): the order
of a step, its labels pointing at dynamics.py and the blocks both layouts share are steps.STEP; this module holds
the blocks of this layout, each written once for one neuron and unrolled into blocks of four, the pyramidal and
interneuron populations filled into one template. The blocks call the equations of equations.py (inlined); what
is written here is only iteration, memory layout and the random streams. The two engines agree to the last bit
apart from the summation order of the mat-vecs and the logistic's exp (libm_exp).

How the loops are written, and why (measured figures: docs/performance.md):
* indices are unsigned (np.uint64): numba checks signed indices for negative values at every access, which
  blocks vectorisation of these short loops; U1 etc. keep the arithmetic unsigned;
* per-neuron loops run over whole blocks of four, which LLVM's SLP vectoriser turns into AVX2 operations (see
  ``driver.compiling``); layers are padded to multiples of four with zeros, and padded lanes never feed a real
  value (every sum over presynaptic neurons runs over the real ones only);
* mat-vecs keep eight (then four) outputs in registers while summing over the presynaptic neurons; the arrays
  are declared non-aliasing (``jit.KERNEL_OPTIONS``);
* increments are applied in the same pass that computes them and stored only at a segment's last step
  (before that they are overwritten unseen), which halves the traffic through the weight matrices; the last
  step stores them in a pass of its own, then applies them like any other step;
* no helper that takes arrays is called per step (each call costs reference counting), except rarely;
* flags accumulated over a loop live in locals, combined with ``&`` (an array element or ``and`` in the loop
  serialises it).
"""

from __future__ import annotations

from palmc.engine.compiled.codegen import compile_kernel, fill, unroll
from palmc.engine.compiled.jit import KERNEL_OPTIONS
from palmc.engine.compiled.steps import (
    FORWARD_PRE, INTERNEURONS, NEURON_LAYOUT, NOISE, PYRAMIDAL, kernel_names, kernel_source, population,
)

# -- templates (codegen.py: $name is filled in, a statement with @ stands for the four neurons of a block) ------
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
# the passes over W^PP_i, one presynaptic neuron b at a time (the increments are stored, or applied, in $...)
FORWARD_PASS = """
n, dt_eta_fw = n4[i + U1], lp[r, LP_DT_ETA_FW, i]
for b in range(layers[i]):
    $forward_pre
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
        tau_I, tau_out_notgt = rp[r, RP_TAU_I], rp[r, RP_TAU_OUT_NOTGT]
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
            $step

        mt_pos[r], mt_has_gauss[r], mt_cached[r] = np.int64(pos), has_gauss, cached
"""

# the blocks of steps.STEP in this layout: one run r at a time, blocks of four neurons
STEPS = dict(
    skip_lateral="""
        skip = (not last and lp[r, LP_DT_ETA_IP, i] == 0.0
                and (code == LOGISTIC or code == TANH or code == HARD_SIGMOID))
        if skip:  # bounded activation: post is finite unless r^I or v^den_old is NaN
            # (branch-free tests into a local: a reduction the compiler vectorises)
            for a in range(layers[i + U2]):
                skip &= (rI[r, i, a] == rI[r, i, a]) & (vden[r, i, a] == vden[r, i, a])
            for b in range(layers[i + U1]):
                skip &= abs(rP_old[i, b]) < 1e300  # so post * pre stays finite
    """,
    somatic_increments="""
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
    """,
    reset_bp="""
        for b in range(layers[i + U2]):
            for a in range(n4[i + U1]):
                w = WPP[r, i + U1, a, b]
                BPP[r, i, b, a] = w
                BPI[r, i, b, a] = -w
    """,
    store_hidden="""
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
    """,
    store_WPP="""
        $forward_pass
            for a in range(n):
                dWPP[r, i, b, a] = eq.plasticity_increment(dt_eta_fw, postP[i, a], pre)
    """,
    add_BPI="""
        n, dt_eta_PI = n4[i + U1], lp[r, LP_DT_ETA_PI, i]
        if lp[r, LP_ETA_PI_ON, i] != 0.0:  # B^PI += dt eta_PI (-v^api_old) (x) r^I_old
            for b in range(layers[i + U2]):
                rI_pre = rI_old[i, b]
                $fused_BPI
        else:  # B^PI += 0
            for b in range(layers[i + U2]):
                for a in range(n):
                    BPI[r, i, b, a] = BPI[r, i, b, a] + 0.0
    """,
    add_WIP="""
        n, dt_eta_IP = n4[i + U2], lp[r, LP_DT_ETA_IP, i]
        for b in range(layers[i + U1]):  # W^IP += dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
            pre = rP_old[i, b]
            $fused_WIP
    """,
    add_BPP="""
        n, dt_eta_bw, dt_alpha_eta_bw = n4[i + U1], lp[r, LP_DT_ETA_BW, i], lp[r, LP_DT_ALPHA_ETA_BW, i]
        if not is_pal:  # BP, FA: B^PP += 0
            for b in range(layers[i + U2]):
                for a in range(n):
                    BPP[r, i, b, a] = BPP[r, i, b, a] + 0.0
            continue
        for b in range(layers[i + U2]):
            r_pre = rHI[r, i + U1, b] if hi_pass else rP[r, i + U1, b]
            if regularizer == WEIGHT_DECAY:  # the usual case, branch-free: blocks of four
                $fused_BPP
            else:
                for a in range(n):
                    w = BPP[r, i, b, a]
                    BPP[r, i, b, a] = w + pal_increment(regularizer, dt_eta_bw, dt_alpha_eta_bw, noise[r, i, a],
                                                        r_pre, w, slope[i, a], slope[i + U1, b])
    """,
    add_WPP="""
        $forward_pass
            if w_lo:  # PAL moves W^PP by the low-pass of its increments
                $fused_WPP_low_pass
            else:
                $fused_WPP
    """,
)


def _source() -> str:
    """The kernel's text: KERNEL with the blocks of steps.STEP filled in, written out for four neurons at a time."""
    fw = dict(post="postP[i, a + U@]", W="WPP", increment="eq.plasticity_increment(dt_eta_fw, m@, pre)")
    blocks = dict(
        lookahead="\n".join(fill(LOOKAHEAD, **population(names, NEURON_LAYOUT)) for names in (PYRAMIDAL, INTERNEURONS)),
        post_P=fill(PREDICTION_ERROR, c="c", v="vbas", post="postP", rate="rP"),
        post_I=fill(PREDICTION_ERROR, c="c_den", v="vden", post="postI", rate="rI"),
        matvec_bas=_matvec(SUMS, x="x[b]", W="WPP", out="vbas[r, i, a + U@]"),
        matvec_den=_matvec(SUMS, x="rP[r, i, b]", W="WIP", out="y[a + U@]"),
        matvec_api=_matvec(APICAL_SUMS),
        forward_pass=fill(FORWARD_PASS, forward_pre=fill(FORWARD_PRE, **NEURON_LAYOUT)),
        noise=fill(NOISE, **NEURON_LAYOUT, generator="r"),
        fused_BPI=fill(ADD_INCREMENT, post="neg_vapi_old[i, a + U@]", W="BPI", low_pass="",
                     increment="eq.plasticity_increment(dt_eta_PI, m@, rI_pre)"),
        fused_WIP=fill(ADD_INCREMENT, post="postI[i, a + U@]", W="WIP", low_pass="",
                     increment="eq.plasticity_increment(dt_eta_IP, m@, pre)"),
        fused_BPP=fill(ADD_INCREMENT, post="noise[r, i, a + U@]", W="BPP", low_pass="",
                     increment="pal_increment(WEIGHT_DECAY, dt_eta_bw, dt_alpha_eta_bw, m@, r_pre, w@, 0.0, 0.0)"),
        fused_WPP=fill(ADD_INCREMENT, **fw, low_pass=""),
        fused_WPP_low_pass=fill(ADD_INCREMENT, **fw, low_pass=LOW_PASS),
    )
    return kernel_source(KERNEL, NEURON_LAYOUT, STEPS, blocks, lane_args="")


def _matvec(sums: str, **names: str) -> str:
    return fill(MATVEC, sums8=unroll(fill(sums, **names), 8), sums4=unroll(fill(sums, **names), 4))


advance_segment = compile_kernel(_source(), "advance_segment", kernel_names(__name__, __file__), KERNEL_OPTIONS)
