"""The house's import graph: no circles anywhere in palmc/, and lower layers never import higher ones.

Every import statement counts, wherever it stands (module level, inside a function, under ``if TYPE_CHECKING``),
and so does ``importlib.import_module("palmc...")`` with a literal name. ``from a.b import c`` imports ``a.b``
and, when ``c`` is a module, ``a.b.c``. The parent packages that Python initialises on the way (``palmc`` for
``palmc.store.writer``) are not counted: every module would otherwise sit in a circle with ``palmc/__init__.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "palmc"

# (lower layer, higher layers it must never import)
LAYERS = [
    ("palmc.engine", ("palmc.store", "palmc.query", "palmc.plots", "palmc.api", "palmc.cli", "palmc.plan",
                      "palmc.runner", "palmc.distributed")),
    ("palmc.store", ("palmc.query", "palmc.plots", "palmc.api", "palmc.cli", "palmc.runner", "palmc.distributed",
                     "palmc.schema")),  # the plan hands the store what it needs of the experiment
    ("palmc.plan", ("palmc.store", "palmc.runner", "palmc.distributed", "palmc.query", "palmc.plots", "palmc.api",
                    "palmc.cli")),  # the variable declaration serves the plan and the store alike
    ("palmc.kernel", ("palmc.store", "palmc.runner", "palmc.distributed", "palmc.query", "palmc.plots", "palmc.api",
                      "palmc.cli")),  # loading the kernel a plan needs knows nothing of the store or the run
]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _absolute(module: str | None, level: int, here: str, is_package: bool) -> str:
    if not level:
        return module or ""
    base = here.split(".") if is_package else here.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def imports_of(name: str) -> set[str]:
    """The palmc modules that module ``name`` imports anywhere in its text."""
    path = MODULES[name]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node.module, node.level, name, path.name == "__init__.py")
            found.add(source)
            found.update(f"{source}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)):
            found.add(str(node.args[0].value))
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_every_kind_of_import() -> None:
    """Lazy, type-only and importlib imports are all edges (palmc/__init__.py has the last two)."""
    assert "palmc.api" in GRAPH["palmc"]
    assert "palmc.engine.compiled.driver" in GRAPH["palmc.runner"]  # imported inside functions only


def test_circle_finder_finds_circles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [{"a", "b", "c"}]


def test_no_import_circles() -> None:
    found = circles(GRAPH)
    assert not found, "import circles: " + "; ".join(
        ", ".join(f"{a} -> {sorted(GRAPH[a] & c)}" for a in sorted(c)) for c in found)


@pytest.mark.parametrize("lower, higher", LAYERS, ids=[lower for lower, _ in LAYERS])
def test_lower_layers_never_import_higher_ones(lower: str, higher: tuple[str, ...]) -> None:
    wrong = sorted(f"{name} -> {target}" for name, targets in GRAPH.items()
                   if name == lower or name.startswith(lower + ".")
                   for target in targets if any(target == h or target.startswith(h + ".") for h in higher))
    assert not wrong, "imports against the data flow: " + "; ".join(wrong)


def _calls_given_plan(module: str, function: str) -> list[str]:
    """The calls in ``module.function`` (top level) that get ``plan`` as an argument."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    body = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == function)
    return [call.func.id if isinstance(call.func, ast.Name) else ast.unparse(call.func)
            for call in ast.walk(body) if isinstance(call, ast.Call)
            and any(isinstance(arg, ast.Name) and arg.id == "plan" for arg in [*call.args, *(k.value for k in call.keywords)])]


def test_api_hands_the_plan_on_once() -> None:
    """``api.simulate`` makes the plan and hands it only to the executor, and the executor hands it once to the
    store (``Output.claim``: the checks before anything is written; the claim then holds the store for the run):
    the path of an experiment goes down the layers instead of returning to the API between the store's steps."""
    assert _calls_given_plan("palmc.api", "simulate") == ["execute"]
    to_store = [call for call in _calls_given_plan("palmc.distributed", "execute") if call.startswith("output.")]
    assert to_store == ["output.claim"]
