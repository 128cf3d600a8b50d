"""Apical noise xi of PAL: Ornstein-Uhlenbeck or held white noise, redrawn every dtxi.

Each run draws from its own legacy ``RandomState(seed)`` (the same stream that shuffles its inputs), hidden
layer by hidden layer, whenever a redraw is due. One counter per run is shared by all hidden layers, as in the
reference: it is reset on every draw and incremented after every layer's check, so with dtxi > dt and several
hidden layers the layers redraw on different schedules.
"""

from __future__ import annotations

import numpy as np

from palmc.engine import equations as eq
from palmc.engine.state import BatchParams, State


def white_noise_amplitude(mode: str, state: State, run: int, layer: int) -> np.ndarray | float:
    """Standard deviation of the white noise per neuron: 1 (``const``) or |u^P|, |u-breve^P| or |v^api|."""
    if mode == "const":
        return 1.0
    source = {"uP": state.uP, "uP_breve": state.uP_breve, "vapi": state.vapi}[mode]
    return np.abs(source[layer][run])


def draw_noise(state: State, params: BatchParams, rngs: list[np.random.RandomState]) -> None:
    """Advance xi for every PAL run in place (called once per training step, before the somatic update).

    OU: xi <- xi + (1/tau_xi) (-dt xi + sqrt(dt tau_xi) w); held white noise: xi <- w; w = scale * sigma * N(0, 1).
    """
    dt = params.dt
    for run in np.flatnonzero(params.is_pal):
        mode = params.noise_mode[run]
        for layer in range(len(state.noise) - 1):
            xi = state.noise[layer][run]
            if np.all(xi == 0) or state.noise_counter[run] % params.noise_period[run] == 0:
                sigma = white_noise_amplitude(mode, state, run, layer)
                # legacy normal(0, s) = 0 + s * gauss: the same draws and values as scaling standard normals
                white = eq.white_noise(params.noise_scale[layer][run], sigma, rngs[run].standard_normal(xi.shape[0]))
                if params.noise_ou[run]:
                    state.noise[layer][run] = eq.ou_noise_step(xi, white, dt, params.inv_tauxi[run],
                                                               params.sqrt_dt_tauxi[run])
                else:
                    state.noise[layer][run] = white
                state.noise_counter[run] = 0
            state.noise_counter[run] += 1
