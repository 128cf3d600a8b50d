"""The three ways to obtain the feedback weights B^PP (the only place where BP, FA and PAL differ).

* BP: B^PP_l = (W^PP_{l+1})^T at every step (and B^PI_l = -B^PP_l), taken before this step's W update.
* FA: B^PP stays at its random initial value.
* PAL (Phaseless Alignment Learning), paper Eq. for the backward weights:

      dB^PP_l = dt * eta_bw_l * ( xi_l  (r-breve_{l+1}^HI)^T  -  alpha_l * R(B^PP_l) )

  where xi_l is the apical noise of layer l, r^HI the high-pass filtered rate of layer l+1 (or the plain rate
  without ``pyr_hi_pass``), and R the regularizer: R(B) = B (default), B * H(r_pre) column gating
  (``gate_regularizer``), or phi'_l B phi'_{l+1} (``varphi_regularizer``; the output layer's phi' is held at 0,
  as in the reference, so the last B^PP gets no regularizer).
"""

from __future__ import annotations

import numpy as np

from palmc.engine import equations as eq
from palmc.engine.activations import phi_prime
from palmc.engine.state import BatchParams, State


def _per_run(x: np.ndarray) -> np.ndarray:
    return x[:, None, None]


def reset_bp_feedback(state: State, params: BatchParams) -> None:
    """BP: copy the transposed forward weights into B^PP and mirror them into B^PI (self-prediction)."""
    if not params.is_bp.any():
        return
    bp = _per_run(params.is_bp)
    for i in range(len(state.BPP)):
        BPP = np.where(bp, np.swapaxes(state.WPP[i + 1], 1, 2), state.BPP[i])
        state.BPP[i] = BPP
        state.BPI[i] = np.where(bp, -BPP, state.BPI[i])


def pal_feedback_increment(state: State, params: BatchParams) -> list[np.ndarray]:
    """dB^PP of this step (zero for BP and FA runs)."""
    n_hidden = len(state.BPP)
    if not params.is_pal.any():
        return [np.zeros_like(B) for B in state.BPP]
    # phi'(u-breve) of hidden layers; the output layer's stays zero (see module docstring)
    slope = [phi_prime(params.activations[i])(state.uP_breve[i]) for i in range(n_hidden)]
    slope.append(np.zeros_like(state.uP_breve[-1]))
    pal = _per_run(params.is_pal)
    increments = []
    for i in range(n_hidden):
        r_pre = np.where(params.pyr_hi_pass[:, None], state.rP_breve_HI[i + 1], state.rP_breve[i + 1])
        B, decay = state.BPP[i], _per_run(params.dt_alpha_eta_bw[i])
        xi_post, r_pre_row = state.noise[i][:, :, None], r_pre[:, None, :]
        regularizer = np.where(
            _per_run(params.gate_regularizer),
            eq.pal_regularizer_gated(decay, B, r_pre_row),
            np.where(
                _per_run(params.varphi_regularizer),
                eq.pal_regularizer_varphi(decay, B, slope[i][:, :, None], slope[i + 1][:, None, :]),
                eq.pal_regularizer(decay, B),
            ),
        )
        dB = eq.pal_feedback_increment(_per_run(params.dt_eta_bw[i]), xi_post, r_pre_row, regularizer)
        increments.append(np.where(pal, dB, 0.0))
    return increments
