"""The compiled engine: one numba loop advances every run of a batch over many steps per Python call.

Why: for these small networks the NumPy step (dynamics.py) spends nearly all its time in Python and NumPy call
overhead. Here the same arithmetic runs as explicit loops over a packed copy of the state, and Python is entered
only at segment ends: record steps, epoch starts (to shuffle with the run's RandomState exactly as
``Simulation._prepare_step`` does) and every ``MAX_SEGMENT`` steps.

dynamics.py stays the specification: every expression below is written in its order of operations, so the two
engines agree to the last bit apart from the summation order of the mat-vecs (and exp, below). Blocks are
labelled with the step of dynamics.py they implement; dynamics.py's step 4 is split around step 2 because it
needs the previous step's dendritic potentials.

Segment ends are cheap (recording every 1000 steps costs a few per cent): the packed state, the generators'
states and their tempered words live in arrays for the whole ``advance`` call; the kernel picks each step's
pattern from the presentation order itself; at a record step the recorder is shown only the fields it records,
as views of the packed arrays made once per call (``_Packed.show``), and the full state is unpacked once, at
the end.

Threads: every compiled function releases the GIL (``nogil``), so threads advancing different batches run in
parallel (thread workers, ``PALMC_LOCAL_PROCESSES=0``); only the short Python parts between segments take turns.

Random numbers: each run's legacy ``RandomState`` (MT19937 plus the polar-method gaussian with its cached second
value) is re-implemented bit for bit in the kernel, so it consumes exactly the normals ``noise.draw_noise`` would,
in the same order. The generator states are copied into the kernel at the start of ``advance`` and back before
Python uses them (the shuffle at an epoch start) and at the end.

The logistic's exp is glibc's algorithm, re-implemented so that it vectorises (``_exp_fast``): the same bits as
libm's exp on glibc with FMA (what NumPy calls on this machine class), within one ulp elsewhere.

Packed layout (built once per ``advance`` call): vectors as (R, n_entries, W) and weights *transposed* as
(R, n_entries, W, W) with ``Wt[b, a] = W[a, b]``, W = the widest layer rounded up to a multiple of four, zero
padding. The transposed layout makes both the mat-vecs and the outer-product updates run over contiguous
postsynaptic indices, in blocks of four that the compiler turns into AVX2 operations (see "Speed notes").

Networks whose layers are all narrower than a block (the 1-1-1 networks of the fw_bw figure) are advanced by
kernel_lanes.py instead, which vectorises over runs (and compiles itself for the network when a batch is long);
``layout_for`` chooses, ``advance`` drives either.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import fields
from decimal import Decimal, localcontext
from typing import TYPE_CHECKING, Iterable, Iterator

import numba
import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic

from palmc.engine.state import State

if TYPE_CHECKING:  # pragma: no cover
    from palmc.engine.tasks import Simulation
    from palmc.store.recorder import ChunkRecorder

# numba options of every compiled function: cached on disk, NumPy's float semantics (no ZeroDivisionError), and
# no GIL, so that threads advancing different batches run in parallel (nothing here touches Python objects)
_JIT: dict[str, object] = dict(cache=True, error_model="numpy", nogil=True)

MAX_SEGMENT = 8192  # steps per kernel call at most: Python (Ctrl-C, other threads' Python parts) gets a turn

# -- state fields and how they are packed -------------------------------------------------------------------
# Order matters: the kernel takes these arrays as arguments in exactly this order.
VEC_P = ("uP", "uP_old", "uP_breve", "rP_breve", "rP_breve_HI", "vbas", "noise", "r_LO", "post_LO")  # L entries
VEC_I = ("uI", "uI_old", "uI_breve", "rI_breve", "vden")  # L-1 entries, interneuron sizes
VEC_A = ("vapi", "vapi_noise")  # L-1 entries, hidden pyramidal sizes
MAT_W = ("WPP", "dWPP", "dWPP_LO")  # L entries: (post layers[i+1], pre layers[i])
MAT_I = ("WIP", "dWIP")  # L-1 entries: (interneurons layers[i+2], pre layers[i+1])
MAT_B = ("BPP", "dBPP", "BPI", "dBPI")  # L-1 entries: (post layers[i+1], pre layers[i+2])
PLAIN = ("r0", "r0_LO", "noise_counter")
VEC_FIELDS = VEC_P + VEC_I + VEC_A
MAT_FIELDS = MAT_W + MAT_I + MAT_B
KNOWN_FIELDS = frozenset(("step",) + VEC_FIELDS + MAT_FIELDS + PLAIN)

# unsigned index constants for the kernel (see "Speed notes" there)
U0, U1, U2, U3, U4, U5, U6, U7, U8 = (np.uint64(v) for v in range(9))
U620, U624 = np.uint64(620), np.uint64(624)

ACTIVATION_CODES = {"logistic": 0, "tanh": 1, "relu": 2, "soft_relu": 3, "linear": 4, "hard_sigmoid": 5}
NOISE_MODES = {"const": 0, "uP": 1, "uP_breve": 2, "vapi": 3}

# columns of the per-run scalar table ``rp`` (R, N_RP)
RP_A_I, RP_TAU_I, RP_TAU_OUT_NOTGT, RP_GBAS, RP_GAPI, RP_GDEN, RP_GNI, RP_GNTGT = 0, 1, 2, 3, 4, 5, 6, 7
RP_LO, RP_HP, RP_C_HID, RP_C_OUT, RP_C_DEN, RP_INV_TAUXI, RP_SQRT_DT_TAUXI, RP_PERIOD = 8, 9, 10, 11, 12, 13, 14, 15
N_RP = 16
# rows of the per-run, per-layer table ``lp`` (R, N_LP, L); hidden-only rows use the first L-1 entries
LP_TAU_P, LP_A_P, LP_DT_ETA_FW, LP_DT_ETA_IP, LP_DT_ETA_PI, LP_ETA_PI_ON, LP_DT_ETA_BW, LP_DECAY, LP_SCALE = range(9)
N_LP = 9
# columns of the per-run flag table ``fl`` (R, N_FL)
(FL_BP, FL_PAL, FL_OU, FL_MODE, FL_USE_ACT, FL_HI_PASS, FL_W_LO, FL_R_LP, FL_POST_LP, FL_INTER_LP, FL_GATE, FL_VARPHI,
 FL_PERIOD_INT) = range(13)
N_FL = 13


# -- exp, vectorisable and bit-identical to glibc's ------------------------------------------------------------
# The logistic's exp is most of the arithmetic cost of a step, and libm's exp cannot be vectorised. glibc (2.28+,
# x86-64 with FMA, which is what NumPy calls here) computes exp(x) = 2^(k/128) exp(r) with a 128-entry table and
# a degree-5 polynomial; the same operations below (same fused multiply-adds) give the same bits for
# |x| < 512. Other inputs (and any other libm) are handled by ``_phi``'s libm path: see ``_phi4``.
@intrinsic
def _bits(typingctx, x):  # type: ignore[no-untyped-def]
    """The IEEE bits of a float64, as uint64."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], llvm_ir.IntType(64))
    return types.uint64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, i):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.bitcast(args[0], llvm_ir.DoubleType())
    return types.float64(types.uint64), codegen


@intrinsic
def _fma(typingctx, a, b, c):  # type: ignore[no-untyped-def]
    """a * b + c with a single rounding."""
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.fma(*args)
    return types.float64(types.float64, types.float64, types.float64), codegen


def _exp_constants() -> tuple[np.ndarray, float, float, float]:
    """glibc's __exp_data table (2^(k/128) = H_k (1 + T_k)) and reduction constants, derived exactly."""
    as_bits = lambda v: int(np.float64(v).view(np.uint64))  # noqa: E731
    table = np.zeros(256, dtype=np.uint64)
    with localcontext() as ctx:
        ctx.prec = 60
        for k in range(128):
            exact = Decimal(2) ** (Decimal(k) / Decimal(128))
            head = float(exact)
            tail = float((exact - Decimal(head)) / Decimal(head))
            table[2 * k] = as_bits(tail) if tail != 0 else 0
            table[2 * k + 1] = (as_bits(head) - (k << 45)) % 2**64
        ln2_n = Decimal(2).ln() / 128
        hi = float(np.uint64(as_bits(float(ln2_n)) & ~0xFFFF).view(np.float64))  # 16 low bits cleared
        return table, float(1 / ln2_n), -hi, -float(ln2_n - Decimal(hi))


_EXP_TAB, _INVLN2N, _NEGLN2HIN, _NEGLN2LON = _exp_constants()
_SHIFT = float.fromhex("0x1.8p52")
# the polynomial of exp(r) - 1 - r (glibc/ARM optimized-routines, EXP_POLY_ORDER 5)
_C2, _C3, _C4, _C5 = (float.fromhex(h) for h in ("0x1.ffffffffffdbdp-2", "0x1.555555555543cp-3",
                                                    "0x1.55555cf172b91p-5", "0x1.1111167a4d017p-7"))
_U1, _U45, _U52, _U7F, _U7FF, _U408 = (np.uint64(v) for v in (1, 45, 52, 0x7F, 0x7FF, 0x408))


@njit(**_JIT, inline="always")
def _exp_fast(x: float) -> float:
    """exp(x) for |x| < 512 (and tiny or zero x); branch-free, so four of them vectorise."""
    kd = _fma(x, _INVLN2N, _SHIFT)
    ki = _bits(kd)
    kd = kd - _SHIFT
    r = _fma(kd, _NEGLN2HIN, x)
    r = _fma(kd, _NEGLN2LON, r)
    idx = (ki & _U7F) << _U1
    scale = _from_bits(_EXP_TAB[idx + _U1] + (ki << _U45))
    head = r + _from_bits(_EXP_TAB[idx])
    r2 = r * r
    tmp = _fma(r2 * r2, _fma(r, _C5, _C4), _fma(_fma(r, _C3, _C2), r2, head))
    return _fma(scale, tmp, scale)


@njit(**_JIT, inline="always")
def _exp_in_range(x: float) -> bool:
    """|x| < 512 (NaN and inf excluded): where ``_exp_fast`` is glibc's exp."""
    return ((_bits(x) >> _U52) & _U7FF) < _U408


# -- activations (activations.py, value for value) ----------------------------------------------------------
@njit(**_JIT, inline="always")
def _heaviside0(x: float) -> float:
    """np.heaviside(x, 0)."""
    if x != x:
        return x
    return 1.0 if x > 0.0 else 0.0


@njit(**_JIT, inline="always")
def _phi(code: int, x: float) -> float:
    """phi(x) with libm, exactly as NumPy computes it."""
    if code == 0:  # logistic
        return 1.0 / (1.0 + math.exp(-x))
    if code == 1:
        return math.tanh(x)
    if code == 2:  # np.maximum(x, 0): NaN propagates
        return x if (x >= 0.0 or x != x) else 0.0
    if code == 3:
        return math.log(1.0 + math.exp(x))
    if code == 4:
        return x
    s = x / 6.0 + 0.5  # hard sigmoid: np.maximum(0, np.minimum(1, s))
    m = 1.0 if 1.0 <= s else s
    return 0.0 if 0.0 >= m else m


@njit(**_JIT, inline="always")
def _phi_prime(code: int, x: float) -> float:
    if code == 0:
        y = 1.0 / (1.0 + math.exp(-x))
        return y * (1.0 - y)
    if code == 1:
        y = math.tanh(x)
        return 1.0 - y * y
    if code == 2:
        return _heaviside0(x)
    if code == 3:
        return 1.0 / (1.0 + math.exp(-x))
    if code == 4:
        return 1.0
    s = x / 6.0 + 0.5
    return _heaviside0(s) * _heaviside0(1.0 - s)


@njit(**_JIT, inline="always")
def _phi4(code: int, x0: float, x1: float, x2: float, x3: float) -> tuple[float, float, float, float, bool]:
    """phi of four neighbours at once (vectorised for the logistic), and whether all were in the fast range.

    When the flag is False the caller recomputes the block with ``_phi`` (libm), so results never depend on it.
    """
    if code == 0:
        e0, e1, e2, e3 = _exp_fast(-x0), _exp_fast(-x1), _exp_fast(-x2), _exp_fast(-x3)
        ok = _exp_in_range(-x0) & _exp_in_range(-x1) & _exp_in_range(-x2) & _exp_in_range(-x3)
        return 1.0 / (1.0 + e0), 1.0 / (1.0 + e1), 1.0 / (1.0 + e2), 1.0 / (1.0 + e3), ok
    return _phi(code, x0), _phi(code, x1), _phi(code, x2), _phi(code, x3), True


# -- legacy RandomState (numpy/random/src/mt19937 and legacy-distributions.c), bit for bit --------------------
# The generator state of run r is (mt_key[r], mt_pos[r], mt_has_gauss[r], mt_cached[r]) as in RandomState.get_state;
# mt_out[r] holds the 624 tempered outputs of mt_key[r], refreshed at every twist, so a draw is a plain load.
# (Helpers that take arrays are kept out of the hot loops: each call or view costs reference counting.)
@njit(**_JIT)
def _temper(mt_key: np.ndarray, mt_out: np.ndarray, r: int) -> None:
    key, out = mt_key[r], mt_out[r]
    for i in range(624):
        y = key[i]
        y ^= y >> 11
        y ^= (y << 7) & 0x9D2C5680
        y ^= (y << 15) & 0xEFC60000
        y ^= y >> 18
        out[i] = y


@njit(**_JIT)
def _temper_all(mt_key: np.ndarray, mt_out: np.ndarray) -> None:
    for r in range(mt_key.shape[0]):
        _temper(mt_key, mt_out, r)


@njit(**_JIT)
def _refill(mt_key: np.ndarray, mt_out: np.ndarray, r: int) -> None:
    """mt19937_gen: regenerate the 624 words in place, then temper them.

    The words are stored as uint32 (computed in wider integers, truncated on store), which lets the compiler
    use eight of them per AVX2 operation: twice as fast as int64 storage.
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


@njit(**_JIT, inline="always")
def _polar(a1: int, b1: int, a2: int, b2: int) -> tuple[float, float, float]:
    """Two legacy doubles in [-1, 1) from four words, and their squared radius (legacy_gauss)."""
    x1 = 2.0 * (((a1 >> 5) * 67108864.0 + (b1 >> 6)) / 9007199254740992.0) - 1.0
    x2 = 2.0 * (((a2 >> 5) * 67108864.0 + (b2 >> 6)) / 9007199254740992.0) - 1.0
    return x1, x2, x1 * x1 + x2 * x2


@njit(**_JIT)
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


@njit(**_JIT, inline="always")
def _normals(mt_key: np.ndarray, mt_out: np.ndarray, q: int, pos: int, has_gauss: int, cached: float, m: int,
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


@njit(**_JIT, inline="always")
def _next_presentation(pattern: int, shown: int, per_pattern: int, n_patterns: int) -> tuple[int, int]:
    """One step on in the presentation sequence: (pattern, steps it was shown), all uint64. Counters, not a
    division per step; the sequence wraps, since settling may outlast an epoch."""
    shown += U1
    if shown == per_pattern:
        shown, pattern = U0, pattern + U1
        if pattern == n_patterns:
            pattern = U0
    return pattern, shown


@njit(**_JIT, inline="always")
def _redraws(all_zero: bool, counter: int, period: float, period_int: int) -> bool:
    """Whether a layer draws new noise this step (noise.draw_noise): its xi is all zero, or the step counter
    shared by all layers hits the noise period (``period_int``: the period if integral, else 0)."""
    if all_zero or period_int == 1:
        return True
    if period_int > 1:  # an integral period (the usual case): integer modulo, same answer
        return counter % period_int == 0
    return period != 0.0 and (counter % period) == 0.0  # counter % 0.0 is NaN in NumPy: never equal to 0


# -- the kernel ----------------------------------------------------------------------------------------------
def _kernel_options() -> dict[str, object]:
    """numba options of the kernel: no-alias arguments when this numba lets us ask for them.

    The kernel's arrays never overlap; telling LLVM so lets it vectorise more. numba has the flag but no public
    option for it; without it the kernel computes the same, only slower.
    """
    try:
        from numba.core import compiler, cpu, options

        if not hasattr(cpu.CPUTargetOptions, "noalias"):
            cpu.CPUTargetOptions.noalias = options.TargetOptions.Mapping("noalias")
        if not cpu.CPUTargetOptions.parse_as_flags(compiler.Flags(), {"noalias": True}).noalias:
            raise ValueError("noalias not honoured")
        return dict(_JIT, noalias=True)
    except Exception:  # pragma: no cover - depends on numba internals
        return dict(_JIT)


_KERNEL_OPTIONS = _kernel_options()


# Speed notes (measured on the Fig. 3abc network; they shape how the loops below are written):
# * indices are unsigned (np.uint64): numba checks signed indices for negative values at every access, which
#   blocks vectorisation and doubled the cost of these short loops; U1 etc. keep the arithmetic unsigned;
# * per-neuron loops run over whole blocks of four, loads before stores, which LLVM's SLP vectoriser turns into
#   AVX2 operations (see ``_compiling``); layers are padded to multiples of four with zeros, and padded lanes
#   never feed a real value (every sum over presynaptic neurons runs over the real ones only);
# * mat-vecs keep eight (then four) outputs in registers while summing over the presynaptic neurons (3x faster
#   than an axpy per presynaptic neuron); the arrays are declared non-aliasing (``_kernel_options``);
# * increments are applied in the same pass that computes them and stored only at a segment's last step
#   (before that they are overwritten unseen), which halves the traffic through the weight matrices;
# * no helper that takes arrays is called per step (each call costs reference counting), except rarely; an
#   inlined helper still does (tried for the mat-vecs: slower);
# * flags accumulated over a loop live in locals, combined with ``&`` (an array element or ``and`` in the loop
#   serialises it); MT19937 words are stored as uint32, eight per AVX2 operation (a twist costs ~0.3 us).
# Where the time goes (Fig. 3abc, PAL, bw_only; cycle counters around the blocks): ~25 % noise (of which ~15 %
# the polar method's candidate loop and twists, ~6 % libm's log), ~20 % mat-vecs, ~12-15 % weight updates,
# ~12 % lookahead and rates, the rest elementwise. Summing the mat-vecs over even and odd b separately (more
# independent chains) did not help: they are not latency-bound. Nor did applying a step's B^PP and B^PI
# updates in the next step's v^api mat-vec (one pass over those weights per step instead of two): 2.05 against
# 1.94 us per seed-step, best of 12 chunks alternating.


@njit(**_KERNEL_OPTIONS)
def _advance_segment(uP, uP_old, uP_breve, rP, rHI, vbas, noise, r_LO, post_LO,
                     uI, uI_old, uI_breve, rI, vden, vapi, vapi_noise,
                     WPP, dWPP, dWPP_LO, WIP, dWIP, BPP, dBPP, BPI, dBPI,
                     r0, r0_LO, hi_rec, counter, mt_key, mt_out, mt_pos, mt_has_gauss, mt_cached,
                     patterns, targets, order, first, n_steps, settling, per_pattern, layers, acts, dt, rp, lp, fl,
                     forward, lateral, feedback, has_target):  # pragma: no cover - compiled
    """Advance every run by ``n_steps`` steps (the first is step ``first``) of one phase (settling or one epoch).

    The pattern of a step is picked as ``Simulation._prepare_step`` does: the unshuffled sequence while settling
    (``first <= settling``), else ``order[r]``, each pattern for ``per_pattern`` steps. The learning flags and
    ``has_target`` are those of the phase. At the last step every increment is stored (earlier ones are not
    observable), and ``hi_rec`` receives r^HI as the recorder sees it (before that step's high-pass update).
    Indices: i = engine list entry, a = postsynaptic (or only) neuron, b = presynaptic neuron; weights are
    stored as W[r, i, b, a].
    """
    R, n_steps = np.uint64(order.shape[0]), np.uint64(n_steps)
    n_patterns, Tp, S, first = np.uint64(order.shape[1]), np.uint64(per_pattern), np.uint64(settling), np.uint64(first)
    settle = first <= S  # a segment never spans the end of settling
    within = (first - U1) % (n_patterns * Tp) if settle else (first - S - U1) % (n_patterns * Tp)
    nL, Wd = layers.shape[0] - 1, uP.shape[2]
    L = np.uint64(nL)
    H = L - U1
    n_in = layers[0]
    n4 = (layers + U3) // U4 * U4  # padded layer sizes
    nH = max(nL - 1, 1)
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
        a_I, tau_I, tau_out_notgt = rp[r, RP_A_I], rp[r, RP_TAU_I], rp[r, RP_TAU_OUT_NOTGT]
        gbas, gapi, gden, gnI, gntgt = rp[r, RP_GBAS], rp[r, RP_GAPI], rp[r, RP_GDEN], rp[r, RP_GNI], rp[r, RP_GNTGT]
        lo, hp = rp[r, RP_LO], rp[r, RP_HP]
        c_hid, c_out, c_den = rp[r, RP_C_HID], rp[r, RP_C_OUT], rp[r, RP_C_DEN]
        inv_tauxi, sqrt_dt_tauxi, period = rp[r, RP_INV_TAUXI], rp[r, RP_SQRT_DT_TAUXI], rp[r, RP_PERIOD]
        tau_out = lp[r, LP_TAU_P, L - U1]
        is_bp, is_pal, ou, mode = fl[r, FL_BP] != 0, fl[r, FL_PAL] != 0, fl[r, FL_OU] != 0, fl[r, FL_MODE]
        use_act, hi_pass, w_lo = fl[r, FL_USE_ACT] != 0, fl[r, FL_HI_PASS] != 0, fl[r, FL_W_LO] != 0
        r_lp, post_lp, inter_lp = fl[r, FL_R_LP] != 0, fl[r, FL_POST_LP] != 0, fl[r, FL_INTER_LP] != 0
        gate, varphi, period_int = fl[r, FL_GATE] != 0, fl[r, FL_VARPHI] != 0, fl[r, FL_PERIOD_INT]
        pos, has_gauss, cached = np.uint64(mt_pos[r]), mt_has_gauss[r], mt_cached[r]
        pattern, shown = within // Tp, within % Tp  # place in the sequence: pattern and steps it was shown

        for j in range(n_steps):
            last = j == n_steps - U1
            smp = pattern if settle else np.uint64(order[r, pattern])
            pattern, shown = _next_presentation(pattern, shown, Tp, n_patterns)

            # ---- step 1: lookahead u-breve = u_old + taur tau (u - u_old) / dt and rates phi(u-breve),
            # keeping the old rates; then the new input
            for i in range(L):
                n, a_P, code = n4[i + U1], lp[r, LP_A_P, i], acts[i]
                ok = True
                for a in range(U0, n, U4):
                    a1, a2, a3 = a + U1, a + U2, a + U3
                    o0, o1, o2, o3 = uP_old[r, i, a], uP_old[r, i, a1], uP_old[r, i, a2], uP_old[r, i, a3]
                    u0, u1, u2, u3 = uP[r, i, a], uP[r, i, a1], uP[r, i, a2], uP[r, i, a3]
                    q0, q1, q2, q3 = rP[r, i, a], rP[r, i, a1], rP[r, i, a2], rP[r, i, a3]
                    b0, b1, b2, b3 = (o0 + a_P * (u0 - o0) / dt, o1 + a_P * (u1 - o1) / dt,
                                      o2 + a_P * (u2 - o2) / dt, o3 + a_P * (u3 - o3) / dt)
                    p0, p1, p2, p3, ok4 = _phi4(code, b0, b1, b2, b3)
                    ok &= ok4
                    rP_old[i, a], rP_old[i, a1], rP_old[i, a2], rP_old[i, a3] = q0, q1, q2, q3
                    uP_breve[r, i, a], uP_breve[r, i, a1], uP_breve[r, i, a2], uP_breve[r, i, a3] = b0, b1, b2, b3
                    uP_old[r, i, a], uP_old[r, i, a1], uP_old[r, i, a2], uP_old[r, i, a3] = u0, u1, u2, u3
                    rP[r, i, a], rP[r, i, a1], rP[r, i, a2], rP[r, i, a3] = p0, p1, p2, p3
                if not ok:
                    for a in range(n):
                        rP[r, i, a] = _phi(code, uP_breve[r, i, a])
            for i in range(H):
                n, code = n4[i + U2], acts[i + U1]
                ok = True
                for a in range(U0, n, U4):
                    a1, a2, a3 = a + U1, a + U2, a + U3
                    o0, o1, o2, o3 = uI_old[r, i, a], uI_old[r, i, a1], uI_old[r, i, a2], uI_old[r, i, a3]
                    u0, u1, u2, u3 = uI[r, i, a], uI[r, i, a1], uI[r, i, a2], uI[r, i, a3]
                    q0, q1, q2, q3 = rI[r, i, a], rI[r, i, a1], rI[r, i, a2], rI[r, i, a3]
                    b0, b1, b2, b3 = (o0 + a_I * (u0 - o0) / dt, o1 + a_I * (u1 - o1) / dt,
                                      o2 + a_I * (u2 - o2) / dt, o3 + a_I * (u3 - o3) / dt)
                    p0, p1, p2, p3, ok4 = _phi4(code, b0, b1, b2, b3)
                    ok &= ok4
                    rI_old[i, a], rI_old[i, a1], rI_old[i, a2], rI_old[i, a3] = q0, q1, q2, q3
                    uI_breve[r, i, a], uI_breve[r, i, a1], uI_breve[r, i, a2], uI_breve[r, i, a3] = b0, b1, b2, b3
                    uI_old[r, i, a], uI_old[r, i, a1], uI_old[r, i, a2], uI_old[r, i, a3] = u0, u1, u2, u3
                    rI[r, i, a], rI[r, i, a1], rI[r, i, a2], rI[r, i, a3] = p0, p1, p2, p3
                if not ok:
                    for a in range(n):
                        rI[r, i, a] = _phi(code, uI_breve[r, i, a])
            for b in range(n_in):
                r0_old[b] = r0[r, b]
                r0[r, b] = patterns[r, smp, b]

            # ---- step 4, first part (it needs vbas, vden and vapi of the previous step, so it runs before
            # step 2): postsynaptic factors of the increments and the rate filters (dynamics._forward_increments)
            need_fw = forward or last
            for i in range(L):
                n, code = n4[i + U1], acts[i]
                c = c_out if i == L - U1 else c_hid
                if need_fw or post_lp:
                    if use_act:  # r-breve - phi(c v^bas_old)
                        ok = True
                        for a in range(U0, n, U4):
                            a1, a2, a3 = a + U1, a + U2, a + U3
                            p0, p1, p2, p3, ok4 = _phi4(code, c * vbas[r, i, a], c * vbas[r, i, a1],
                                                        c * vbas[r, i, a2], c * vbas[r, i, a3])
                            ok &= ok4
                            postP[i, a], postP[i, a1] = rP[r, i, a] - p0, rP[r, i, a1] - p1
                            postP[i, a2], postP[i, a3] = rP[r, i, a2] - p2, rP[r, i, a3] - p3
                        if not ok:
                            for a in range(n):
                                postP[i, a] = rP[r, i, a] - _phi(code, c * vbas[r, i, a])
                    else:  # u-breve - c v^bas_old
                        for a in range(n):
                            postP[i, a] = uP_breve[r, i, a] - c * vbas[r, i, a]
                if r_lp:  # low-passed presynaptic rates: input, then pyramidal layer i-1
                    if i == U0:
                        for b in range(n_in):
                            r0_LO[r, b] = r0_LO[r, b] + lo * (r0_old[b] - r0_LO[r, b])
                    else:
                        for b in range(layers[i]):
                            r_LO[r, i - U1, b] = r_LO[r, i - U1, b] + lo * (rP_old[i - U1, b] - r_LO[r, i - U1, b])
                if post_lp:
                    for a in range(n):
                        post_LO[r, i, a] = post_LO[r, i, a] + lo * (postP[i, a] - post_LO[r, i, a])
                        postP[i, a] = post_LO[r, i, a]
            if lateral or last:
                for i in range(H):
                    n, code = n4[i + U2], acts[i + U1]
                    # With eta_IP = 0 the update adds 0 * (finite) = +-0, i.e. leaves W^IP as it is (up to the
                    # sign of a zero weight), unless a NaN or inf is about: then it is computed as usual. Only at
                    # the segment's last step is the (zero) increment itself observable.
                    skip = not last and lp[r, LP_DT_ETA_IP, i] == 0.0 and (code == 0 or code == 1 or code == 5)
                    if skip:  # bounded activation: post is finite unless r^I or v^den_old is NaN
                        # (branch-free tests into a local: a reduction the compiler vectorises)
                        for a in range(layers[i + U2]):
                            skip &= (rI[r, i, a] == rI[r, i, a]) & (vden[r, i, a] == vden[r, i, a])
                        for b in range(layers[i + U1]):
                            skip &= abs(rP_old[i, b]) < 1e300  # so post * pre stays finite
                    skip_wip[i] = skip
                    if skip:
                        for a in range(n4[i + U1]):
                            neg_vapi_old[i, a] = -vapi[r, i, a]
                        continue
                    ok = True
                    for a in range(U0, n, U4):  # r^I - phi(g_den/(g_l+g_den) v^den_old)
                        a1, a2, a3 = a + U1, a + U2, a + U3
                        p0, p1, p2, p3, ok4 = _phi4(code, c_den * vden[r, i, a], c_den * vden[r, i, a1],
                                                    c_den * vden[r, i, a2], c_den * vden[r, i, a3])
                        ok &= ok4
                        postI[i, a], postI[i, a1] = rI[r, i, a] - p0, rI[r, i, a1] - p1
                        postI[i, a2], postI[i, a3] = rI[r, i, a2] - p2, rI[r, i, a3] - p3
                    if not ok:
                        for a in range(n):
                            postI[i, a] = rI[r, i, a] - _phi(code, c_den * vden[r, i, a])
                    for a in range(n4[i + U1]):
                        neg_vapi_old[i, a] = -vapi[r, i, a]

            # ---- step 2: dendritic potentials. Each mat-vec y = W x sums over the real presynaptic b in order;
            # eight (then four) outputs at a time are held in registers.
            for i in range(L):  # v^bas_i = W^PP_i r_{i-1}
                n, n_pre = n4[i + U1], layers[i]
                if i == U0:
                    for b in range(n_pre):
                        x[b] = r0[r, b]
                else:
                    for b in range(n_pre):
                        x[b] = rP[r, i - U1, b]
                a = U0
                while a + U8 <= n:  # eight outputs at a time in registers, then four
                    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
                    for b in range(n_pre):
                        xb = x[b]
                        s0 += WPP[r, i, b, a] * xb
                        s1 += WPP[r, i, b, a + U1] * xb
                        s2 += WPP[r, i, b, a + U2] * xb
                        s3 += WPP[r, i, b, a + U3] * xb
                        s4 += WPP[r, i, b, a + U4] * xb
                        s5 += WPP[r, i, b, a + U5] * xb
                        s6 += WPP[r, i, b, a + U6] * xb
                        s7 += WPP[r, i, b, a + U7] * xb
                    vbas[r, i, a], vbas[r, i, a + U1], vbas[r, i, a + U2], vbas[r, i, a + U3] = s0, s1, s2, s3
                    vbas[r, i, a + U4], vbas[r, i, a + U5], vbas[r, i, a + U6], vbas[r, i, a + U7] = s4, s5, s6, s7
                    a += U8
                if a < n:
                    s0 = s1 = s2 = s3 = 0.0
                    for b in range(n_pre):
                        xb = x[b]
                        s0 += WPP[r, i, b, a] * xb
                        s1 += WPP[r, i, b, a + U1] * xb
                        s2 += WPP[r, i, b, a + U2] * xb
                        s3 += WPP[r, i, b, a + U3] * xb
                    vbas[r, i, a], vbas[r, i, a + U1], vbas[r, i, a + U2], vbas[r, i, a + U3] = s0, s1, s2, s3
            for i in range(H):  # v^den_i = W^IP_i r_i, low-passed with inter_low_pass
                n, n_pre = n4[i + U2], layers[i + U1]
                a = U0
                while a + U8 <= n:  # eight outputs at a time in registers, then four
                    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
                    for b in range(n_pre):
                        xb = rP[r, i, b]
                        s0 += WIP[r, i, b, a] * xb
                        s1 += WIP[r, i, b, a + U1] * xb
                        s2 += WIP[r, i, b, a + U2] * xb
                        s3 += WIP[r, i, b, a + U3] * xb
                        s4 += WIP[r, i, b, a + U4] * xb
                        s5 += WIP[r, i, b, a + U5] * xb
                        s6 += WIP[r, i, b, a + U6] * xb
                        s7 += WIP[r, i, b, a + U7] * xb
                    y[a], y[a + U1], y[a + U2], y[a + U3] = s0, s1, s2, s3
                    y[a + U4], y[a + U5], y[a + U6], y[a + U7] = s4, s5, s6, s7
                    a += U8
                if a < n:
                    s0 = s1 = s2 = s3 = 0.0
                    for b in range(n_pre):
                        xb = rP[r, i, b]
                        s0 += WIP[r, i, b, a] * xb
                        s1 += WIP[r, i, b, a + U1] * xb
                        s2 += WIP[r, i, b, a + U2] * xb
                        s3 += WIP[r, i, b, a + U3] * xb
                    y[a], y[a + U1], y[a + U2], y[a + U3] = s0, s1, s2, s3
                if inter_lp:
                    for a in range(n):
                        vden[r, i, a] = vden[r, i, a] + lo * (y[a] - vden[r, i, a])
                else:
                    for a in range(n):
                        vden[r, i, a] = y[a]
            for i in range(H):  # v^api_i = B^PP_i r_{i+1} + B^PI_i r^I_i; the soma gets + xi (the old noise)
                n, n_pre = n4[i + U1], layers[i + U2]
                a = U0
                while a + U8 <= n:  # eight outputs at a time in registers, then four
                    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
                    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = 0.0
                    for b in range(n_pre):
                        xb, xc = rP[r, i + U1, b], rI[r, i, b]
                        s0 += BPP[r, i, b, a] * xb
                        s1 += BPP[r, i, b, a + U1] * xb
                        s2 += BPP[r, i, b, a + U2] * xb
                        s3 += BPP[r, i, b, a + U3] * xb
                        s4 += BPP[r, i, b, a + U4] * xb
                        s5 += BPP[r, i, b, a + U5] * xb
                        s6 += BPP[r, i, b, a + U6] * xb
                        s7 += BPP[r, i, b, a + U7] * xb
                        t0 += BPI[r, i, b, a] * xc
                        t1 += BPI[r, i, b, a + U1] * xc
                        t2 += BPI[r, i, b, a + U2] * xc
                        t3 += BPI[r, i, b, a + U3] * xc
                        t4 += BPI[r, i, b, a + U4] * xc
                        t5 += BPI[r, i, b, a + U5] * xc
                        t6 += BPI[r, i, b, a + U6] * xc
                        t7 += BPI[r, i, b, a + U7] * xc
                    v0, v1, v2, v3 = s0 + t0, s1 + t1, s2 + t2, s3 + t3
                    vapi[r, i, a], vapi[r, i, a + U1], vapi[r, i, a + U2], vapi[r, i, a + U3] = v0, v1, v2, v3
                    vapi_noise[r, i, a], vapi_noise[r, i, a + U1] = v0 + noise[r, i, a], v1 + noise[r, i, a + U1]
                    vapi_noise[r, i, a + U2], vapi_noise[r, i, a + U3] = v2 + noise[r, i, a + U2], v3 + noise[r, i, a + U3]
                    v4, v5, v6, v7 = s4 + t4, s5 + t5, s6 + t6, s7 + t7
                    vapi[r, i, a + U4], vapi[r, i, a + U5], vapi[r, i, a + U6], vapi[r, i, a + U7] = v4, v5, v6, v7
                    vapi_noise[r, i, a + U4], vapi_noise[r, i, a + U5] = v4 + noise[r, i, a + U4], v5 + noise[r, i, a + U5]
                    vapi_noise[r, i, a + U6], vapi_noise[r, i, a + U7] = v6 + noise[r, i, a + U6], v7 + noise[r, i, a + U7]
                    a += U8
                if a < n:
                    s0 = s1 = s2 = s3 = 0.0
                    t0 = t1 = t2 = t3 = 0.0
                    for b in range(n_pre):
                        xb, xc = rP[r, i + U1, b], rI[r, i, b]
                        s0 += BPP[r, i, b, a] * xb
                        s1 += BPP[r, i, b, a + U1] * xb
                        s2 += BPP[r, i, b, a + U2] * xb
                        s3 += BPP[r, i, b, a + U3] * xb
                        t0 += BPI[r, i, b, a] * xc
                        t1 += BPI[r, i, b, a + U1] * xc
                        t2 += BPI[r, i, b, a + U2] * xc
                        t3 += BPI[r, i, b, a + U3] * xc
                    v0, v1, v2, v3 = s0 + t0, s1 + t1, s2 + t2, s3 + t3
                    vapi[r, i, a], vapi[r, i, a + U1], vapi[r, i, a + U2], vapi[r, i, a + U3] = v0, v1, v2, v3
                    vapi_noise[r, i, a], vapi_noise[r, i, a + U1] = v0 + noise[r, i, a], v1 + noise[r, i, a + U1]
                    vapi_noise[r, i, a + U2], vapi_noise[r, i, a + U3] = v2 + noise[r, i, a + U2], v3 + noise[r, i, a + U3]

            # ---- step 3a: PAL noise (noise.draw_noise). Which layers redraw (xi all zero, or the counter
            # shared by all layers hits the period) does not depend on the draws, so it is settled first and
            # the step's normals are drawn in one batch, in the order draw_noise consumes them.
            if feedback and is_pal:
                m = U0
                for i in range(H):
                    zero = True
                    for a in range(layers[i + U1]):
                        if noise[r, i, a] != 0.0:
                            zero = False
                            break
                    redraw[i] = _redraws(zero, counter[r], period, period_int)
                    if redraw[i]:
                        counter[r] = 0
                        m += layers[i + U1]
                    counter[r] += 1
                pos, has_gauss, cached = _normals(mt_key, mt_out, r, pos, has_gauss, cached, m, gbuf, pairs)
                k = U0
                for i in range(H):
                    if not redraw[i]:
                        continue
                    n, scale = layers[i + U1], lp[r, LP_SCALE, i]
                    # white = scale * normal(0, sigma) = scale * (0 + sigma * g): sigma is 1, |u^P| (before this
                    # step's update), |u-breve^P| or |v^api| by the noise mode
                    for a in range(n):
                        if mode == 0:
                            white[a] = scale * (0.0 + 1.0 * gbuf[k + a])
                        elif mode == 1:
                            white[a] = scale * (0.0 + abs(uP[r, i, a]) * gbuf[k + a])
                        elif mode == 2:
                            white[a] = scale * (0.0 + abs(uP_breve[r, i, a]) * gbuf[k + a])
                        else:
                            white[a] = scale * (0.0 + abs(vapi[r, i, a]) * gbuf[k + a])
                    k += n
                    if ou:
                        for a in range(n):
                            xi = noise[r, i, a]
                            noise[r, i, a] = xi + inv_tauxi * (-dt * xi + sqrt_dt_tauxi * white[a])
                    else:
                        for a in range(n):
                            noise[r, i, a] = white[a]

            # ---- step 3b: somatic increments (the soma sees the previous step's noise via vapi_noise)
            for i in range(H):
                for a in range(n4[i + U2]):
                    dUI[i, a] = dt * ((tau_I * (gden * vden[r, i, a] + gnI * uP_breve[r, i + U1, a]) - uI[r, i, a]) / tau_I)
            noisy = is_pal and feedback
            for i in range(H):
                tau = lp[r, LP_TAU_P, i]
                if noisy:
                    for a in range(n4[i + U1]):
                        dUP[i, a] = dt * ((tau * (gbas * vbas[r, i, a] + gapi * vapi_noise[r, i, a]) - uP[r, i, a]) / tau)
                else:
                    for a in range(n4[i + U1]):
                        dUP[i, a] = dt * ((tau * (gbas * vbas[r, i, a] + gapi * vapi[r, i, a]) - uP[r, i, a]) / tau)
            if has_target:
                for a in range(n4[L]):
                    drive = tau_out * (gbas * vbas[r, H, a] + gntgt * targets[r, smp, a])
                    dUP[H, a] = dt * ((drive - uP[r, H, a]) / tau_out)
            else:  # target-free drive, nudged time constant in the division (dynamics.py)
                for a in range(n4[L]):
                    drive = tau_out_notgt * (gbas * vbas[r, H, a])
                    dUP[H, a] = dt * ((drive - uP[r, H, a]) / tau_out)

            # ---- step 4, rest, and step 5 (apply). BP's reset reads W^PP before this step's update
            # (dynamics.py order), so it comes first.
            if is_bp:  # feedback.reset_bp_feedback: B^PP = (W^PP_{i+1})^T, B^PI = -B^PP
                for i in range(H):
                    for b in range(layers[i + U2]):
                        for a in range(n4[i + U1]):
                            w = WPP[r, i + U1, a, b]
                            BPP[r, i, b, a] = w
                            BPI[r, i, b, a] = -w
            if is_pal and varphi and (feedback or last):
                for i in range(H):
                    code = acts[i]
                    for a in range(layers[i + U1]):
                        slope[i, a] = _phi_prime(code, uP_breve[r, i, a])
            if last:
                # The segment's last step: store every increment (the recorder may read them), then apply
                # those the phase allows. Same formulas as the fused passes below, so the same bits.
                for i in range(H):
                    n, n_int, n_pyr = n4[i + U1], n4[i + U2], layers[i + U1]
                    eta_PI, eta_PI_on = lp[r, LP_DT_ETA_PI, i], lp[r, LP_ETA_PI_ON, i] != 0.0
                    eta_bw, decay, eta_IP = lp[r, LP_DT_ETA_BW, i], lp[r, LP_DECAY, i], lp[r, LP_DT_ETA_IP, i]
                    for b in range(layers[i + U2]):
                        # dB^PI = dt eta_PI (-v^api_old) (x) r^I_old, zero when eta_PI = 0
                        pre = rI_old[i, b]
                        for a in range(n):
                            dBPI[r, i, b, a] = eta_PI * (neg_vapi_old[i, a] * pre) if eta_PI_on else 0.0
                        # dB^PP (feedback.pal_feedback_increment) with this step's noise; zero for BP and FA
                        r_pre = rHI[r, i + U1, b] if hi_pass else rP[r, i + U1, b]
                        h, s_pre = _heaviside0(r_pre), slope[i + U1, b]
                        for a in range(n):
                            if not is_pal:
                                d = 0.0
                            elif gate:
                                d = eta_bw * (noise[r, i, a] * r_pre) - decay * BPP[r, i, b, a] * h
                            elif varphi:
                                d = eta_bw * (noise[r, i, a] * r_pre) - ((decay * slope[i, a]) * BPP[r, i, b, a]) * s_pre
                            else:
                                d = eta_bw * (noise[r, i, a] * r_pre) - decay * BPP[r, i, b, a]
                            dBPP[r, i, b, a] = d
                    for b in range(n_pyr):  # dW^IP = dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
                        pre = rP_old[i, b]
                        for a in range(n_int):
                            dWIP[r, i, b, a] = eta_IP * (postI[i, a] * pre)
                for i in range(L):  # dW^PP = dt eta_fw post (x) pre
                    n, eta = n4[i + U1], lp[r, LP_DT_ETA_FW, i]
                    for b in range(layers[i]):
                        if r_lp:
                            pre = r0_LO[r, b] if i == U0 else r_LO[r, i - U1, b]
                        else:
                            pre = r0_old[b] if i == U0 else rP_old[i - U1, b]
                        for a in range(n):
                            dWPP[r, i, b, a] = eta * (postP[i, a] * pre)
                for i in range(H):
                    for b in range(layers[i + U2]):
                        for a in range(n4[i + U1]):
                            if lateral:
                                BPI[r, i, b, a] = BPI[r, i, b, a] + dBPI[r, i, b, a]
                            if feedback:
                                BPP[r, i, b, a] = BPP[r, i, b, a] + dBPP[r, i, b, a]
                    if lateral:
                        for b in range(layers[i + U1]):
                            for a in range(n4[i + U2]):
                                WIP[r, i, b, a] = WIP[r, i, b, a] + dWIP[r, i, b, a]
                if forward:
                    for i in range(L):
                        for b in range(layers[i]):
                            for a in range(n4[i + U1]):
                                if w_lo:  # PAL moves W^PP by the low-pass of its increments
                                    lo_d = dWPP_LO[r, i, b, a] + lo * (dWPP[r, i, b, a] - dWPP_LO[r, i, b, a])
                                    dWPP_LO[r, i, b, a] = lo_d
                                    WPP[r, i, b, a] = WPP[r, i, b, a] + lo_d
                                else:
                                    WPP[r, i, b, a] = WPP[r, i, b, a] + dWPP[r, i, b, a]
            else:
                # Any other step: increments are only applied (they are overwritten unseen), each fused with
                # its update in one pass, four neighbours at a time.
                if lateral:
                    for i in range(H):
                        n, eta_PI, eta_IP = n4[i + U1], lp[r, LP_DT_ETA_PI, i], lp[r, LP_DT_ETA_IP, i]
                        if lp[r, LP_ETA_PI_ON, i] != 0.0:  # B^PI += dt eta_PI (-v^api_old) (x) r^I_old
                            for b in range(layers[i + U2]):
                                pre = rI_old[i, b]
                                for a in range(U0, n, U4):
                                    a1, a2, a3 = a + U1, a + U2, a + U3
                                    m0, m1 = neg_vapi_old[i, a], neg_vapi_old[i, a1]
                                    m2, m3 = neg_vapi_old[i, a2], neg_vapi_old[i, a3]
                                    w0, w1, w2, w3 = BPI[r, i, b, a], BPI[r, i, b, a1], BPI[r, i, b, a2], BPI[r, i, b, a3]
                                    BPI[r, i, b, a], BPI[r, i, b, a1] = w0 + eta_PI * (m0 * pre), w1 + eta_PI * (m1 * pre)
                                    BPI[r, i, b, a2], BPI[r, i, b, a3] = w2 + eta_PI * (m2 * pre), w3 + eta_PI * (m3 * pre)
                        else:  # B^PI += 0
                            for b in range(layers[i + U2]):
                                for a in range(n):
                                    BPI[r, i, b, a] = BPI[r, i, b, a] + 0.0
                        n = n4[i + U2]
                        if skip_wip[i]:
                            continue
                        for b in range(layers[i + U1]):  # W^IP += dt eta_IP (r^I - phi(c v^den_old)) (x) r_old
                            pre = rP_old[i, b]
                            for a in range(U0, n, U4):
                                a1, a2, a3 = a + U1, a + U2, a + U3
                                m0, m1, m2, m3 = postI[i, a], postI[i, a1], postI[i, a2], postI[i, a3]
                                w0, w1, w2, w3 = WIP[r, i, b, a], WIP[r, i, b, a1], WIP[r, i, b, a2], WIP[r, i, b, a3]
                                WIP[r, i, b, a], WIP[r, i, b, a1] = w0 + eta_IP * (m0 * pre), w1 + eta_IP * (m1 * pre)
                                WIP[r, i, b, a2], WIP[r, i, b, a3] = w2 + eta_IP * (m2 * pre), w3 + eta_IP * (m3 * pre)
                if feedback:
                    for i in range(H):
                        n, eta_bw, decay = n4[i + U1], lp[r, LP_DT_ETA_BW, i], lp[r, LP_DECAY, i]
                        if not is_pal:  # BP, FA: B^PP += 0
                            for b in range(layers[i + U2]):
                                for a in range(n):
                                    BPP[r, i, b, a] = BPP[r, i, b, a] + 0.0
                        elif gate or varphi:  # the regularizer variants (feedback.pal_feedback_increment)
                            for b in range(layers[i + U2]):
                                r_pre = rHI[r, i + U1, b] if hi_pass else rP[r, i + U1, b]
                                h, s_pre = _heaviside0(r_pre), slope[i + U1, b]
                                for a in range(n):
                                    if gate:
                                        d = eta_bw * (noise[r, i, a] * r_pre) - decay * BPP[r, i, b, a] * h
                                    else:
                                        reg = ((decay * slope[i, a]) * BPP[r, i, b, a]) * s_pre
                                        d = eta_bw * (noise[r, i, a] * r_pre) - reg
                                    BPP[r, i, b, a] = BPP[r, i, b, a] + d
                        else:  # B^PP += dt eta_bw (xi (x) r_pre - alpha B^PP)
                            for b in range(layers[i + U2]):
                                r_pre = rHI[r, i + U1, b] if hi_pass else rP[r, i + U1, b]
                                for a in range(U0, n, U4):
                                    a1, a2, a3 = a + U1, a + U2, a + U3
                                    z0, z1, z2, z3 = noise[r, i, a], noise[r, i, a1], noise[r, i, a2], noise[r, i, a3]
                                    w0, w1, w2, w3 = BPP[r, i, b, a], BPP[r, i, b, a1], BPP[r, i, b, a2], BPP[r, i, b, a3]
                                    BPP[r, i, b, a] = w0 + (eta_bw * (z0 * r_pre) - decay * w0)
                                    BPP[r, i, b, a1] = w1 + (eta_bw * (z1 * r_pre) - decay * w1)
                                    BPP[r, i, b, a2] = w2 + (eta_bw * (z2 * r_pre) - decay * w2)
                                    BPP[r, i, b, a3] = w3 + (eta_bw * (z3 * r_pre) - decay * w3)
                if forward:
                    for i in range(L):
                        n, eta = n4[i + U1], lp[r, LP_DT_ETA_FW, i]
                        for b in range(layers[i]):
                            if r_lp:
                                pre = r0_LO[r, b] if i == U0 else r_LO[r, i - U1, b]
                            else:
                                pre = r0_old[b] if i == U0 else rP_old[i - U1, b]
                            if w_lo:  # PAL moves W^PP by the low-pass of its increments
                                for a in range(U0, n, U4):
                                    a1, a2, a3 = a + U1, a + U2, a + U3
                                    m0, m1, m2, m3 = postP[i, a], postP[i, a1], postP[i, a2], postP[i, a3]
                                    l0, l1 = dWPP_LO[r, i, b, a], dWPP_LO[r, i, b, a1]
                                    l2, l3 = dWPP_LO[r, i, b, a2], dWPP_LO[r, i, b, a3]
                                    w0, w1, w2, w3 = WPP[r, i, b, a], WPP[r, i, b, a1], WPP[r, i, b, a2], WPP[r, i, b, a3]
                                    l0 = l0 + lo * (eta * (m0 * pre) - l0)
                                    l1 = l1 + lo * (eta * (m1 * pre) - l1)
                                    l2 = l2 + lo * (eta * (m2 * pre) - l2)
                                    l3 = l3 + lo * (eta * (m3 * pre) - l3)
                                    dWPP_LO[r, i, b, a], dWPP_LO[r, i, b, a1] = l0, l1
                                    dWPP_LO[r, i, b, a2], dWPP_LO[r, i, b, a3] = l2, l3
                                    WPP[r, i, b, a], WPP[r, i, b, a1] = w0 + l0, w1 + l1
                                    WPP[r, i, b, a2], WPP[r, i, b, a3] = w2 + l2, w3 + l3
                            else:
                                for a in range(U0, n, U4):
                                    a1, a2, a3 = a + U1, a + U2, a + U3
                                    m0, m1, m2, m3 = postP[i, a], postP[i, a1], postP[i, a2], postP[i, a3]
                                    w0, w1, w2, w3 = WPP[r, i, b, a], WPP[r, i, b, a1], WPP[r, i, b, a2], WPP[r, i, b, a3]
                                    WPP[r, i, b, a], WPP[r, i, b, a1] = w0 + eta * (m0 * pre), w1 + eta * (m1 * pre)
                                    WPP[r, i, b, a2], WPP[r, i, b, a3] = w2 + eta * (m2 * pre), w3 + eta * (m3 * pre)
            for i in range(L):  # somata
                for a in range(n4[i + U1]):
                    uP[r, i, a] = uP[r, i, a] + dUP[i, a]
            for i in range(H):
                for a in range(n4[i + U2]):
                    uI[r, i, a] = uI[r, i, a] + dUI[i, a]
            # (the recorder runs here: it sees r^HI before the update below)
            if last:
                for i in range(L):
                    for a in range(n4[i + U1]):
                        hi_rec[r, i, a] = rHI[r, i, a]
            # high-pass filter of the rates, every step
            for i in range(L):
                for a in range(n4[i + U1]):
                    rHI[r, i, a] = rHI[r, i, a] + ((rP[r, i, a] - rP_old[i, a]) - hp * rHI[r, i, a])

        mt_pos[r], mt_has_gauss[r], mt_cached[r] = np.int64(pos), has_gauss, cached


# -- Python side: parameters, packing, segments ------------------------------------------------------------
_SLP_LOCK = threading.Lock()
_slp_users = [0, 0]  # threads inside _compiling, numba's setting before the first entered


@contextmanager
def _compiling() -> Iterator[None]:
    """Let LLVM's SLP vectoriser (off by default in numba) work on the kernel if this call compiles it.

    The blocks of four in the kernel rely on it for AVX2 code; it does not change any result (no fast-math).
    The setting is read when a function is compiled, so it is restored right after; threads may run the kernel
    at the same time, so the setting is restored when the last of them leaves.
    """
    with _SLP_LOCK:
        if _slp_users[0] == 0:
            _slp_users[1] = numba.config.SLP_VECTORIZE
            numba.config.SLP_VECTORIZE = 1
        _slp_users[0] += 1
    try:
        yield
    finally:
        with _SLP_LOCK:
            _slp_users[0] -= 1
            if _slp_users[0] == 0:
                numba.config.SLP_VECTORIZE = _slp_users[1]


LAYOUTS = ("neurons", "lanes")


def load(layouts: Iterable[str] = LAYOUTS) -> float:
    """Load the kernels of ``layouts`` into this process (from numba's on-disk cache, or compile them once);
    returns the seconds.

    Before a run, so that its first batch does not spend this time (~0.6-1 s, mostly numba's own start-up)
    holding the GIL: the in-process run and a local cluster whose workers share or inherit this process load it
    here (``palmc.runner.load_kernel``), workers that start afresh as they start (``palmc.worker_preload``).
    """
    from palmc.engine.params import ModelParams, Protocol, RunSpec
    from palmc.engine.tasks import Simulation

    start = time.perf_counter()
    params = ModelParams(model="PAL", layers=(1, 1, 1), activations=("logistic",) * 2, eta_fw=(0.0,) * 2,
                         eta_bw=(0.0,), eta_IP=(0.0,), eta_PI=(0.0,), alpha=(0.0,), noise_scale=(0.0,))
    protocol = Protocol(task="bw_only", dataset_size=1, epochs=1, steps_per_presentation=1, settling_steps=1)
    for layout in layouts:
        advance(Simulation([RunSpec(0, "PAL", params, 0, 0)], protocol), 2, layout=layout)
    return time.perf_counter() - start


def cached(layouts: Iterable[str] = LAYOUTS) -> bool:
    """Whether numba's on-disk cache holds a current compilation of the kernels of ``layouts`` (so ``load`` reads
    them in about a second rather than compiling them for a minute). Reads numba's cache index (numba internals:
    any surprise there answers False)."""
    from palmc.engine import kernel_lanes

    segments = {"neurons": _advance_segment, "lanes": kernel_lanes.advance_segment}
    try:
        return all(bool(segments[layout]._cache._cache_file._load_index()) for layout in layouts)
    except Exception:  # noqa: BLE001 - only a hint for the first-run message
        return False


def loaded(layouts: Iterable[str] = LAYOUTS) -> bool:
    """Whether the kernels of ``layouts`` are loaded in this process already."""
    from palmc.engine import kernel_lanes

    segments = {"neurons": _advance_segment, "lanes": kernel_lanes.advance_segment}
    return all(segments[layout].signatures for layout in layouts)


# This kernel vectorises over blocks of four neurons; in a network whose layers have fewer, most of each block is
# padding and runs in the lanes (kernel_lanes.py) do better: 1-1-1 networks 1.4-1.9x faster per seed-step. From
# a few neurons per layer on, the neuron layout is as fast or faster (3-8-3 even, 4-20-4 1.4x and Fig. 3abc
# 1.05-1.5x faster, measured alternately in one process): four runs' weights no longer fit the L1 cache together.
LANES_MAX_WIDTH = 4


def layout_for(sim: "Simulation") -> str:
    """The faster kernel layout for this batch's network: "lanes" if no layer is wider than four, else "neurons"."""
    return layout_for_layers(sim.params.layers)


def layout_for_layers(layers: Iterable[int]) -> str:
    """``layout_for`` of a network with these layer sizes."""
    return "lanes" if max(layers) <= LANES_MAX_WIDTH else "neurons"


def supports(sim: "Simulation") -> bool:
    """True when the kernel reproduces ``sim.advance`` for this batch (every option of the NumPy engine)."""
    p = sim.params
    if {f.name for f in fields(State)} != KNOWN_FIELDS:
        return False  # the state grew a field this kernel does not know
    if len(p.layers) < 2 or any(a not in ACTIVATION_CODES for a in p.activations):
        return False
    if len(p.activations) != len(p.layers) - 1:
        return False
    return all(p.noise_mode[r] in NOISE_MODES for r in np.flatnonzero(p.is_pal))


def _tables(sim: "Simulation") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-run constants, derived with the same NumPy expressions as dynamics.py (so bit-identical)."""
    p, dt = sim.params, sim.params.dt
    R, L = p.n_runs, len(p.layers) - 1
    rp = np.zeros((R, N_RP))
    rp[:, RP_A_I] = p.taur * p.tau_I
    rp[:, RP_TAU_I] = p.tau_I
    rp[:, RP_TAU_OUT_NOTGT] = p.tau_P_out_notgt
    rp[:, RP_GBAS], rp[:, RP_GAPI], rp[:, RP_GDEN], rp[:, RP_GNI], rp[:, RP_GNTGT] = p.gbas, p.gapi, p.gden, p.gnI, p.gntgt
    rp[:, RP_LO] = dt / p.tauLO
    rp[:, RP_HP] = dt / p.tauHP
    rp[:, RP_C_HID] = p.gbas / (p.gl + p.gbas + p.gapi)
    rp[:, RP_C_OUT] = p.gbas / (p.gl + p.gbas)
    rp[:, RP_C_DEN] = p.gden / (p.gl + p.gden)
    rp[:, RP_INV_TAUXI] = 1 / p.tauxi
    rp[:, RP_SQRT_DT_TAUXI] = np.sqrt(dt * p.tauxi)
    rp[:, RP_PERIOD] = p.noise_period
    lp = np.zeros((R, N_LP, L))
    for i in range(L):
        lp[:, LP_TAU_P, i] = p.tau_P[i]
        lp[:, LP_A_P, i] = p.taur * p.tau_P[i]
        lp[:, LP_DT_ETA_FW, i] = dt * p.eta_fw[i]
    for i in range(L - 1):
        lp[:, LP_DT_ETA_IP, i] = dt * p.eta_IP[i]
        lp[:, LP_DT_ETA_PI, i] = dt * p.eta_PI[i]
        lp[:, LP_ETA_PI_ON, i] = p.eta_PI[i] != 0
        lp[:, LP_DT_ETA_BW, i] = dt * p.eta_bw[i]
        lp[:, LP_DECAY, i] = dt * p.alpha[i] * p.eta_bw[i]
        lp[:, LP_SCALE, i] = p.noise_scale[i]
    fl = np.zeros((R, N_FL), dtype=np.int64)
    fl[:, FL_BP], fl[:, FL_PAL], fl[:, FL_OU] = p.is_bp, p.is_pal, p.noise_ou
    fl[:, FL_MODE] = [NOISE_MODES.get(m, 0) for m in p.noise_mode]
    fl[:, FL_USE_ACT], fl[:, FL_HI_PASS], fl[:, FL_W_LO] = p.use_activation, p.pyr_hi_pass, p.dWPP_low_pass
    fl[:, FL_R_LP], fl[:, FL_POST_LP], fl[:, FL_INTER_LP] = p.r_low_pass, p.post_low_pass, p.inter_low_pass
    fl[:, FL_GATE], fl[:, FL_VARPHI] = p.gate_regularizer, p.varphi_regularizer
    integral = (p.noise_period >= 1) & (p.noise_period < 2**52) & (p.noise_period == np.floor(p.noise_period))
    fl[:, FL_PERIOD_INT] = np.where(integral, p.noise_period, 0).astype(np.int64)
    layers = np.asarray(p.layers, dtype=np.uint64)
    acts = np.array([ACTIVATION_CODES[a] for a in p.activations], dtype=np.int64)
    return rp, lp, fl, layers, acts


def _shapes(layers: tuple[int, ...]) -> dict[str, list[tuple[int, ...]]]:
    """Engine list entry shapes (without the run axis) of every packed field."""
    L = len(layers) - 1
    out: dict[str, list[tuple[int, ...]]] = {}
    for name in VEC_P:
        out[name] = [(layers[i + 1],) for i in range(L)]
    for name in VEC_I:
        out[name] = [(layers[i + 2],) for i in range(L - 1)]
    for name in VEC_A:
        out[name] = [(layers[i + 1],) for i in range(L - 1)]
    for name in MAT_W:
        out[name] = [(layers[i + 1], layers[i]) for i in range(L)]
    for name in MAT_I:
        out[name] = [(layers[i + 2], layers[i + 1]) for i in range(L - 1)]
    for name in MAT_B:
        out[name] = [(layers[i + 1], layers[i + 2]) for i in range(L - 1)]
    return out


def _entries(packed: np.ndarray, shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """Views of a packed field in the engine's layout, one per list entry: (R, n), or (R, post, pre) for weights
    (undoing the padding and the transposition)."""
    if packed.ndim == 3:
        return [packed[:, i, :n] for i, (n,) in enumerate(shapes)]
    return [np.swapaxes(packed[:, i, :n_pre, :n_post], 1, 2) for i, (n_post, n_pre) in enumerate(shapes)]


def _per_run_fields(state: State, shapes: dict[str, list[tuple[int, ...]]], width: int,
                    transposed: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Every vector and weight field of ``state`` as one zero-padded array per field, in VEC_FIELDS and MAT_FIELDS
    order: (R, n_entries, width) and (R, n_entries, width, width), weights as W[post, pre] or, ``transposed``,
    as W[pre, post]."""
    R = state.uP[0].shape[0]
    vecs, mats = [], []
    for name in VEC_FIELDS:
        packed = np.zeros((R, max(len(shapes[name]), 1), width))
        for i, (n,) in enumerate(shapes[name]):
            packed[:, i, :n] = getattr(state, name)[i]
        vecs.append(packed)
    for name in MAT_FIELDS:
        packed = np.zeros((R, max(len(shapes[name]), 1), width, width))
        for i, (n_post, n_pre) in enumerate(shapes[name]):
            if transposed:
                packed[:, i, :n_pre, :n_post] = np.swapaxes(getattr(state, name)[i], 1, 2)
            else:
                packed[:, i, :n_post, :n_pre] = getattr(state, name)[i]
        mats.append(packed)
    return vecs, mats


class _Packed:
    """The state of ``sim`` in the kernel's padded, transposed layout (plus the generators' states).

    Built once per ``advance`` call; the kernel updates these arrays in place across all its segments.
    """

    def __init__(self, sim: "Simulation") -> None:
        s, R = sim.state, len(sim.runs)
        self.shapes = _shapes(sim.params.layers)
        self.width = (max(sim.params.layers) + 3) // 4 * 4  # the kernel works on blocks of four
        self.vecs, self.mats = _per_run_fields(s, self.shapes, self.width, transposed=True)
        self.arrays = dict(zip(VEC_FIELDS + MAT_FIELDS, self.vecs + self.mats))
        self.r0 = np.array(s.r0, dtype=np.float64, order="C")
        self.r0_LO = np.array(s.r0_LO, dtype=np.float64, order="C")
        self.counter = np.array(s.noise_counter, dtype=np.int64)
        self.hi_rec = np.zeros_like(self.arrays["rP_breve_HI"])
        self._generators(np.arange(R), R)
        self._views: dict[str, list[np.ndarray]] = {}

    def _generators(self, generator_of_run: np.ndarray, n_generators: int) -> None:
        """Room for the generators' states; run r's is number ``generator_of_run[r]``."""
        self.generator_of_run = generator_of_run
        self.mt_key = np.zeros((n_generators, 624), dtype=np.uint32)
        self.mt_out = np.zeros((n_generators, 624), dtype=np.uint32)  # the tempered words of mt_key (_temper)
        self.mt_pos = np.zeros(n_generators, dtype=np.int64)
        self.mt_has_gauss = np.zeros(n_generators, dtype=np.int64)
        self.mt_cached = np.zeros(n_generators)

    def load_rngs(self, rngs: list[np.random.RandomState]) -> None:
        for q, rng in zip(self.generator_of_run, rngs):
            _, key, pos, has_gauss, cached = rng.get_state()
            self.mt_key[q] = key
            self.mt_pos[q], self.mt_has_gauss[q], self.mt_cached[q] = pos, has_gauss, cached
        _temper_all(self.mt_key, self.mt_out)

    def store_rngs(self, rngs: list[np.random.RandomState]) -> None:
        for q, rng in zip(self.generator_of_run, rngs):
            rng.set_state(("MT19937", self.mt_key[q].copy(), int(self.mt_pos[q]),
                           int(self.mt_has_gauss[q]), float(self.mt_cached[q])))

    def views(self, name: str) -> list[np.ndarray]:
        """Engine-layout views of one packed field (r^HI as recorded): made once, valid for the whole call."""
        if name not in self._views:
            packed = self.hi_rec if name == "rP_breve_HI" else self.arrays[name]
            self._views[name] = _entries(packed, self.shapes[name])
        return self._views[name]

    def show(self, state: State, names: tuple[str, ...], step: int) -> None:
        """Let ``state`` show the fields ``names`` as the recorder sees them at ``step``, without copying.

        The views follow the packed arrays, so they are valid only until the kernel runs again; the other
        fields keep their values from before the ``advance`` call until ``unpack_into`` replaces them all.
        """
        plain = {"r0": self.r0, "r0_LO": self.r0_LO, "noise_counter": self.counter}
        for name in names:
            setattr(state, name, plain[name] if name in plain else self.views(name))
        state.step = step

    def unpack_into(self, state: State, step: int) -> None:
        """Write the packed state into ``state`` (fresh contiguous arrays)."""
        for name, packed in self.arrays.items():
            setattr(state, name, [np.array(view, order="C") for view in _entries(packed, self.shapes[name])])
        state.r0 = self.r0.copy()
        state.r0_LO = self.r0_LO.copy()
        state.noise_counter = self.counter.copy()
        state.step = step


def _recorded_fields(recorder: "ChunkRecorder") -> tuple[str, ...]:
    """The packed state fields the recorder reads (store.recorder: input comes from ``sim.current_input``,
    target/error/MSE from ``sim.current_target`` and the output u-breve); all of them for an unknown recorder."""
    variables = getattr(recorder, "variables", None)
    if variables is None:
        return VEC_FIELDS + MAT_FIELDS + PLAIN
    names: list[str] = []
    for var in variables:
        if var.kind == "input":
            continue
        name = "uP_breve" if var.kind in ("output", "scalar") else var.name
        if name not in VEC_FIELDS + MAT_FIELDS:
            return VEC_FIELDS + MAT_FIELDS + PLAIN  # something this function does not know: show everything
        if name not in names:
            names.append(name)
    return tuple(names)


def _sample_indices(sim: "Simulation", k: int) -> np.ndarray:
    """Pattern index of every run in step k, as ``Simulation._prepare_step`` picks it (the kernel's rule)."""
    proto = sim.protocol
    S, N, Tp = proto.settling_steps, proto.steps_per_epoch, proto.steps_per_presentation
    if k <= S:
        return np.full(len(sim.runs), ((k - 1) % N) // Tp)
    return sim.order[:, ((k - S - 1) % N) // Tp]


def _segment_end(sim: "Simulation", k: int, end: int, every: int | None) -> int:
    """Last step of the segment that starts with step k+1: before the next epoch start, at the next record."""
    proto = sim.protocol
    S, N = proto.settling_steps, proto.steps_per_epoch
    stop = min(end, k + MAX_SEGMENT)
    first = k + 1
    next_epoch = S + 1 if first <= S else S + 1 + ((first - S - 1) // N + 1) * N
    stop = min(stop, next_epoch - 1)
    if every:
        stop = min(stop, (first + every - 1) // every * every)
    return stop


def advance(sim: "Simulation", n_steps: int, recorder: "ChunkRecorder | None" = None,
            layout: str | None = None, specialise: bool | None = None) -> None:
    """Exactly ``sim.advance(n_steps, on_step=recorder)``, with the steps run by the compiled kernel.

    ``layout`` picks the kernel: ``"neurons"`` (this module's), ``"lanes"`` (kernel_lanes.py) or None, the one
    ``layout_for`` finds faster for the network. ``specialise`` (lanes only): use the lanes kernel compiled for
    this network (True), the generic one (False), or let the batch's size decide (None,
    ``kernel_lanes.segment_for``); all give the same bits.

    Same final state, generators, presentation order, current input/target and recorder contents; the recorder
    is called at its record steps only (``step % recorder.every == 0``), which is the only time it records.
    While it runs, ``sim.state`` shows only the fields it records (see ``_Packed.show``).
    """
    end = min(sim.state.step + n_steps, sim.protocol.total_steps)
    k = sim.state.step
    if k >= end:
        return
    rp, lp, fl, layers, acts = _tables(sim)
    if (layout or layout_for(sim)) == "lanes":
        from palmc.engine import kernel_lanes

        lanes = kernel_lanes.Lanes(fl)
        packed: "_Packed | kernel_lanes.Packed" = kernel_lanes.Packed(sim, lanes)
        rp, lp, fl = lanes.pack(rp), lanes.pack(lp), lanes.pack(fl)
        segment, lane_args = kernel_lanes.segment_for(sim, layers, acts, specialise), (lanes.run_of, lanes.real)
    elif layout in (None, "neurons"):
        packed, segment, lane_args = _Packed(sim), _advance_segment, ()
    else:
        raise ValueError(f"kernel layout {layout!r}: expected 'neurons' or 'lanes'")
    patterns = np.ascontiguousarray(sim.patterns, dtype=np.float64)
    targets = np.zeros((len(sim.runs), 1 if sim.targets is None else sim.targets.shape[1], packed.width))
    if sim.targets is not None:
        targets[:, :, : sim.targets.shape[2]] = sim.targets
    every = getattr(recorder, "every", None) if recorder is not None else None
    shown = _recorded_fields(recorder) if recorder is not None else ()
    runs = np.arange(len(sim.runs))
    any_pal = bool(sim.params.is_pal.any())
    proto = sim.protocol
    S, N, Tp, dt = proto.settling_steps, proto.steps_per_epoch, proto.steps_per_presentation, float(sim.params.dt)
    # The generators are copied in once and back only when they are about to be used in Python (the shuffle
    # of an epoch start) or at the end, and only if the kernel drew from them (copies cost ~50 us per run).
    packed.load_rngs(sim.rngs)
    drawn = False
    while k < end:
        stop = _segment_end(sim, k, end, every)
        epoch_start = k + 1 > S and (k - S) % N == 0
        if epoch_start and drawn:
            packed.store_rngs(sim.rngs)
            drawn = False
        # Simulation's own step preparation: it shuffles at an epoch start (only then) and gives the phase's
        # flags and input, which must be those of the kernel's schedule
        r0, target, learning = sim._prepare_step(k + 1)
        if epoch_start:
            packed.load_rngs(sim.rngs)
        if not np.array_equal(r0, patterns[runs, _sample_indices(sim, k + 1)]):
            raise RuntimeError("kernel: input schedule disagrees with Simulation._prepare_step")
        order = np.ascontiguousarray(sim.order, dtype=np.int64)
        with _compiling():
            segment(*packed.vecs, *packed.mats, packed.r0, packed.r0_LO, packed.hi_rec, packed.counter,
                    packed.mt_key, packed.mt_out, packed.mt_pos, packed.mt_has_gauss, packed.mt_cached,
                    patterns, targets, order, *lane_args, k + 1, stop - k, S, Tp, layers, acts, dt, rp, lp, fl,
                    bool(learning.forward), bool(learning.lateral), bool(learning.feedback), target is not None)
        drawn = drawn or (bool(learning.feedback) and any_pal)
        if stop > k + 1:
            r0, target, _ = sim._prepare_step(stop)  # not an epoch start: no side effect
        sim.current_input, sim.current_target = r0, target
        k = stop
        if recorder is not None and k % every == 0:
            packed.show(sim.state, shown, k)
            recorder(sim)
    if drawn:
        packed.store_rngs(sim.rngs)
    packed.unpack_into(sim.state, k)
