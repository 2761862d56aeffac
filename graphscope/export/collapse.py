"""Fits a graph into a drawing: decides what each box of the picture stands for.

A ``View`` is a quotient of the graph. Every graph node belongs to exactly one ``Box``; every
graph edge between two boxes (or between two copies of a folded block) belongs to exactly one
``Link``. ``build_view`` draws the full graph when it fits the node budget; otherwise it reduces
it, one step at a time, until it fits:

1. fold repeated blocks: ``layers.0`` .. ``layers.11`` with the same ops, shapes and wiring
   are drawn once and marked ``x12`` (each drawn node stands for its 12 copies);
2. group ops by module path, cut to the finest depth that fits (``encoder.layers.3.attn`` at
   depth 2 is ``encoder.layers``);
3. merge linear chains of ops (one producer, one consumer) into one box, taking along the
   parameters only that chain uses;
4. keep the boxes nearest the output(s) and gather the rest into one box.

Every step is linear in the graph's size, so a 10,000-node graph is reduced in well under a
second and the layout engine never sees more than the budget.

Imports only ``graphscope.model``: no torch, textual or graphviz.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Hashable

from graphscope.model import LEAF, OP, PARAM, Graph

# Box kinds.
SINGLE = "node"
MODULE = "module"
CHAIN = "chain"
REST = "rest"

_Key = tuple[str, Hashable]


@dataclass(frozen=True, slots=True)
class Repeat:
    """A run of identical numbered blocks, ``prefix.first`` .. ``prefix.last``, drawn once."""

    prefix: str
    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1

    @property
    def path(self) -> str:
        """Module path of the copy that is drawn (the first)."""
        return f"{self.prefix}.{self.first}" if self.prefix else str(self.first)

    @property
    def span(self) -> str:
        """``layers.0-11``: the copies this drawing stands for."""
        return f"{self.path}-{self.last}"


@dataclass(slots=True)
class Box:
    """One node of the drawing.

    Attributes:
        name: DOT node name: ``n<id>`` for a single node, ``g<k>`` for a group; the same for the
            same graph and options.
        kind: ``"node"`` (one graph node), ``"module"`` (a module's ops and parameters),
            ``"chain"`` (a linear run of ops) or ``"rest"`` (what the budget left out).
        members: Ids of the graph nodes it stands for, ascending (all copies of a folded block).
        node: For a ``"node"`` box, the id of the node drawn (the first copy's).
        title: Module path for a ``"module"`` box, else ``""``.
        repeat: The folded run this box is the first copy of, if any.
    """

    name: str
    kind: str
    members: list[int]
    node: int | None = None
    title: str = ""
    repeat: Repeat | None = None


@dataclass(slots=True)
class Link:
    """The graph edges that run from one box to another.

    Attributes:
        src: Producer box name.
        dst: Consumer box name.
        edges: Indexes into ``graph.edges``, ascending.
        repeat: The edges run from one copy of a folded block into the next.
    """

    src: str
    dst: str
    edges: list[int] = field(default_factory=list)
    repeat: bool = False


@dataclass(slots=True)
class View:
    """What to draw: boxes, links, and how the graph was reduced (``note``, empty if not)."""

    boxes: list[Box]
    links: list[Link]
    note: str = ""
    depth: int | None = None


@dataclass(slots=True)
class _Folding:
    rep: list[int]  # node -> the node drawn for it (its counterpart in the first copy)
    fold: list[int | None]  # node -> index into repeats, for nodes inside a folded run
    copy: list[int]  # node -> which copy of its run (0 for the one drawn)
    repeats: list[Repeat]

    @classmethod
    def none(cls, n: int) -> _Folding:
        return cls(list(range(n)), [None] * n, [0] * n, [])


def build_view(
    graph: Graph, *, max_nodes: int | None = 300, depth: int | None = None, fold_repeats: bool = True
) -> View:
    """Choose the boxes and links to draw ``graph`` with at most ``max_nodes`` boxes.

    Args:
        graph: The capture to draw.
        max_nodes: The box budget; ``None`` for no limit.
        depth: Group by module path cut to this many parts; ``None`` lets the budget decide.
        fold_repeats: Fold identical numbered blocks when the graph has to be reduced.

    Returns:
        The ``View``; ``len(view.boxes) <= max_nodes`` whenever ``max_nodes`` is set.

    Example:
        >>> view = build_view(graph, max_nodes=50)  # doctest: +SKIP
        >>> len(view.boxes) <= 50  # doctest: +SKIP
        True
    """
    n = len(graph.nodes)
    if depth is None and (max_nodes is None or n <= max_nodes):
        return _view(graph, [(SINGLE, i) for i in range(n)], _Folding.none(n), "", None)

    folding = _fold(graph) if fold_repeats else _Folding.none(n)
    steps = []
    if folding.repeats:
        steps.append("identical blocks folded (" + ", ".join(
            f"{r.span} x{r.count}" for r in folding.repeats[:3]) + ("..." if len(folding.repeats) > 3 else "") + ")")
    keys = _keys(graph, folding.rep, depth)
    chosen = depth
    if depth is None and max_nodes is not None and _count(keys) > max_nodes:
        deepest = max((len(m.split(".")) for m in _modules(graph)), default=0)
        for d in range(deepest, 0, -1):
            chosen, keys = d, _keys(graph, folding.rep, d)
            if _count(keys) <= max_nodes:
                break
    if chosen is not None:
        steps.append(f"grouped by module depth {chosen}")
    if max_nodes is not None and _count(keys) > max_nodes:
        keys = _merge_chains(graph, keys)
        steps.append("linear chains merged")
    if max_nodes is not None and _count(keys) > max_nodes:
        keys = _limit(graph, keys, max_nodes)
        steps.append(f"only the {max_nodes - 1} boxes nearest the output kept")
    note = f"{n:,} nodes drawn as {_count(keys):,} boxes: " + "; ".join(steps)
    return _view(graph, keys, folding, note, chosen)


def _modules(graph: Graph) -> set[str]:
    return {node.module for node in graph.nodes if node.module is not None}


def _count(keys: list[_Key]) -> int:
    return len(set(keys))


def _cut(module: str, depth: int) -> str:
    return ".".join(module.split(".")[:depth])


def _keys(graph: Graph, rep: list[int], depth: int | None) -> list[_Key]:
    """Box key of every node: itself, or its module cut to ``depth``. Roots stay single."""
    keys: list[_Key] = []
    for node in graph.nodes:
        r = graph.nodes[rep[node.id]]
        if depth is None or r.module is None or r.is_root:
            keys.append((SINGLE, r.id))
        else:
            keys.append((MODULE, _cut(r.module, depth)))
    return keys


def _fold(graph: Graph) -> _Folding:
    """Find runs of numbered sibling blocks with identical structure; map copies onto the first.

    Outer containers are folded first; a node already inside a folded run is not folded again.
    """
    f = _Folding.none(len(graph.nodes))
    containers: dict[str, dict[int, list[int]]] = {}
    for node in graph.nodes:
        if node.module is None or node.is_root:
            continue
        parts = node.module.split(".")
        for j, part in enumerate(parts):
            if part.isdigit():
                prefix = ".".join(parts[:j])
                containers.setdefault(prefix, {}).setdefault(int(part), []).append(node.id)
    for prefix in sorted(containers, key=lambda p: (p.count(".") + bool(p), p)):
        copies = {
            i: kept
            for i, ids in containers[prefix].items()
            if (kept := [m for m in ids if f.fold[m] is None])
        }
        signatures = {
            i: _signature(graph, f"{prefix}.{i}" if prefix else str(i), ids)
            for i, ids in copies.items()
        }
        run: list[int] = []
        for i in [*sorted(copies), None]:
            if i is not None and run and i == run[-1] + 1 and signatures[i] == signatures[run[0]]:
                run.append(i)
                continue
            if len(run) >= 2:
                k = len(f.repeats)
                f.repeats.append(Repeat(prefix, run[0], run[-1]))
                drawn = copies[run[0]]
                for c, index in enumerate(run):
                    for member, counterpart in zip(copies[index], drawn):
                        f.rep[member], f.fold[member], f.copy[member] = counterpart, k, c
            run = [] if i is None else [i]
    return f


def _signature(graph: Graph, path: str, ids: list[int]) -> Hashable:
    """Ops, kinds, relative module paths, shapes and internal wiring of one block."""
    rank = {m: r for r, m in enumerate(ids)}
    cut = len(path)

    def rel(name: str) -> str:
        return name[cut:] if name.startswith(path) else name

    nodes = tuple(
        (
            n.op,
            n.kind,
            rel(n.module or ""),
            tuple(o.shape for o in n.outputs),
            tuple(rel(name) for name in n.names),
        )
        for n in (graph.nodes[m] for m in ids)
    )
    wires = sorted(
        (rank[e.src], rank[m], e.output_nr, e.input_nr)
        for m in ids
        for e in graph.in_edges(m)
        if e.src in rank
    )
    return nodes, tuple(wires)


def _adjacency(graph: Graph, keys: list[_Key]) -> tuple[dict[_Key, set[_Key]], dict[_Key, set[_Key]]]:
    succ: dict[_Key, set[_Key]] = {k: set() for k in keys}
    pred: dict[_Key, set[_Key]] = {k: set() for k in keys}
    for e in graph.edges:
        a, b = keys[e.src], keys[e.dst]
        if a != b:
            succ[a].add(b)
            pred[b].add(a)
    return succ, pred


def _merge_chains(graph: Graph, keys: list[_Key]) -> list[_Key]:
    """Merge runs of single ops where each feeds only the next and the next is fed only by it.

    Parameters and leaves do not break a chain (an ``addmm`` chain keeps going past its weight);
    those whose every consumer lies in one chain are merged into it.
    """
    succ, pred = _adjacency(graph, keys)

    def single(k: _Key, kinds: tuple[str, ...]) -> bool:
        if k[0] != SINGLE:
            return False
        node = graph.nodes[k[1]]  # type: ignore[index]
        return node.kind in kinds and not node.is_root

    ops = {k for k in succ if single(k, (OP,))}
    leafy = {k for k in succ if single(k, (PARAM, LEAF))}
    nxt: dict[_Key, _Key] = {}
    for a in ops:
        if len(succ[a]) == 1:
            (b,) = succ[a]
            if b in ops and {p for p in pred[b] if p not in leafy} == {a}:
                nxt[a] = b
    chain_of: dict[_Key, _Key] = {}
    for start in sorted(set(nxt) - set(nxt.values()), key=repr):
        link: _Key | None = start
        while link is not None:
            chain_of[link] = (CHAIN, start[1])
            link = nxt.get(link)
    for k in leafy:
        targets = {chain_of.get(b) for b in succ[k]}
        if len(targets) == 1 and None not in targets:
            chain_of[k] = targets.pop()  # type: ignore[assignment]
    return [chain_of.get(k, k) for k in keys]


def _limit(graph: Graph, keys: list[_Key], budget: int) -> list[_Key]:
    """Keep the ``budget - 1`` boxes nearest the outputs (breadth-first); gather the rest."""
    _, pred = _adjacency(graph, keys)
    roots = graph.roots or [n.id for n in graph.nodes if not graph.out_edges(n.id)]
    order: dict[_Key, None] = dict.fromkeys(keys[r] for r in roots)
    queue = deque(order)
    while queue and len(order) < budget - 1:
        for p in sorted(pred[queue.popleft()], key=repr):
            if p not in order:
                order[p] = None
                queue.append(p)
    kept = set(list(order)[: budget - 1])
    return [k if k in kept else (REST, 0) for k in keys]


def _view(graph: Graph, keys: list[_Key], f: _Folding, note: str, depth: int | None) -> View:
    members: dict[_Key, list[int]] = {}
    for node_id, k in enumerate(keys):
        members.setdefault(k, []).append(node_id)
    names: dict[_Key, str] = {}
    boxes: list[Box] = []
    for k, ids in members.items():
        kind, what = k
        if kind == SINGLE:
            name = f"n{what}"
            fold = f.fold[what]  # type: ignore[index]
            box = Box(name, SINGLE, ids, node=what, repeat=None if fold is None else f.repeats[fold])  # type: ignore[arg-type]
        else:
            name = f"g{len(boxes)}"
            box = Box(name, kind, ids, title=what if kind == MODULE else "")  # type: ignore[arg-type]
            folds = {f.fold[m] for m in ids}
            if len(folds) == 1 and None not in folds:
                r = f.repeats[folds.pop()]  # type: ignore[index]
                if kind != MODULE or what == r.path or str(what).startswith(r.path + "."):
                    box.repeat = r
        names[k] = name
        boxes.append(box)
    links: dict[tuple, Link] = {}
    for i, e in enumerate(graph.edges):
        a, b = keys[e.src], keys[e.dst]
        fa = f.fold[e.src]
        repeat = fa is not None and fa == f.fold[e.dst] and f.copy[e.src] != f.copy[e.dst]
        if a == b and not repeat:
            continue
        out_nr = e.output_nr if a[0] == SINGLE else None
        in_nr = e.input_nr if b[0] == SINGLE else None
        link = links.setdefault((a, b, out_nr, in_nr, repeat), Link(names[a], names[b], repeat=repeat))
        link.edges.append(i)
    return View(boxes, list(links.values()), note, depth)
