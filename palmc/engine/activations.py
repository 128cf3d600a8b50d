"""The activations phi and their derivatives phi', by name (their equations are in equations.py)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from palmc.engine.equations import ACTIVATIONS

ActivationFn = Callable[[np.ndarray], np.ndarray]


def phi(name: str) -> ActivationFn:
    """The activation phi called ``name``."""
    return ACTIVATIONS[name][0]


def phi_prime(name: str) -> ActivationFn:
    """The derivative phi' of the activation called ``name``."""
    return ACTIVATIONS[name][1]
