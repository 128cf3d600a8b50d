"""exp(x) bit-identical to glibc's, in a branch-free form that the compiler vectorises (four at a time).

The logistic's exp is most of the arithmetic cost of a step, and libm's exp cannot be vectorised. glibc (2.28+,
x86-64 with FMA) computes exp(x) = 2^(k/128) exp(r) with a 128-entry table and a degree-5 polynomial; the same
operations below (same fused multiply-adds) give the same bits for |x| < 512. Elsewhere, and with any other libm,
the kernels fall back to libm (``activations.phi4`` says when).
"""

from __future__ import annotations

from decimal import Decimal, localcontext

import numpy as np
from llvmlite import ir as llvm_ir
from numba import njit, types
from numba.extending import intrinsic

from palmc.engine.compiled.jit import JIT


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


@njit(**JIT, inline="always")
def exp_fast(x: float) -> float:
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


@njit(**JIT, inline="always")
def exp_in_range(x: float) -> bool:
    """|x| < 512 (NaN and inf excluded): where ``exp_fast`` is glibc's exp."""
    return ((_bits(x) >> _U52) & _U7FF) < _U408

