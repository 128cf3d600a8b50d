"""Activation functions phi and their derivatives phi', by name.

Written so that every value is bit-identical to the reference implementation's (same operations, same order).
Derivatives at kinks: relu'(0) = 0, hard_sigmoid' = 1 strictly inside (-3, 3) and 0 elsewhere.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Array = np.ndarray
ActivationFn = Callable[[Array], Array]


def logistic(x: Array) -> Array:
    return 1 / (1 + np.exp(-x))


def d_logistic(x: Array) -> Array:
    y = logistic(x)
    return y * (1.0 - y)


def tanh(x: Array) -> Array:
    return np.tanh(x)


def d_tanh(x: Array) -> Array:
    y = np.tanh(x)
    return 1 - y**2


def relu(x: Array) -> Array:
    return np.maximum(x, 0)


def d_relu(x: Array) -> Array:
    return np.heaviside(x, 0)


def soft_relu(x: Array) -> Array:
    return np.log(1 + np.exp(x))


def d_soft_relu(x: Array) -> Array:
    return 1 / (1 + np.exp(-x))


def linear(x: Array) -> Array:
    return np.array(x, dtype=float, copy=True)


def d_linear(x: Array) -> Array:
    return np.ones_like(x)


def hard_sigmoid(x: Array) -> Array:
    # torch.nn.Hardsigmoid: clip(x/6 + 1/2, 0, 1)
    return np.maximum(0, np.minimum(1, x / 6 + 1 / 2))


def d_hard_sigmoid(x: Array) -> Array:
    s = x / 6 + 1 / 2
    return np.heaviside(s, 0) * np.heaviside(1 - s, 0)


ACTIVATIONS: dict[str, tuple[ActivationFn, ActivationFn]] = {
    "logistic": (logistic, d_logistic),
    "tanh": (tanh, d_tanh),
    "relu": (relu, d_relu),
    "soft_relu": (soft_relu, d_soft_relu),
    "linear": (linear, d_linear),
    "hard_sigmoid": (hard_sigmoid, d_hard_sigmoid),
}


def phi(name: str) -> ActivationFn:
    """The activation phi called ``name``."""
    return ACTIVATIONS[name][0]


def phi_prime(name: str) -> ActivationFn:
    """The derivative phi' of the activation called ``name``."""
    return ACTIVATIONS[name][1]
