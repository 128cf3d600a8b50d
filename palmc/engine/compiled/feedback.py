"""PAL's feedback rule inside the kernels, with the regularizer each run chose (``REGULARIZER_CODES``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from palmc.engine import equations as eq
from palmc.engine.compiled.jit import JIT
from palmc.engine.state import BatchParams

WEIGHT_DECAY, GATED, VARPHI = 0, 1, 2  # R(B) = B, B H(r_pre), phi'_l B phi'_{l+1}


def regularizer_codes(p: BatchParams) -> np.ndarray:
    """The regularizer of every run, as the numbers above."""
    return np.where(p.gate_regularizer, GATED, np.where(p.varphi_regularizer, VARPHI, WEIGHT_DECAY))


@njit(**JIT, inline="always")
def pal_increment(regularizer: int, dt_eta_bw: float, dt_alpha_eta_bw: float, xi: float, r_pre: float, B: float,
                  slope_post: float, slope_pre: float) -> float:
    """dB^PP of one weight (equations.pal_feedback_increment) with regularizer number ``regularizer``."""
    if regularizer == GATED:
        decay = eq.pal_regularizer_gated(dt_alpha_eta_bw, B, r_pre)
    elif regularizer == VARPHI:
        decay = eq.pal_regularizer_varphi(dt_alpha_eta_bw, B, slope_post, slope_pre)
    else:
        decay = eq.pal_regularizer(dt_alpha_eta_bw, B)
    return eq.pal_feedback_increment(dt_eta_bw, xi, r_pre, decay)
