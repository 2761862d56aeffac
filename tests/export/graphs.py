"""Hand-built ``model.Graph`` fixtures for the export tests (no torch).

``GraphBuilder`` adds nodes in id order and edges producer -> consumer; the fixtures below are
the shapes the drawing must get right: parallel edges, multi-output ops, a NaN origin, a node
backward skipped, tied weights, repeated blocks and graphs far past the node budget.
"""

from __future__ import annotations

import math
import random

from graphscope.model import (
    LEAF,
    OP,
    PARAM,
    Edge,
    Finding,
    GradStats,
    Graph,
    Node,
    Severity,
    Source,
    TensorMeta,
)


def grad(rms: float, numel: int = 12, *, nan: int = 0, inf: int = 0) -> GradStats:
    """Gradient statistics with RMS ``rms`` (NaN norm when ``nan`` or ``inf`` is set)."""
    bad = nan or inf
    norm = float("nan") if bad else rms * math.sqrt(numel)
    return GradStats(norm, rms / 3, rms, -rms, rms, rms, 0.0, nan, inf, numel)


class GraphBuilder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.findings: list[Finding] = []

    def add(
        self, op: str, label: str = "", *, kind: str = OP, names: tuple[str, ...] = (),
        shapes: tuple[tuple[int, ...], ...] = ((3, 4),), module: str | None = None,
        rms: float | None = 0.1, executed: bool = True, root: bool = False,
        stats: GradStats | None = None,
    ) -> int:
        i = len(self.nodes)
        g = stats if stats is not None else (None if rms is None else grad(rms))
        self.nodes.append(Node(
            id=i, op=op, kind=kind, label=label or op, names=names,
            outputs=tuple(TensorMeta(s, "float32", "cpu") for s in shapes),
            saved=(TensorMeta((3, 4), "float32", "cpu", "self"),) if kind == OP else (),
            module=module, source=Source("train.py", 10 + i, "forward") if kind == OP else None,
            grad=g if executed else None, grads=(g,) if executed else (), executed=executed,
            is_root=root, exec_order=i if executed else None,
        ))
        return i

    def edge(self, src: int, dst: int, *, output_nr: int = 0, input_nr: int = 0,
             rms: float | None = None, stats: GradStats | None = None) -> None:
        g = stats if stats is not None else (None if rms is None else grad(rms))
        self.edges.append(Edge(src, dst, output_nr, input_nr, g))

    def finding(self, kind: str, severity: Severity, node: int, message: str) -> None:
        self.findings.append(Finding(kind, severity, node, message, "try something"))

    def graph(self, passes: int = 1) -> Graph:
        roots = [n.id for n in self.nodes if n.is_root]
        return Graph(nodes=self.nodes, edges=self.edges, roots=roots, findings=self.findings, passes=passes)


def mlp() -> Graph:
    """loss <- mse <- addmm(fc2) <- sigmoid <- addmm(fc1) <- x, with fc1/fc2 weights and biases.

    Node ids: 0 loss, 1 addmm fc2, 2 sigmoid, 3 addmm fc1, 4 fc1.weight, 5 fc1.bias,
    6 fc2.weight, 7 fc2.bias, 8 x (an input leaf).
    """
    b = GraphBuilder()
    loss = b.add("MseLossBackward0", "mse_loss", shapes=((),), root=True, rms=1.0)
    fc2 = b.add("AddmmBackward0", "addmm", module="fc2", rms=0.3)
    sig = b.add("SigmoidBackward0", "sigmoid", module="act", rms=0.05)
    fc1 = b.add("AddmmBackward0", "addmm", module="fc1", rms=0.01)
    w1 = b.add("AccumulateGrad", "fc1.weight", kind=PARAM, names=("fc1.weight",), shapes=((4, 4),), module="fc1", rms=1e-3)
    b1 = b.add("AccumulateGrad", "fc1.bias", kind=PARAM, names=("fc1.bias",), shapes=((4,),), module="fc1", rms=1e-3)
    w2 = b.add("AccumulateGrad", "fc2.weight", kind=PARAM, names=("fc2.weight",), shapes=((4, 4),), module="fc2", rms=0.2)
    b2 = b.add("AccumulateGrad", "fc2.bias", kind=PARAM, names=("fc2.bias",), shapes=((4,),), module="fc2", rms=0.2)
    x = b.add("AccumulateGrad", "x", kind=LEAF, rms=0.5)
    b.edge(fc2, loss, rms=0.3)
    b.edge(sig, fc2, input_nr=1, rms=0.05)
    b.edge(fc1, sig, rms=0.01)
    b.edge(x, fc1, input_nr=1, rms=0.5)
    b.edge(w1, fc1, input_nr=2)
    b.edge(b1, fc1, input_nr=0)
    b.edge(w2, fc2, input_nr=2)
    b.edge(b2, fc2, input_nr=0)
    return b.graph()


def square() -> Graph:
    """loss = (w * w).sum(): two parallel edges from w into mul, input_nr 0 and 1."""
    b = GraphBuilder()
    s = b.add("SumBackward0", "sum", shapes=((),), root=True)
    mul = b.add("MulBackward0", "mul")
    w = b.add("AccumulateGrad", "w", kind=PARAM, names=("w",))
    b.edge(mul, s)
    b.edge(w, mul, input_nr=0)
    b.edge(w, mul, input_nr=1)
    return b.graph()


def unbind() -> Graph:
    """loss = a + b where a, b = x.unbind(): one op with two outputs, output_nr 0 and 1."""
    b = GraphBuilder()
    add = b.add("AddBackward0", "add", shapes=((4,),), root=True)
    ub = b.add("UnbindBackward0", "unbind", shapes=((4,), (4,)))
    x = b.add("AccumulateGrad", "x", kind=LEAF, shapes=((2, 4),))
    b.edge(ub, add, output_nr=0, input_nr=0)
    b.edge(ub, add, output_nr=1, input_nr=1)
    b.edge(x, ub)
    return b.graph()


def nan_origin() -> Graph:
    """loss <- mul <- log(x) where log makes the NaN; ``dead`` was never run by backward.

    Node ids: 0 loss, 1 mul, 2 log (the origin), 3 x, 4 w, 5 dead branch op.
    """
    b = GraphBuilder()
    loss = b.add("SumBackward0", "sum", shapes=((),), root=True, rms=1.0)
    mul = b.add("MulBackward0", "mul", rms=0.5)
    log = b.add("LogBackward0", "log", stats=grad(0.5))
    x = b.add("AccumulateGrad", "x", kind=LEAF, stats=grad(0.0, nan=3))
    w = b.add("AccumulateGrad", "w", kind=PARAM, names=("w", "decoder.w"), rms=2e6)
    dead = b.add("ExpBackward0", "exp", executed=False)
    b.edge(mul, loss)
    b.edge(log, mul, input_nr=0)
    b.edge(w, mul, input_nr=1)
    b.edge(x, log, stats=grad(0.0, nan=3))
    b.edge(w, dead)
    b.finding("nonfinite_origin", Severity.ERROR, log, "NaN first appears in the gradient of log")
    b.finding("exploding", Severity.WARNING, w, "w gradient RMS is 2e6")
    return b.graph()


def transformer(layers: int = 12, ops_per_layer: int = 40, *, seed: int = 0) -> Graph:
    """A deep stack: embed -> ``layers`` identical blocks ``encoder.layers.i`` -> head -> loss.

    Each block has ``ops_per_layer`` ops split over ``attn`` and ``mlp`` submodules (a chain
    with skip connections) and two parameters. All blocks have the same structure.
    """
    rnd = random.Random(seed)
    skips = [(j, rnd.randrange(max(0, j - 6), j)) for j in range(2, ops_per_layer) if rnd.random() < 0.3]
    b = GraphBuilder()
    loss = b.add("MeanBackward0", "mean", shapes=((),), root=True)
    head = b.add("AddmmBackward0", "addmm", module="head")
    b.edge(head, loss)
    consumer = head
    for layer in reversed(range(layers)):
        path = f"encoder.layers.{layer}"
        ids = []
        for j in range(ops_per_layer):
            sub = "attn" if j < ops_per_layer // 2 else "mlp"
            ids.append(b.add("MulBackward0" if j % 3 else "AddBackward0", "", module=f"{path}.{sub}", rms=0.01 * (layer + 1)))
        ids.reverse()  # ids[0] is the block's first op in forward order
        for j in range(1, ops_per_layer):
            b.edge(ids[j - 1], ids[j], input_nr=0)
        for j, i in skips:
            b.edge(ids[i], ids[j], input_nr=1)
        for p, target in (("attn.weight", 0), ("mlp.weight", ops_per_layer // 2)):
            w = b.add("AccumulateGrad", "", kind=PARAM, names=(f"{path}.{p}",), module=f"{path}.{p.split('.')[0]}")
            b.edge(w, ids[target], input_nr=2)
        b.edge(ids[-1], consumer, input_nr=0)
        consumer = ids[0]
    emb = b.add("EmbeddingBackward0", "embedding", module="embed")
    b.edge(emb, consumer, input_nr=0)
    w = b.add("AccumulateGrad", "", kind=PARAM, names=("embed.weight",), module="embed")
    b.edge(w, emb)
    return b.graph()


def random_dag(n: int, *, seed: int = 0, modules: bool = False) -> Graph:
    """``n`` nodes: a long chain of ops with random skip edges and a parameter every 5 ops.

    With ``modules``, op ``i`` belongs to ``blocks.{i // 50}.part{i % 3}``; without, no node has
    a module (a capture made without ``model=``).
    """
    rnd = random.Random(seed)
    b = GraphBuilder()
    b.add("SumBackward0", "sum", shapes=((),), root=True)
    prev = 0
    for i in range(1, n):
        module = f"blocks.{i // 50}.part{i % 3}" if modules else None
        if i % 5 == 0:
            node = b.add("AccumulateGrad", "", kind=PARAM, names=(f"p{i}",), module=module, rms=10 ** rnd.uniform(-10, 7))
            b.edge(node, prev, input_nr=1)
            continue
        node = b.add("AddBackward0" if i % 2 else "TanhBackward0", "", module=module, rms=10 ** rnd.uniform(-10, 7))
        b.edge(node, prev, input_nr=0)
        target = rnd.randrange(max(0, prev - 10), prev + 1)
        if target != prev and target % 5 and rnd.random() < 0.2:  # ops only: params consume nothing
            b.edge(node, target, input_nr=2)
        prev = node
    return b.graph()
