"""Kernel code written once and generated in the shapes the compiler needs.

The kernels' per-neuron loops must reach LLVM as straight-line blocks, every load before the stores, or its SLP
vectoriser gives up (plain loops are much slower: docs/performance.md, "equations.py inlined"). Written by
hand that meant each statement four (or eight) times, and the pyramidal and interneuron loops twice. Here such a
block is written once, as a template, and expanded into that code:

* ``fill(template, name=text, ...)``: ``$name`` alone on a line includes ``text`` there, at that line's
  indentation; an empty text drops the line, and if the line opens a block (the lines after it indented
  deeper), the block is dedented (the loop over lanes that the neuron layout has not); ``$name`` inside a line
  is replaced by ``text``;
* ``unroll(text, width)``: a statement written for one lane with ``@`` stands for ``width`` lanes, ``@`` being
  the lane number: ``w@ = W[r, b, a + U@]`` becomes ``w0, w1, w2, w3 = W[r, b, a], W[r, b, a + U1], ...``
  (one tuple assignment: its loads together, its stores together), ``s@ += x`` one line per lane;
* ``compile_kernel``: the generated ``def`` compiled with numba, cached on disk like any kernel of this package
  (``jit.py`` keys the cache on all engine sources, from which the text is generated).

``python -m palmc.engine.compiled.codegen neurons`` (or ``lanes``) prints a generated kernel.
"""

from __future__ import annotations

import linecache
import re
import sys
import textwrap
from pathlib import Path
from typing import Callable

from numba import njit

from palmc.engine.compiled.jit import GENERATED_FROM

LANE = "@"
_PLACEHOLDER = re.compile(r"\$(\w+)")
_INCLUDE = re.compile(r"^(\s*)\$(\w+)\s*$")
_AUGMENTED = re.compile(r"^(.+?) ([-+*/&|]=) (.+)$")


def fill(template: str, **parts: str) -> str:
    """``template`` with its ``$name`` placeholders replaced by ``parts`` (see the module's docstring)."""
    out: list[str] = []
    dropped: list[int] = []  # indentations of the dropped block openers the current line is inside
    for line in textwrap.dedent(template).strip("\n").split("\n"):
        indent = len(line) - len(line.lstrip())
        while dropped and line.strip() and indent <= dropped[-1]:
            dropped.pop()
        line = line[4 * len(dropped):] if line.strip() else line
        include = _INCLUDE.match(line)
        if include and "\n" in parts.get(include.group(2), "\n"):
            text = parts[include.group(2)]
            out.extend(include.group(1) + part if part else "" for part in textwrap.dedent(text).strip("\n").split("\n"))
            continue
        if include and not parts[include.group(2)]:  # the line goes; a block it opens is dedented
            dropped.append(indent)
            continue
        out.append(_PLACEHOLDER.sub(lambda m: parts[m.group(1)], line))
    return "\n".join(out)


def _split(text: str, separator: str) -> list[str]:
    """``text`` split at ``separator`` where it stands outside brackets."""
    pieces, depth, start, i = [], 0, 0, 0
    while i < len(text):
        if text[i] in "([{":
            depth += 1
        elif text[i] in ")]}":
            depth -= 1
        elif depth == 0 and text.startswith(separator, i):
            pieces.append(text[start:i].strip())
            i = start = i + len(separator)
            continue
        i += 1
    return pieces + [text[start:].strip()]


def _lane(text: str, k: int) -> str:
    return re.sub(r" \+ U0\b", "", text.replace(LANE, str(k)))


def unroll(text: str, width: int = 4) -> str:
    """``text`` with every statement that holds ``@`` written out for lanes 0 to ``width`` - 1."""
    out = []
    for line in text.split("\n"):
        if LANE not in line:
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        statement, _, comment = line.strip().partition("  # ")
        augmented = _AUGMENTED.match(statement)
        if augmented and "=" not in augmented.group(1):
            target, operator, value = augmented.groups()
            out.extend(f"{indent}{_lane(target, k)} {operator} {_lane(value, k)}" for k in range(width))
            continue
        sides = _split(statement, " = ")
        targets, values = _split(sides[0], ","), _split(sides[-1], ",")
        if len(sides) != 2 or len(targets) != len(values):
            raise ValueError(f"cannot unroll {line.strip()!r}: expected 'a@, b = x@, y' or 'a@ += x@'")
        pairs = [(_lane(t, k), _lane(v, k)) for t, v in zip(targets, values)
                 for k in (range(width) if LANE in t + v else (0,))]
        lhs = _packed([t for t, _ in pairs], indent, width=96)
        out.append(_packed([v for _, v in pairs], lhs + " = ") + (f"  # {comment}" if comment else ""))
    return "\n".join(out)


def _packed(items: list[str], prefix: str, width: int = 118) -> str:
    """``prefix`` and ``items`` joined by commas, in parentheses over several lines if one is too long."""
    line = prefix + ", ".join(items)
    if len(line) <= width or len(items) == 1:
        return line
    lines, current = [], prefix.split("\n")[-1] + "("
    hang = " " * len(current)
    if len(current) > width // 2:  # a long left-hand side: the items on lines of their own, indented once more
        hang = current[: len(current) - len(current.lstrip())] + "    "
        lines, current = [current], hang
    for item in items:
        if current.strip() not in ("", "(") and len(current) + len(item) + 2 > width:
            lines.append(current.rstrip())
            current = hang
        current += item + ", "
    return "\n".join(prefix.split("\n")[:-1] + lines + [current[:-2] + ")"])


def compile_kernel(source: str, name: str, namespace: dict[str, object], options: dict[str, object]) -> Callable:
    """The function ``name`` defined by ``source`` (generated from the module whose globals are ``namespace``),
    compiled with numba's ``options``. Its code and tracebacks show the generated text (kept in ``linecache``
    under ``<module>.generated.py``); numba caches it next to that module's own functions."""
    template_file = Path(str(namespace["__file__"])).resolve()
    filename = str(template_file.with_suffix(f".{name}.generated.py"))
    GENERATED_FROM[filename] = template_file
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    exec(compile(source, filename, "exec"), namespace)  # defines ``name`` among the module's globals
    function = namespace[name]
    function.__module__ = str(namespace["__name__"])
    return njit(**options)(function)


def source_of(kernel: Callable) -> str:
    """The generated text of a kernel made by ``compile_kernel``."""
    code = getattr(kernel, "py_func", kernel).__code__
    return "".join(linecache.getlines(code.co_filename))


if __name__ == "__main__":  # pragma: no cover - a reader's tool
    import importlib

    print(source_of(importlib.import_module(f"palmc.engine.compiled.{sys.argv[1]}").advance_segment))
