"""Pure plans for the inspector's tree: what goes under which line, and the way down to a node.

Owns the shape of the two groupings (backward from the loss, and by ``nn.Module``), search over
ops and parameter names, the forward order of parameter layers and a node's neighbourhood. No
textual imports: the widgets turn these plans into lines, the tests check them directly.

Backward grouping. A spanning tree is built once, breadth first from the roots along producer
edges, so every node has one canonical place; its other consumers show a reference line instead
of a second copy. To keep the indentation shallow on deep graphs, each node's largest child (its
heavy child) is listed right after it at the same depth, and only the other inputs nest under
it: reading down a list walks backward along the main path, and a node's side inputs (weights,
biases, skip branches) hang under the op that consumes them. Heavy-path decomposition bounds the
nesting depth by log2(number of nodes), so a 50,000-op chain is one flat, lazily loaded list.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass
from graphscope.model import Graph


@dataclass(frozen=True, slots=True)
class UnderNode:
    """The lines nested under a node's line (its side inputs)."""

    node: int


@dataclass(frozen=True, slots=True)
class UnderModule:
    """The lines nested under a module group's line."""

    path: str


Container = UnderNode | UnderModule | None  # None: the top of the tree


@dataclass(frozen=True, slots=True)
class HeavyPath:
    """A run of nodes along a heavy path, from ``head`` backward."""

    head: int


@dataclass(frozen=True, slots=True)
class Members:
    """The nodes a module produced itself."""

    module: str


SeqKey = HeavyPath | Members

NO_MODULE = "(no module)"


@dataclass(frozen=True, slots=True)
class SeqItem:
    """A run of nodes listed one after another under a container (loaded in windows)."""

    key: SeqKey


@dataclass(frozen=True, slots=True)
class RefItem:
    """A line pointing at a node that is shown elsewhere (a shared input)."""

    node: int


@dataclass(frozen=True, slots=True)
class ModuleItem:
    """A module group: its submodules and the nodes it produced."""

    path: str
    count: int


Item = SeqItem | RefItem | ModuleItem


@dataclass(frozen=True, slots=True)
class Step:
    """One move on the way down to a node: open ``container``, then find ``item`` in it.

    For a ``SeqItem`` the target is the entry at ``index`` of that sequence.
    """

    container: Container
    item: Item
    index: int = 0


class BackwardPlan:
    """The graph from the roots down, backward, with shared inputs expanded once.

    Built in O(nodes + edges); every query afterwards costs the size of its answer (or the
    nesting depth, for ``locate``), never the size of the graph.
    """

    def __init__(self, graph: Graph) -> None:
        n = len(graph.nodes)
        self.graph = graph
        inputs: list[list[tuple[int, int]]] = [[] for _ in range(n)]
        for e in graph.edges:
            inputs[e.dst].append((e.input_nr, e.src))
        # Distinct producers in input order (most nodes have one input: skip the sort).
        self._producers = [
            [ins[0][1]] if len(ins) == 1 else list(dict.fromkeys(s for _, s in sorted(ins)))
            for ins in inputs
        ]
        parent = [-2] * n  # -2: not reached yet, -1: a top-level node
        order: list[int] = []
        tops: list[int] = []
        starts = list(dict.fromkeys(graph.roots)) + list(range(n))
        for s in starts:
            if parent[s] != -2:
                continue
            parent[s] = -1
            tops.append(s)
            queue = deque([s])
            while queue:
                u = queue.popleft()
                order.append(u)
                for p in self._producers[u]:
                    if parent[p] == -2:
                        parent[p] = u
                        queue.append(p)
        size = [1] * n
        for u in reversed(order):
            if parent[u] >= 0:
                size[parent[u]] += size[u]
        heavy = [-1] * n
        for u in order:
            best = 0
            for p in self._producers[u]:
                if parent[p] == u and size[p] > best:
                    heavy[u], best = p, size[p]
        head = list(range(n))
        index = [0] * n
        for u in order:
            p = parent[u]
            if p >= 0 and heavy[p] == u:
                head[u], index[u] = head[p], index[p] + 1
        self._parent, self._heavy, self._head, self._index = parent, heavy, head, index
        self._tops = tops
        self._paths: dict[int, list[int]] = {}

    def top(self) -> list[Item]:
        """What the tree shows first: the main path of each root (and of any orphan)."""
        return [SeqItem(HeavyPath(t)) for t in self._tops]

    def items(self, container: Container) -> list[Item]:
        """The lines nested under ``container`` (an ``UnderNode``), in input order."""
        if container is None:
            return self.top()
        assert isinstance(container, UnderNode)
        u = container.node
        out: list[Item] = []
        for p in self._producers[u]:
            if p == self._heavy[u]:
                continue
            out.append(SeqItem(HeavyPath(p)) if self._parent[p] == u else RefItem(p))
        return out

    def expandable(self, node_id: int) -> bool:
        """Whether ``node_id`` has nested lines (inputs other than the next one on its path)."""
        return len(self._producers[node_id]) > (1 if self._heavy[node_id] >= 0 else 0)

    def seq(self, key: SeqKey) -> list[int]:
        """The nodes of a heavy path, from its head down (computed once, then cached)."""
        assert isinstance(key, HeavyPath)
        h = key.head
        path = self._paths.get(h)
        if path is None:
            path = [h]
            while self._heavy[path[-1]] >= 0:
                path.append(self._heavy[path[-1]])
            self._paths[h] = path
        return path

    def locate(self, node_id: int) -> list[Step]:
        """The steps from the top down to the canonical line of ``node_id``."""
        steps: list[Step] = []
        u = node_id
        while True:
            h = self._head[u]
            container = None if self._parent[h] < 0 else UnderNode(self._parent[h])
            steps.append(Step(container, SeqItem(HeavyPath(h)), self._index[u]))
            if container is None:
                return steps[::-1]
            u = self._parent[h]


class ModulePlan:
    """The graph grouped by ``node.module``: a module tree with each module's own nodes."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        members: dict[str, list[int]] = {}
        for node in graph.nodes:
            members.setdefault(node.module or NO_MODULE, []).append(node.id)
        children: dict[str | None, set[str]] = {None: set()}
        count: dict[str, int] = {}
        for path, ids in members.items():
            parts = [path] if path == NO_MODULE else path.split(".")
            parent: str | None = None
            for i in range(len(parts)):
                p = ".".join(parts[: i + 1])
                children.setdefault(parent, set()).add(p)
                count[p] = count.get(p, 0) + len(ids)
                parent = p
        self._members = members
        self._children = {k: sorted(v, key=_module_sort_key) for k, v in children.items()}
        self._count = count

    def top(self) -> list[Item]:
        return self.items(None)

    def items(self, container: Container) -> list[Item]:
        assert container is None or isinstance(container, UnderModule)
        path = None if container is None else container.path
        out: list[Item] = [ModuleItem(c, self._count[c]) for c in self._children.get(path, [])]
        if path is not None and path in self._members:
            out.append(SeqItem(Members(path)))
        return out

    def expandable(self, node_id: int) -> bool:
        return False

    def seq(self, key: SeqKey) -> list[int]:
        assert isinstance(key, Members)
        return self._members[key.module]

    def locate(self, node_id: int) -> list[Step]:
        path = self.graph.nodes[node_id].module or NO_MODULE
        parts = [path] if path == NO_MODULE else path.split(".")
        steps: list[Step] = []
        parent: Container = None
        for i in range(len(parts)):
            p = ".".join(parts[: i + 1])
            steps.append(Step(parent, ModuleItem(p, self._count[p])))
            parent = UnderModule(p)
        index = self._members[path].index(node_id)
        steps.append(Step(parent, SeqItem(Members(path)), index))
        return steps


def _module_sort_key(path: str) -> tuple:
    """``layers.10`` after ``layers.9``; the no-module bucket last."""
    if path == NO_MODULE:
        return (1,)
    last = path.rsplit(".", 1)[-1]
    return (0, 0, int(last), "") if last.isdigit() else (0, 1, 0, last)


class SearchIndex:
    """Case-insensitive substring search over what the tree and the details show of a node:
    its title and op, label, variable and parameter names, module path and the module's class
    (``linear`` finds the ops that ran in ``nn.Linear`` modules)."""

    def __init__(self, graph: Graph) -> None:
        classes = graph.meta.get("module_classes") or {}
        self._text = [
            " ".join((n.title, n.op, n.label, n.var_name or "", *n.names, n.module or "",
                      classes.get(n.module, "") if n.module is not None else "")).lower()
            for n in graph.nodes
        ]
        self._query: str | None = None
        self._hits: list[int] = []

    def matches(self, query: str) -> list[int]:
        """Every matching node id, in id order (kept for the last query: typing re-asks)."""
        q = query.strip().lower()
        if q != self._query:
            self._query = q
            self._hits = [i for i, t in enumerate(self._text) if q in t] if q else []
        return self._hits

    def next(self, query: str, after: int | None) -> int | None:
        """The first match after ``after`` (wrapping around), or None when nothing matches."""
        hits = self.matches(query)
        if not hits:
            return None
        if after is not None:
            i = bisect.bisect_right(hits, after)
            if i < len(hits):
                return hits[i]
        return hits[0]


def neighbourhood(graph: Graph, node_id: int, *, limit: int = 6) -> tuple[list[int], list[int], int, int]:
    """Producers and consumers of ``node_id``, at most ``limit`` each.

    Returns:
        ``(producers, consumers, producers_left_out, consumers_left_out)``.
    """
    prods = graph.producers(node_id)
    cons = graph.consumers(node_id)
    return prods[:limit], cons[:limit], max(0, len(prods) - limit), max(0, len(cons) - limit)
