"""Initial weights, voltages, teacher and input patterns, drawn exactly as the reference draws them.

Order of random draws (legacy MT19937 ``RandomState``), per network with seed s:
  1. seed s: somatic voltages u^P ~ N(0, 1) for layers 1..L, then u^I ~ N(0, 1) for layers 2..L;
  2. seed s again: uniform W^PP (all layers), W^IP, B^PP, B^PI, each of shape (post, pre) — W^IP and B^PI are
     drawn even when the self-predicting state overwrites them, because their draws move the stream.
The fw_bw teacher's seed is ``RandomState(first_seed).randint(100000, 999999)``; input patterns are
``RandomState(input_seed).uniform(0, 1, (dataset_size, n_in))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from palmc.engine.params import ModelParams, Range


@dataclass
class NetworkInit:
    """Initial state of one network, in the reference's list layout (index i = network layer i+1 for u^P)."""

    uP: list[np.ndarray]
    uI: list[np.ndarray]
    WPP: list[np.ndarray]
    WIP: list[np.ndarray]
    BPP: list[np.ndarray]
    BPI: list[np.ndarray]


def teacher_seed(first_seed: int) -> int:
    """The fw_bw teacher's seed, derived from the first seed of the experiment."""
    return int(np.random.RandomState(first_seed).randint(100000, 999999))


def input_patterns(input_seed: int, dataset_size: int, n_in: int) -> np.ndarray:
    """The ``dataset_size`` unique input rate patterns, shape (dataset_size, n_in)."""
    return np.random.RandomState(input_seed).uniform(0, 1, size=(dataset_size, n_in))


def self_predicting_weights(p: ModelParams, WPP: list[np.ndarray], BPP: list[np.ndarray]) -> tuple[list, list]:
    """W^IP and B^PI of the self-predicting state: B^PI = -B^PP, W^IP_l proportional to W^PP_{l+1}.

    The factor is g_bas (g_l + g_den) / (g_den (g_l + g_bas + g_api)) for hidden interneurons; the last
    interneuron population mirrors the output layer, which has no apical compartment (g_api dropped).
    """
    BPI = [-B.copy() for B in BPP]
    n_int = len(WPP) - 1
    WIP = []
    for i in range(n_int):
        gsum = p.gl + p.gbas + p.gapi if i < n_int - 1 else p.gl + p.gbas
        WIP.append(p.gbas * (p.gl + p.gden) / (p.gden * gsum) * WPP[i + 1].copy())
    return WIP, BPI


def init_key(p: ModelParams, seed: int, teacher: bool = False) -> tuple:
    """Everything ``init_network(p, seed, teacher)`` reads: equal keys give equal initial networks (runs of a
    sweep that vary other parameters share them)."""
    ranges = ((p.init_teacher_WPP_range, p.init_teacher_WIP_range, p.init_teacher_BPP_range, p.init_teacher_BPI_range)
              if teacher else (p.init_WPP_range, p.init_WIP_range, p.init_BPP_range, p.init_BPI_range))
    return (seed, teacher, p.model, p.layers, ranges, p.init_in_SPS or teacher, p.gl, p.gbas, p.gapi, p.gden)


def init_network(p: ModelParams, seed: int, teacher: bool = False) -> NetworkInit:
    """Initial voltages and weights of a student (or, with ``teacher=True``, a teacher) network."""
    layers = p.layers
    rs = np.random.RandomState(seed)
    uP = [rs.normal(0, 1, size=n) for n in layers[1:]]
    uI = [rs.normal(0, 1, size=n) for n in layers[2:]]

    ranges: tuple[Range, Range, Range, Range]
    if teacher:
        ranges = (p.init_teacher_WPP_range, p.init_teacher_WIP_range, p.init_teacher_BPP_range, p.init_teacher_BPI_range)
    else:
        ranges = (p.init_WPP_range, p.init_WIP_range, p.init_BPP_range, p.init_BPI_range)
    (w_lo, w_hi), (wi_lo, wi_hi), (b_lo, b_hi), (bi_lo, bi_hi) = ranges
    rs = np.random.RandomState(seed)
    WPP = [rs.uniform(w_lo, w_hi, size=(layers[i + 1], layers[i])) for i in range(len(layers) - 1)]
    WIP = [rs.uniform(wi_lo, wi_hi, size=(layers[i + 1], layers[i])) for i in range(1, len(layers) - 1)]
    BPP = [rs.uniform(b_lo, b_hi, size=(layers[i], layers[i + 1])) for i in range(1, len(layers) - 1)]
    BPI = [rs.uniform(bi_lo, bi_hi, size=(layers[i], layers[i + 1])) for i in range(1, len(layers) - 1)]

    if p.model == "BP":
        BPP = [W.T.copy() for W in WPP[1:]]
    # The reference puts a teacher in the self-predicting state whatever init_in_SPS says.
    if p.init_in_SPS or teacher:
        WIP, BPI = self_predicting_weights(p, WPP, BPP)
    return NetworkInit(uP=uP, uI=uI, WPP=WPP, WIP=WIP, BPP=BPP, BPI=BPI)
