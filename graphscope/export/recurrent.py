"""Finds the LSTM cells in a captured graph: each time step's gates, its cell state, its gradients.

An LSTM written with ``nn.LSTMCell`` on the CPU (torch decomposes ``lstm_cell`` into ops there)
or by hand records every step as ordinary ops::

    i, f, g, o = gates.chunk(4)         # torch's LSTMCell: input, forget, cell (candidate), output
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t)

A step is recognised by that shape, never by names or chunk positions: an ``add`` of two
``mul``s, one of a sigmoid with a tanh (the input gate times the candidate), the other of a
sigmoid (the forget gate) with the previous cell state (absent at the first step when ``c_0``
is a constant); the ``add`` (``c_t``) feeds a tanh that a ``mul`` with a third sigmoid (the
output gate) turns into ``h_t``. A last step whose ``h_t`` is not used is still found when its
cell state comes from a recognised step. A GRU, an MLP or attention has no such shape.

Steps are numbered along their cell-state chain (``c_1 -> c_2 -> ...``); two chains (two layers,
two sequences) are two recurrences. The fused ``nn.LSTM`` (one node for all steps) has no gates
to find; ``graphscope.export.dot`` says so in the caption.

Plain data: imports ``graphscope.model`` only; never torch, textual or graphviz.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphscope.model import OP, GradStats, Graph

SIGMOID = "SigmoidBackward0"
TANH = "TanhBackward0"
MUL = "MulBackward0"
ADD = "AddBackward0"

# Roles of the nodes of one step, as ``LstmStep.roles`` names them.
INPUT_GATE = "input_gate"
FORGET_GATE = "forget_gate"
CANDIDATE = "candidate"
OUTPUT_GATE = "output_gate"
FORGET_MUL = "forget_mul"  # f * c_{t-1}
INPUT_MUL = "input_mul"  # i * g
CELL = "cell"  # c_t = f * c_{t-1} + i * g
CELL_TANH = "cell_tanh"  # tanh(c_t)
HIDDEN = "hidden"  # h_t = o * tanh(c_t)
PREACTIVATION = "preactivation"  # the ops of this step that compute the gates' inputs
GATES = (INPUT_GATE, FORGET_GATE, CANDIDATE, OUTPUT_GATE)

# How far above the gates a step's own ops (the gate split, the linear maps, x_t's slice) are
# gathered into it: enough for addmm/add/split and cat/select, not a whole encoder.
_UPSTREAM_HOPS = 4


@dataclass(frozen=True, slots=True)
class LstmStep:
    """One time step of an LSTM, found from the graph's structure.

    Attributes:
        chain: Which recurrence it belongs to (0, 1, ...: a layer, or a separate sequence).
        index: Its time step in that chain, from 1 (the step whose ``c_{t-1}`` is no step's).
        input_gate: The sigmoid node of the input gate ``i``.
        forget_gate: The sigmoid node of the forget gate ``f``.
        candidate: The tanh node of the candidate ``g`` (torch calls it the cell gate).
        output_gate: The sigmoid node of the output gate ``o``; ``None`` when ``h_t`` is unused.
        forget_mul: ``f * c_{t-1}``.
        input_mul: ``i * g``.
        cell: The ``add`` whose output is the cell state ``c_t``.
        cell_tanh: ``tanh(c_t)``; ``None`` when ``h_t`` is unused.
        hidden: ``h_t = o * tanh(c_t)``; ``None`` when unused.
        prev_cell: The node whose output is ``c_{t-1}`` (the previous step's ``cell``, or a leaf
            ``c_0``); ``None`` when ``c_{t-1}`` is a constant (zeros).
        preactivation: This step's own ops upstream of the gates (the split, the linear maps).
        cell_edges: Indexes into ``graph.edges`` of the cell-state path:
            ``c_{t-1} -> f*c`` (when ``c_{t-1}`` is a node) and ``f*c -> add``.
        module: The module the cell's ops ran in (``cell``, ``layers.0``), if known.
        cell_grad: Gradient statistics at ``c_t``: dL/dc_t, from ``h_t`` and from ``c_{t+1}``.
        gate_grad: Gradient statistics at the gates' inputs (before sigmoid/tanh), all four
            together: what flows back through the gates to the weights, ``x_t`` and ``h_{t-1}``.
        carried_grad: The gradient sent back along the cell state to ``c_{t-1}`` (``f * dL/dc_t``);
            ``None`` when ``c_{t-1}`` is a constant.
    """

    chain: int
    index: int
    input_gate: int
    forget_gate: int
    candidate: int
    output_gate: int | None
    forget_mul: int
    input_mul: int
    cell: int
    cell_tanh: int | None
    hidden: int | None
    prev_cell: int | None
    preactivation: tuple[int, ...]
    cell_edges: tuple[int, ...]
    module: str | None
    cell_grad: GradStats | None
    gate_grad: GradStats | None
    carried_grad: GradStats | None

    def roles(self) -> dict[int, str]:
        """``node id -> role`` (``INPUT_GATE``, ``CELL``, ``PREACTIVATION``, ...) for every node
        of this step."""
        named = {
            INPUT_GATE: self.input_gate, FORGET_GATE: self.forget_gate, CANDIDATE: self.candidate,
            OUTPUT_GATE: self.output_gate, FORGET_MUL: self.forget_mul, INPUT_MUL: self.input_mul,
            CELL: self.cell, CELL_TANH: self.cell_tanh, HIDDEN: self.hidden,
        }
        roles = {nid: PREACTIVATION for nid in self.preactivation}
        roles.update({nid: role for role, nid in named.items() if nid is not None})
        return roles

    @property
    def members(self) -> tuple[int, ...]:
        """Every node of this step, ascending."""
        return tuple(sorted(self.roles()))


@dataclass(slots=True)
class _Core:
    """A step's cell nodes before it is placed in its chain."""

    i: int
    f: int
    g: int
    mul_f: int
    mul_i: int
    cell: int
    prev: int | None
    o: int | None = None
    tanh: int | None = None
    hidden: int | None = None


def find_lstm_steps(graph: Graph) -> list[LstmStep]:
    """Every LSTM time step in ``graph``, by chain and then by time step.

    Args:
        graph: A capture (live or loaded); gradients are read when a backward has run.

    Returns:
        The steps; empty when the graph holds no LSTM cell written as ops (an MLP, a fused
        ``nn.LSTM``).

    Example:
        >>> [(s.chain, s.index) for s in find_lstm_steps(graph)]  # doctest: +SKIP
        [(0, 1), (0, 2), (0, 3)]
    """
    candidates = {c.cell: c for nid in range(len(graph.nodes)) if (c := _cell_at(graph, nid)) is not None}
    if not candidates:
        return []
    for core in candidates.values():
        _attach_output(graph, core)
    # A step without h_t (the last one, when only c_T is used) counts only inside a chain of
    # steps that have it: alone, an add of two gated muls is not yet an LSTM.
    feeds = {c.prev for c in candidates.values() if c.prev in candidates}
    kept = {cell: c for cell, c in candidates.items() if c.hidden is not None or cell in feeds}
    chains = _chains(kept)
    core_ids = {nid for c in kept.values() for nid in _core_nodes(c)}
    edge_index = {(e.src, e.dst, e.output_nr, e.input_nr): k for k, e in enumerate(graph.edges)}
    steps = []
    for chain_no, chain in enumerate(chains):
        for t, core in enumerate(chain, start=1):
            steps.append(_step(graph, core, chain_no, t, core_ids, edge_index))
    return steps


def _op(graph: Graph, nid: int | None, op: str) -> bool:
    return nid is not None and graph.nodes[nid].kind == OP and graph.nodes[nid].op == op


def _cell_at(graph: Graph, nid: int) -> _Core | None:
    """The cell update ``f * c_{t-1} + i * g`` if node ``nid`` is its add."""
    if not _op(graph, nid, ADD):
        return None
    muls = graph.producers(nid)
    if len(muls) != 2 or not all(_op(graph, m, MUL) for m in muls):
        return None
    options = [c for a, b in (muls, muls[::-1]) if (c := _assign(graph, nid, a, b)) is not None]
    if not options:
        return None
    # Both muls can look like i * g when c_{t-1} is itself a tanh (c_0 = tanh(encoder)): the
    # forget side is then the one whose other factor is a cell update, else the one whose
    # candidate shares its source (the chunked gate vector) with the sigmoids.
    return max(options, key=lambda c: (c.prev is not None and _cell_shape(graph, c.prev),
                                       _shared_source(graph, c)))


def _assign(graph: Graph, cell: int, mul_f: int, mul_i: int) -> _Core | None:
    """The core with ``mul_f`` as ``f * c_{t-1}`` and ``mul_i`` as ``i * g``, if it fits."""
    ig = graph.producers(mul_i)
    if len(ig) != 2:
        return None
    i = next((p for p in ig if _op(graph, p, SIGMOID)), None)
    g = next((p for p in ig if _op(graph, p, TANH)), None)
    fc = graph.producers(mul_f)
    f = next((p for p in fc if _op(graph, p, SIGMOID)), None)
    if i is None or g is None or f is None or len(fc) > 2 or len({i, g, f}) < 3:
        return None
    prev = next((p for p in fc if p != f), None)
    return _Core(i=i, f=f, g=g, mul_f=mul_f, mul_i=mul_i, cell=cell, prev=prev)


def _cell_shape(graph: Graph, nid: int) -> bool:
    """Whether ``nid`` is an add of two muls (what a cell update looks like at first sight)."""
    return _op(graph, nid, ADD) and all(_op(graph, m, MUL) for m in graph.producers(nid))


def _shared_source(graph: Graph, core: _Core) -> bool:
    sources = [tuple(graph.producers(x)) for x in (core.i, core.f, core.g)]
    return len(set(sources)) == 1


def _attach_output(graph: Graph, core: _Core) -> None:
    """Find ``h_t = sigmoid(o) * tanh(c_t)`` below the cell, if there is one."""
    for t in graph.consumers(core.cell):
        if not _op(graph, t, TANH):
            continue
        for h in graph.consumers(t):
            inputs = graph.producers(h)
            if not _op(graph, h, MUL) or len(inputs) != 2:
                continue
            o = next((p for p in inputs if p != t and _op(graph, p, SIGMOID)), None)
            if o is not None and o not in (core.i, core.f):
                core.o, core.tanh, core.hidden = o, t, h
                return


def _chains(cores: dict[int, _Core]) -> list[list[_Core]]:
    """The cores linked by their cell state into chains, each from its first step; chains in
    the order the forward made them (the walk meets later ops first: higher ids are earlier)."""
    following: dict[int, _Core] = {}
    for core in sorted(cores.values(), key=lambda c: -c.cell):
        if core.prev in cores:
            following.setdefault(core.prev, core)  # a c_t read by two steps: the first one found
    starts = [c for c in cores.values() if c.prev not in cores or following.get(c.prev) is not c]
    chains = []
    for start in sorted(starts, key=lambda c: -c.cell):
        chain, core = [], start
        while core is not None and len(chain) <= len(cores):
            chain.append(core)
            core = following.get(core.cell)
        chains.append(chain)
    return chains


def _core_nodes(core: _Core) -> list[int]:
    ids = [core.i, core.f, core.g, core.o, core.mul_f, core.mul_i, core.cell, core.tanh, core.hidden]
    return [x for x in ids if x is not None]


def _upstream(graph: Graph, core: _Core, taken: set[int]) -> tuple[int, ...]:
    """This step's own ops above its gates: ops not in any step's cell whose every consumer is
    already in this step (the split of the gate vector, the linear maps, ``cat([x_t, h])``),
    and that are fed by some op (not only by weights or inputs)."""
    mine = set(_core_nodes(core))
    frontier = [core.i, core.f, core.g] + ([core.o] if core.o is not None else [])
    found: list[int] = []
    for _ in range(_UPSTREAM_HOPS):
        nxt = []
        for nid in frontier:
            for p in graph.producers(nid):
                node = graph.nodes[p]
                if p in mine or p in taken or node.kind != OP or node.is_root:
                    continue
                # A weight's transpose (or x_t's slice) stays beside its leaf: in the frame, dot
                # would still rank it up by the leaf and stretch the frame over the picture.
                if all(graph.nodes[q].kind != OP for q in graph.producers(p)):
                    continue
                if all(c in mine for c in graph.consumers(p)):
                    mine.add(p)
                    found.append(p)
                    nxt.append(p)
        frontier = nxt
    return tuple(sorted(found))


def _step(graph: Graph, core: _Core, chain: int, index: int, taken: set[int],
          edge_index: dict[tuple[int, int, int, int], int]) -> LstmStep:
    def edges_between(src: int | None, dst: int) -> list[int]:
        return [edge_index[(e.src, e.dst, e.output_nr, e.input_nr)] for e in graph.in_edges(dst) if e.src == src]

    cell_edges = edges_between(core.prev, core.mul_f) + edges_between(core.mul_f, core.cell)
    gates = [g for g in (core.i, core.f, core.g, core.o) if g is not None]
    gate_stats = [e.grad for g in gates for e in graph.in_edges(g) if e.grad is not None]
    carried = [graph.edges[k].grad for k in edges_between(core.prev, core.mul_f)]
    carried_stats = [s for s in carried if s is not None]
    return LstmStep(
        chain=chain, index=index, input_gate=core.i, forget_gate=core.f, candidate=core.g,
        output_gate=core.o, forget_mul=core.mul_f, input_mul=core.mul_i, cell=core.cell,
        cell_tanh=core.tanh, hidden=core.hidden, prev_cell=core.prev,
        preactivation=_upstream(graph, core, taken), cell_edges=tuple(cell_edges),
        module=graph.nodes[core.cell].module, cell_grad=graph.nodes[core.cell].grad,
        gate_grad=GradStats.combine(gate_stats) if gate_stats else None,
        carried_grad=GradStats.combine(carried_stats) if carried_stats else None,
    )
