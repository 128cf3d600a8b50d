"""The equations of the dendritic microcircuit: the only place where the model's mathematics is written.

Each function computes one quantity of the model from named inputs, with the paper's symbol in its docstring.
They are plain arithmetic (plus NumPy's elementary functions), so the same function serves both engines:

* the NumPy step (dynamics.py, feedback.py, noise.py) calls them on arrays, elementwise, with broadcasting;
* the compiled kernels (palmc.engine.compiled) call them on scalars inside their loops; they are compiled
  inline there (``compiled.jit``), so the kernels keep only iteration, memory layout and random streams.

The order of operations inside each function is the reference's: results agree with it to the last bits. Edit a
function here and both engines follow (tests/test_single_source.py holds them to that).

Conventions: ``dt_eta`` is dt * eta (a learning rate times the time step, computed once in BatchParams),
``dt_over_tau`` is dt / tau of a filter; per-run constants come from :class:`palmc.engine.state.BatchParams`.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

# a float, or an array of floats (the NumPy step): every function below works elementwise on either
X = TypeVar("X", float, np.ndarray)


# -- primitives that numba lacks: the compiled engine supplies scalar versions (compiled.jit) ---------------------
def heaviside0(x: X) -> X:
    """H(x): 1 for x > 0, 0 for x <= 0, NaN for NaN (np.heaviside(x, 0))."""
    return np.heaviside(x, 0.0)


def ones_like(x: X) -> X:
    """1 for every element of x."""
    return np.ones_like(x)


# -- activations phi and their derivatives phi' ---------------------------------------------------------------------
def logistic_of_exp(exp_minus_x: X) -> X:
    """The logistic 1 / (1 + e^-x), given e^-x (the compiled engine computes e^-x its own way, four at a time)."""
    return 1.0 / (1.0 + exp_minus_x)


def logistic(x: X) -> X:
    """phi(x) = 1 / (1 + e^-x)."""
    return logistic_of_exp(np.exp(-x))


def d_logistic(x: X) -> X:
    """phi'(x) = phi(x) (1 - phi(x)) of the logistic."""
    y = logistic(x)
    return y * (1.0 - y)


def tanh(x: X) -> X:
    """phi(x) = tanh(x)."""
    return np.tanh(x)


def d_tanh(x: X) -> X:
    """phi'(x) = 1 - tanh(x)^2."""
    y = np.tanh(x)
    return 1.0 - y * y


def relu(x: X) -> X:
    """phi(x) = max(x, 0) (NaN propagates)."""
    return np.maximum(x, 0.0)


def d_relu(x: X) -> X:
    """phi'(x) = H(x), with phi'(0) = 0."""
    return heaviside0(x)


def soft_relu(x: X) -> X:
    """phi(x) = log(1 + e^x)."""
    return np.log(1.0 + np.exp(x))


def d_soft_relu(x: X) -> X:
    """phi'(x) = 1 / (1 + e^-x)."""
    return 1.0 / (1.0 + np.exp(-x))


def linear(x: X) -> X:
    """phi(x) = x."""
    return x * 1.0


def d_linear(x: X) -> X:
    """phi'(x) = 1."""
    return ones_like(x)


def hard_sigmoid(x: X) -> X:
    """phi(x) = clip(x/6 + 1/2, 0, 1) (torch.nn.Hardsigmoid)."""
    return np.maximum(0.0, np.minimum(1.0, x / 6.0 + 0.5))


def d_hard_sigmoid(x: X) -> X:
    """phi'(x) = 1 strictly inside (-3, 3), else 0."""
    s = x / 6.0 + 0.5
    return heaviside0(s) * heaviside0(1.0 - s)


# -- neuron dynamics ----------------------------------------------------------------------------------------------
def lookahead_voltage(u_old: X, u: X, taur_tau: X, dt: float) -> X:
    """u-breve = u_old + taur tau_eff (u - u_old) / dt: the prospective (lookahead) voltage."""
    return u_old + taur_tau * (u - u_old) / dt


def basal_attenuation(g_l: X, g_bas: X, g_api: X) -> X:
    """c = g_bas / (g_l + g_bas + g_api): the share of the basal potential v^bas a hidden pyramidal soma (with an
    apical compartment) settles to, without apical input."""
    return g_bas / (g_l + g_bas + g_api)


def output_basal_attenuation(g_l: X, g_bas: X) -> X:
    """c_out = g_bas / (g_l + g_bas): the same for an output pyramidal cell, which has no apical compartment."""
    return g_bas / (g_l + g_bas)


def dendritic_attenuation(g_l: X, g_den: X) -> X:
    """c_den = g_den / (g_l + g_den): the share of the dendritic potential v^den an interneuron soma settles to."""
    return g_den / (g_l + g_den)


def dendritic_prediction(conductance_ratio: X, v: X) -> X:
    """c v: the somatic voltage a dendrite predicts, c = g_bas/(g_l+g_bas+g_api) (hidden), g_bas/(g_l+g_bas)
    (output) or g_den/(g_l+g_den) (interneurons)."""
    return conductance_ratio * v


def apical_potential(top_down: X, lateral: X) -> X:
    """v^api = B^PP r-breve_{l+1} + B^PI r-breve^I_{l+1}, from its two mat-vecs."""
    return top_down + lateral


def with_apical_noise(v_api: X, xi: X) -> X:
    """v^api + xi: the apical potential the soma of a PAL run sees."""
    return v_api + xi


def two_compartment_drive(tau: X, g_a: X, v_a: X, g_b: X, v_b: X) -> X:
    """tau_eff u_eff = tau_eff (g_a v_a + g_b v_b): the conductance-weighted drive of a soma with two inputs.

    Pyramidal (hidden): g_bas v^bas + g_api v^api; output: g_bas v^bas + g_ntgt target; interneuron:
    g_den v^den + g_nI u-breve^P_{l+1}."""
    return tau * (g_a * v_a + g_b * v_b)


def basal_drive(tau: X, g_bas: X, v_bas: X) -> X:
    """tau (g_bas v^bas): the output soma's drive without a target."""
    return tau * (g_bas * v_bas)


def somatic_increment(drive: X, u: X, tau: X, dt: float) -> X:
    """du = dt (u_eff - u) / tau_eff, with ``drive`` = tau_eff u_eff."""
    return dt * ((drive - u) / tau)


# -- plasticity ---------------------------------------------------------------------------------------------------
def prediction_error(actual: X, predicted: X) -> X:
    """The postsynaptic factor of a dendritic-prediction rule: r-breve - phi(c v) (or u-breve - c v)."""
    return actual - predicted


def plasticity_increment(dt_eta: X, post: X, pre: X) -> X:
    """dt eta post pre: one weight's increment of dW^PP (forward), dW^IP and dB^PI (lateral; post = -v^api)."""
    return dt_eta * (post * pre)


def pal_regularizer(dt_alpha_eta_bw: X, B: X) -> X:
    """dt alpha eta_bw R(B) with R(B) = B: PAL's default weight decay."""
    return dt_alpha_eta_bw * B


def pal_regularizer_gated(dt_alpha_eta_bw: X, B: X, r_pre: X) -> X:
    """dt alpha eta_bw R(B) with R(B) = B H(r_pre) (``gate_regularizer``)."""
    return dt_alpha_eta_bw * B * heaviside0(r_pre)


def pal_regularizer_varphi(dt_alpha_eta_bw: X, B: X, slope_post: X, slope_pre: X) -> X:
    """dt alpha eta_bw R(B) with R(B) = phi'_l B phi'_{l+1} (``varphi_regularizer``)."""
    return ((dt_alpha_eta_bw * slope_post) * B) * slope_pre


def pal_feedback_increment(dt_eta_bw: X, xi: X, r_pre: X, regularizer: X) -> X:
    """dB^PP = dt eta_bw xi r^HI_pre - dt alpha eta_bw R(B): Phaseless Alignment Learning of the feedback weights
    (``regularizer`` from one of the pal_regularizer functions)."""
    return dt_eta_bw * (xi * r_pre) - regularizer


# -- noise and filters -------------------------------------------------------------------------------------------
def white_noise(scale: X, sigma: X, normal: X) -> X:
    """w = scale N(0, sigma) = scale (0 + sigma n), n a standard normal draw."""
    return scale * (0.0 + sigma * normal)


def ou_noise_step(xi: X, white: X, dt: float, inv_tauxi: X, sqrt_dt_tauxi: X) -> X:
    """xi <- xi + (1/tau_xi) (-dt xi + sqrt(dt tau_xi) w): one Ornstein-Uhlenbeck step of the apical noise."""
    return xi + inv_tauxi * (-dt * xi + sqrt_dt_tauxi * white)


def low_pass(filtered: X, x: X, dt_over_tau: X) -> X:
    """y <- y + dt/tau_LO (x - y): the low-pass filters of PAL's options (rates, dW^PP, v^den)."""
    return filtered + dt_over_tau * (x - filtered)


def high_pass(filtered: X, r: X, r_old: X, dt_over_tau: X) -> X:
    """r^HI <- r^HI + (r - r_old) - dt/tau_HP r^HI: the high-pass filtered rate PAL correlates with the noise."""
    return filtered + ((r - r_old) - dt_over_tau * filtered)


# activations by name: (phi, phi'); the compiled engine numbers them in this order
ACTIVATIONS = {
    "logistic": (logistic, d_logistic),
    "tanh": (tanh, d_tanh),
    "relu": (relu, d_relu),
    "soft_relu": (soft_relu, d_soft_relu),
    "linear": (linear, d_linear),
    "hard_sigmoid": (hard_sigmoid, d_hard_sigmoid),
}
