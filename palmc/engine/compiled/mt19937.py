"""numpy's legacy RandomState (MT19937 and the polar-method Gaussian with its cached second value), bit for bit.

Each run's generator is re-implemented in the kernels so that they consume exactly the normals
``noise.draw_noise`` would, in the same order. The generator state of run r is (mt_key[r], mt_pos[r],
mt_has_gauss[r], mt_cached[r]) as in RandomState.get_state; mt_out[r] holds the 624 tempered outputs of mt_key[r],
refreshed at every twist, so a draw is a plain load (numpy/random/src/mt19937 and legacy-distributions.c).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from palmc.engine.compiled.jit import JIT, U0, U1, U2, U3, U4

U620, U624 = np.uint64(620), np.uint64(624)

# The generator state of run r is (mt_key[r], mt_pos[r], mt_has_gauss[r], mt_cached[r]) as in RandomState.get_state;
# mt_out[r] holds the 624 tempered outputs of mt_key[r], refreshed at every twist, so a draw is a plain load.
# (Helpers that take arrays are kept out of the hot loops: each call or view costs reference counting.)
@njit(**JIT)
def _temper(mt_key: np.ndarray, mt_out: np.ndarray, r: int) -> None:
    key, out = mt_key[r], mt_out[r]
    for i in range(624):
        y = key[i]
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        out[i] = y


@njit(**JIT)
def temper_all(mt_key: np.ndarray, mt_out: np.ndarray) -> None:
    for r in range(mt_key.shape[0]):
        _temper(mt_key, mt_out, r)


@njit(**JIT)
def _refill(mt_key: np.ndarray, mt_out: np.ndarray, r: int) -> None:
    """mt19937_gen: regenerate the 624 words in place, then temper them.

    The words are stored as uint32 (computed in wider integers, truncated on store), which lets the compiler
    use eight of them per AVX2 operation (docs/performance.md).
    """
    key = mt_key[r]
    for i in range(227):
        y = (key[i] & 0x80000000) | (key[i + 1] & 0x7FFFFFFF)
        key[i] = key[i + 397] ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)
    for i in range(227, 623):
        y = (key[i] & 0x80000000) | (key[i + 1] & 0x7FFFFFFF)
        key[i] = key[i - 227] ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)
    y = (key[623] & 0x80000000) | (key[0] & 0x7FFFFFFF)
    key[623] = key[396] ^ (y >> 1) ^ ((y & 1) * 0x9908B0DF)
    _temper(mt_key, mt_out, r)


@njit(**JIT, inline="always")
def _polar(a1: int, b1: int, a2: int, b2: int) -> tuple[float, float, float]:
    """Two legacy doubles in [-1, 1) from four words, and their squared radius (legacy_gauss)."""
    x1 = 2.0 * (((a1 >> 5) * 67108864.0 + (b1 >> 6)) / 9007199254740992.0) - 1.0
    x2 = 2.0 * (((a2 >> 5) * 67108864.0 + (b2 >> 6)) / 9007199254740992.0) - 1.0
    return x1, x2, x1 * x1 + x2 * x2


@njit(**JIT)
def _four_words_slow(mt_key: np.ndarray, mt_out: np.ndarray, r: int, pos: int) -> tuple[int, int, int, int, int]:
    """The next four words when they straddle a twist (rare path of the kernel's inline draw); pos is uint64."""
    words = np.empty(4, dtype=np.int64)
    for w in range(4):
        if pos >= U624:
            _refill(mt_key, mt_out, r)
            pos = U0
        words[w] = mt_out[r, pos]
        pos += U1
    return words[0], words[1], words[2], words[3], pos


@njit(**JIT, inline="always")
def normals(mt_key: np.ndarray, mt_out: np.ndarray, q: int, pos: int, has_gauss: int, cached: float, m: int,
             gbuf: np.ndarray, pairs: np.ndarray) -> tuple[int, int, float]:
    """legacy_gauss ``m`` times from generator q (at word ``pos``, uint64) into ``gbuf[:m]``; the generator's new
    (pos, has_gauss, cached). The cached value of the last pair comes first, then new pairs of the polar method;
    ``pairs`` is scratch space, (4, at least ``m`` // 2 + 1): the candidates' x1, x2, squared radius and its log."""
    k = U0
    if m > U0 and has_gauss:
        gbuf[0], has_gauss, cached = cached, 0, 0.0
        k = U1
    n_pairs = (m - k + U1) // U2
    p = U0
    while p < n_pairs:  # candidates until n_pairs are inside the unit disc (branch-free count)
        if pos <= U620:
            a1, b1 = mt_out[q, pos], mt_out[q, pos + U1]
            a2, b2 = mt_out[q, pos + U2], mt_out[q, pos + U3]
            pos += U4
        else:  # the four words straddle a twist
            a1, b1, a2, b2, pos = _four_words_slow(mt_key, mt_out, q, pos)
        x1, x2, r2 = _polar(a1, b1, a2, b2)
        pairs[0, p], pairs[1, p], pairs[2, p] = x1, x2, r2
        p += np.uint64((r2 < 1.0) & (r2 != 0.0))
    for p in range(n_pairs):  # the costly part, in loops free of the acceptance test
        pairs[3, p] = math.log(pairs[2, p])
    for p in range(n_pairs):
        f = math.sqrt(-2.0 * pairs[3, p] / pairs[2, p])
        gbuf[k + U2 * p] = f * pairs[1, p]
        gbuf[k + U2 * p + U1] = f * pairs[0, p]
    if m > U0 and (m - k) % U2 == U1:  # an odd count leaves the last pair's second value cached
        has_gauss, cached = 1, gbuf[m]
    return pos, has_gauss, cached
