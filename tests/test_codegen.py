"""The kernels are generated from templates written once (palmc/engine/compiled/codegen.py, steps.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from palmc.engine.compiled import activations, codegen, lanes, neurons
from palmc.engine.compiled.codegen import fill, unroll

STEP_LABELS = ("# ---- step 1:", "# ---- step 4, first part", "# ---- step 2:", "# ---- step 3a:", "# ---- step 3b:",
               "# ---- step 4, rest, and step 5")


def test_a_statement_for_one_lane_stands_for_four_with_its_loads_together() -> None:
    text = "w@ = W[r, b, a + U@]\nW[r, b, a + U@] = w@ + d@  # apply\ns@ += W[r, b, a + U@] * x"
    assert unroll(text).split("\n") == [
        "w0, w1, w2, w3 = W[r, b, a], W[r, b, a + U1], W[r, b, a + U2], W[r, b, a + U3]",
        "W[r, b, a], W[r, b, a + U1], W[r, b, a + U2], W[r, b, a + U3] = w0 + d0, w1 + d1, w2 + d2, w3 + d3  # apply",
        "s0 += W[r, b, a] * x", "s1 += W[r, b, a + U1] * x", "s2 += W[r, b, a + U2] * x", "s3 += W[r, b, a + U3] * x",
    ]
    assert unroll("p@, ok = f(x@), True", 2) == "p0, p1, ok = f(x0), f(x1), True"
    with pytest.raises(ValueError, match="cannot unroll"):
        unroll("f(x@)")


def test_fill_includes_blocks_at_their_indentation_and_drops_empty_block_openers() -> None:
    template = """
    for a in range($n):
        $lanes
            x[a$lane] = 0.0
        $body
    """
    body = "if a:\n    y = 1"
    assert fill(template, n="N", lanes="", lane="", body=body) == "for a in range(N):\n    x[a] = 0.0\n    if a:\n        y = 1"
    assert fill(template, n="N", lanes="for l in range(4):", lane=", l", body="") == (
        "for a in range(N):\n    for l in range(4):\n        x[a, l] = 0.0")


@pytest.mark.parametrize("kernel", [neurons.advance_segment, lanes.advance_segment], ids=["neurons", "lanes"])
def test_generated_kernels_read_as_dynamics_py_steps(kernel) -> None:  # type: ignore[no-untyped-def]
    source = codegen.source_of(kernel)
    assert source.startswith("def advance_segment(")
    compile(source, "kernel", "exec")
    assert not re.search(r"[@$]", source)  # every template filled in and unrolled
    positions = [source.index(label) for label in STEP_LABELS]
    assert positions == sorted(positions)  # one step skeleton (steps.STEP) for both layouts


def test_neuron_kernel_blocks_are_straight_line_code() -> None:
    source = codegen.source_of(neurons.advance_segment)
    def tight(text: str) -> str:  # (long statements are wrapped in parentheses)
        return re.sub(r"[\s()]", "", text)
    assert tight("w0, w1, w2, w3 = BPP[r, i, b, a], BPP[r, i, b, a + U1], BPP[r, i, b, a + U2], BPP[r, i, b, a + U3]"
                 ) in tight(source)
    assert "s7 += WPP[r, i, b, a + U7] * xb" in source  # the mat-vecs' eight outputs in registers
    assert "for c in range" not in source


def test_activation_dispatch_is_generated_from_equations() -> None:
    source = codegen.source_of(activations.phi_prime)
    assert [int(code) for code in re.findall(r"code == (\d)", source)] == list(range(5))
    assert "return eq.d_hard_sigmoid(x)" in source


def test_a_reader_can_print_a_kernel() -> None:
    out = subprocess.run([sys.executable, "-m", "palmc.engine.compiled.codegen", "lanes"], capture_output=True,
                         text=True, check=True).stdout
    assert out.startswith("def advance_segment(") and "# ---- step 3a:" in out
