"""A reader for the line-per-statement DOT that ``to_dot`` writes, so tests can assert on it.

Not a general DOT parser: one node or edge statement per line, attributes as ``key="value"``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ATTR = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")
_NODE = re.compile(r"^\s*(\w+) \[(.*)\]$")
_EDGE = re.compile(r"^\s*(\w+) -> (\w+) \[(.*)\]$")


def _attrs(text: str) -> dict[str, str]:
    return {k: _ESCAPE.sub(lambda m: "\n" if m[1] == "n" else m[1], v) for k, v in _ATTR.findall(text)}


@dataclass
class Dot:
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    edges: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def between(self, src: str, dst: str) -> list[dict[str, str]]:
        return [a for s, d, a in self.edges if (s, d) == (src, dst)]

    @property
    def drawn(self) -> dict[str, dict[str, str]]:
        """Nodes that stand for the graph (the legend's samples left out)."""
        return {k: v for k, v in self.nodes.items() if not k.startswith("legend")}


def parse(text: str) -> Dot:
    dot = Dot()
    for line in text.splitlines():
        if m := _EDGE.match(line):
            dot.edges.append((m[1], m[2], _attrs(m[3])))
        elif (m := _NODE.match(line)) and m[1] not in ("graph", "node", "edge"):
            dot.nodes[m[1]] = _attrs(m[2])
    return dot
