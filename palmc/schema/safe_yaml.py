"""Reading YAML that may be hostile: bounded nesting, bounded alias expansion, no cycles.

PyYAML composes aliases as shared nodes, so a few hundred bytes of nested aliases (an "alias bomb") stand for
billions of nodes once anything walks the document as a tree (validation, the line map). Its composer also
recurses once per nesting level, so thousands of nested brackets end in a RecursionError. Here the event stream
is read first (flat, no recursion) to bound the nesting, the node graph is then composed and measured as a graph
(each shared node once), and a document whose expansion exceeds the bound, or which refers to itself, is refused
before it is constructed.
"""

from __future__ import annotations

from typing import Any

import yaml

MAX_DEPTH = 64
"""Deepest nesting of mappings and sequences accepted (an experiment file needs fewer than 10 levels)."""

MAX_EXPANDED_NODES = 1_000_000
"""Most nodes a document may stand for once its aliases are expanded (an experiment file has a few hundred)."""


class UnsafeYAML(Exception):
    """The document is refused: too deep, too large once its aliases are expanded, or referring to itself."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line


def _check_depth(loader_class: type, text: str) -> None:
    depth = 0
    loader = loader_class(text)
    try:
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise UnsafeYAML(f"expected mappings and lists nested at most {MAX_DEPTH} deep, got deeper "
                                     "nesting", event.start_mark.line + 1)
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    finally:
        loader.dispose()


def expanded_size(root: yaml.Node) -> int:
    """Nodes of the tree ``root`` stands for (aliases expanded), computed on the graph in linear time; raises
    :class:`UnsafeYAML` when it refers to itself or exceeds ``MAX_EXPANDED_NODES``."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:  # iterative post-order walk: deep documents cannot exhaust Python's stack
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > MAX_EXPANDED_NODES:
                raise UnsafeYAML(f"expected at most {MAX_EXPANDED_NODES:,} values once aliases (*name) are "
                                 "expanded, got more (an alias bomb?)", node.start_mark.line + 1)
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise UnsafeYAML("expected a document without cycles, got an alias (*name) that refers to a "
                             "node containing it", node.start_mark.line + 1)
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in on_path:
                raise UnsafeYAML("expected a document without cycles, got an alias (*name) that refers to a "
                                 "node containing it", child.start_mark.line + 1)
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def compose_bounded(loader_class: type[yaml.SafeLoader], text: str) -> tuple[yaml.Node | None, Any]:
    """The node graph and the constructed data of a one-document YAML ``text``, read with ``loader_class``.

    Raises :class:`UnsafeYAML` for a refused document and ``yaml.YAMLError`` for malformed YAML (a NUL byte
    included)."""
    try:
        # libyaml's event stream, where installed, is much faster than PyYAML's (and as flat)
        _check_depth(yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else loader_class, text)
    except yaml.YAMLError:
        try:  # libyaml refused it: PyYAML may still read it, so its own events are checked
            _check_depth(loader_class, text)
        except yaml.YAMLError:
            pass  # malformed: reported by the composer below, with PyYAML's wording
    loader = loader_class(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        expanded_size(node)
        return node, loader.construct_document(node)
    finally:
        loader.dispose()
