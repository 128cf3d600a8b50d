"""One Euler step of the dendritic microcircuit, batched over runs: the readable specification.

Per step k (all runs at once):
  1. lookahead  u-breve = u_old + taur tau_eff (u - u_old) / dt,  rates r-breve = phi(u-breve);
  2. dendrites  v^bas_l = W^PP_l r-breve_{l-1},  v^den_l = W^IP_l r-breve_{l-1},
                v^api_l = B^PP_l r-breve_{l+1} + B^PI_l r-breve^I_{l+1}  (+ xi_l at the soma for PAL);
  3. somata     du = dt (u_eff - u) / tau_eff  with u_eff the conductance-weighted dendritic drive
                (output layer: nudged towards the target with g_ntgt, interneurons towards u-breve^P with g_nI);
  4. plasticity (uses the presynaptic rates and dendritic potentials of step k-1):
                dW^PP_l = dt eta_fw (phi(u-breve_l) - phi(c v^bas_l)) r-breve_{l-1}^T,
                dW^IP_l = dt eta_IP (r-breve^I_l - phi(g_den/(g_l+g_den) v^den_l)) r-breve_{l-1}^T,
                dB^PI_l = -dt eta_PI v^api_l (r-breve^I_{l+1})^T,  and B^PP by the model (feedback.py);
  5. apply the increments allowed by the phase, record, then (PAL) advance the high-pass filter of the rates.
The equations themselves are the functions of equations.py (shared with the compiled engine), applied here
elementwise to the arrays of all runs; operations keep the reference's order, so results agree with it to the
last bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from palmc.engine import equations as eq
from palmc.engine.activations import phi
from palmc.engine.feedback import pal_feedback_increment, reset_bp_feedback
from palmc.engine.noise import draw_noise
from palmc.engine.state import BatchParams, State


@dataclass(frozen=True)
class Learning:
    """Which weights a step may change (settling: none; bw_only: lateral and feedback; fw_bw: all)."""

    forward: bool
    lateral: bool
    feedback: bool


SETTLING = Learning(False, False, False)


def _matvec(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.einsum("rij,rj->ri", W, x)


def _col(x: np.ndarray) -> np.ndarray:
    return x[:, None]


def _mat(x: np.ndarray) -> np.ndarray:
    return x[:, None, None]


def step(
    state: State,
    params: BatchParams,
    r0: np.ndarray,
    target: np.ndarray | None,
    learning: Learning,
    rngs: list[np.random.RandomState],
    record: "callable | None" = None,
) -> None:
    """Advance ``state`` by one step of dt with input rates ``r0`` (R, n_in) and output target (R, n_out)."""
    p, s, dt = params, state, params.dt
    acts = p.activations
    L = len(s.uP)

    rP_old, rI_old, r0_old = s.rP_breve, s.rI_breve, s.r0
    vbas_old, vden_old, vapi_old = s.vbas, s.vden, s.vapi

    # 1. lookahead voltages and their rates
    s.uP_breve = [eq.lookahead_voltage(s.uP_old[i], s.uP[i], _col(p.taur_tau_P[i]), dt) for i in range(L)]
    s.uI_breve = [eq.lookahead_voltage(s.uI_old[i], s.uI[i], _col(p.taur_tau_I), dt) for i in range(L - 1)]
    s.rP_breve = [phi(acts[i])(s.uP_breve[i]) for i in range(L)]
    s.rI_breve = [phi(acts[i + 1])(s.uI_breve[i]) for i in range(L - 1)]
    s.r0 = r0
    s.uP_old, s.uI_old = s.uP, s.uI

    # 2. dendritic potentials
    s.vbas = [_matvec(s.WPP[0], r0)] + [_matvec(s.WPP[i], s.rP_breve[i - 1]) for i in range(1, L)]
    vden = []
    for i in range(L - 1):
        instantaneous = _matvec(s.WIP[i], s.rP_breve[i])
        low_passed = eq.low_pass(s.vden[i], instantaneous, _col(p.dt_over_tauLO))
        vden.append(np.where(_col(p.inter_low_pass), low_passed, instantaneous))
    s.vden = vden
    s.vapi = [eq.apical_potential(_matvec(s.BPP[i], s.rP_breve[i + 1]), _matvec(s.BPI[i], s.rI_breve[i]))
              for i in range(L - 1)]
    s.vapi_noise = [eq.with_apical_noise(s.vapi[i], s.noise[i]) for i in range(L - 1)]

    # 3. somatic updates; PAL's soma sees the noise of the previous step, then the noise is redrawn
    inject_noise = learning.feedback and bool(p.is_pal.any())
    if inject_noise:
        draw_noise(s, p, rngs)
    noisy = _col(p.is_pal & learning.feedback)
    tau_I = _col(p.tau_I)
    dUI = [eq.somatic_increment(eq.two_compartment_drive(tau_I, _col(p.gden), s.vden[i], _col(p.gnI), s.uP_breve[i + 1]),
                                s.uI[i], tau_I, dt)
           for i in range(L - 1)]
    dUP = []
    for i in range(L - 1):
        vapi = np.where(noisy, s.vapi_noise[i], s.vapi[i])
        tau = _col(p.tau_P[i])
        drive = eq.two_compartment_drive(tau, _col(p.gbas), s.vbas[i], _col(p.gapi), vapi)
        dUP.append(eq.somatic_increment(drive, s.uP[i], tau, dt))
    tau_out = _col(p.tau_P[-1])
    if target is not None:
        drive = eq.two_compartment_drive(tau_out, _col(p.gbas), s.vbas[-1], _col(p.gntgt), target)
    else:
        # without a target the drive uses the target-free time constant but the division keeps the nudged one
        drive = eq.basal_drive(_col(p.tau_P_out_notgt), _col(p.gbas), s.vbas[-1])
    dUP.append(eq.somatic_increment(drive, s.uP[-1], tau_out, dt))

    # 4. plasticity
    s.dWPP = _forward_increments(s, p, r0_old, rP_old, vbas_old)
    s.dWIP = []
    for i in range(L - 1):
        predicted = phi(acts[i + 1])(eq.dendritic_prediction(_col(p.c_den), vden_old[i]))
        post = eq.prediction_error(s.rI_breve[i], predicted)
        s.dWIP.append(eq.plasticity_increment(_mat(p.dt_eta_IP[i]), post[:, :, None], rP_old[i][:, None, :]))
    s.dBPI = [np.where(_mat(p.eta_PI[i] != 0),
                       eq.plasticity_increment(_mat(p.dt_eta_PI[i]), -vapi_old[i][:, :, None], rI_old[i][:, None, :]), 0.0)
              for i in range(L - 1)]
    reset_bp_feedback(s, p)
    s.dBPP = pal_feedback_increment(s, p)

    # 5. apply
    s.uP = [s.uP[i] + dUP[i] for i in range(L)]
    s.uI = [s.uI[i] + dUI[i] for i in range(L - 1)]
    if learning.forward:
        low_pass = _mat(p.dWPP_low_pass)
        for i in range(L):
            s.dWPP_LO[i] = np.where(low_pass, eq.low_pass(s.dWPP_LO[i], s.dWPP[i], _mat(p.dt_over_tauLO)), s.dWPP_LO[i])
            s.WPP[i] = s.WPP[i] + np.where(low_pass, s.dWPP_LO[i], s.dWPP[i])
    if learning.lateral:
        s.WIP = [s.WIP[i] + s.dWIP[i] for i in range(L - 1)]
        s.BPI = [s.BPI[i] + s.dBPI[i] for i in range(L - 1)]
    if learning.feedback:
        s.BPP = [s.BPP[i] + s.dBPP[i] for i in range(L - 1)]
    s.step += 1
    if record is not None:
        record(s)
    # high-pass filter of the rates, r^HI <- r^HI + (r - r_old) - dt/tau_HP r^HI (every step, settling included)
    s.rP_breve_HI = [eq.high_pass(s.rP_breve_HI[i], s.rP_breve[i], rP_old[i], _col(p.dt_over_tauHP)) for i in range(L)]


def _forward_increments(s: State, p: BatchParams, r0_old: np.ndarray, rP_old: list, vbas_old: list) -> list:
    """dW^PP for every forward layer, with the optional PAL filters on its pre- or postsynaptic factor."""
    L = len(s.uP)
    lo = _col(p.dt_over_tauLO)
    r_lp, post_lp = _col(p.r_low_pass), _col(p.post_low_pass)
    increments = []
    for i in range(L):
        c = _col(p.c_out if i == L - 1 else p.c_hid)
        basal_prediction = eq.dendritic_prediction(c, vbas_old[i])
        post = np.where(
            _col(p.use_activation),
            eq.prediction_error(s.rP_breve[i], phi(p.activations[i])(basal_prediction)),
            eq.prediction_error(s.uP_breve[i], basal_prediction),
        )
        pre = r0_old if i == 0 else rP_old[i - 1]
        # filters advance at every step (settling included), each in its own run only
        if i == 0:
            s.r0_LO = np.where(r_lp, eq.low_pass(s.r0_LO, pre, lo), s.r0_LO)
            pre_lp = s.r0_LO
        else:
            s.r_LO[i - 1] = np.where(r_lp, eq.low_pass(s.r_LO[i - 1], pre, lo), s.r_LO[i - 1])
            pre_lp = s.r_LO[i - 1]
        s.post_LO[i] = np.where(post_lp, eq.low_pass(s.post_LO[i], post, lo), s.post_LO[i])
        post_used = np.where(post_lp, s.post_LO[i], post)
        pre_used = np.where(r_lp, pre_lp, pre)
        increments.append(eq.plasticity_increment(_mat(p.dt_eta_fw[i]), post_used[:, :, None], pre_used[:, None, :]))
    return increments
