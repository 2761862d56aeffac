"""Hand-built ``model.Graph`` fixtures (no torch), shared by the export, TUI, CLI and diagnostics
tests and by ``benchmarks/bench_tui.py``.

``Builder`` adds nodes in id order and edges producer -> consumer. Ids follow the capture's
convention where it matters to a view: the order a breadth-first walk from the root meets the
nodes, so the loss is node 0 and parameters come last. The fixtures are the shapes the views
must get right: parallel edges, multi-output ops, a NaN origin, a node backward skipped, tied
weights, repeated blocks, shared inputs, fading gradients, extreme values and graphs far past
the drawing's node budget.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

from graphscope.model import (
    LEAF,
    OP,
    PARAM,
    Edge,
    Finding,
    GradStats,
    Graph,
    Node,
    ParamInfo,
    Severity,
    Source,
    TensorMeta,
)

ROW = ((4, 8),)
"""The one output shape of most nodes in the inspector's fixtures (as ``shapes=``)."""

SELF = (TensorMeta((3, 4), "float32", "cpu", "self"),)
"""The saved tensor of an op that kept its input (as ``saved=`` to ``Builder.add``)."""


def stats(rms: float, numel: int = 16, *, nan: int = 0, inf: int = 0, zero_frac: float = 0.0) -> GradStats:
    """Gradient statistics with RMS ``rms`` over ``numel`` elements (NaN norm when ``nan`` or
    ``inf`` is set)."""
    norm = float("nan") if nan or inf else rms * math.sqrt(numel)
    return GradStats(
        norm=norm, mean=rms / 2, std=rms, min=-rms, max=rms, abs_max=rms,
        zero_frac=zero_frac, nan_count=nan, inf_count=inf, numel=numel,
    )


class Builder:
    """Adds nodes in id order and edges producer -> consumer; ``graph()`` makes the ``Graph``."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []
        self.findings: list[Finding] = []

    def add(
        self, op: str, label: str = "", *, kind: str = OP, names: tuple[str, ...] = (),
        shapes: tuple[tuple[int, ...], ...] = ((3, 4),), module: str | None = None,
        rms: float | None = 0.1, executed: bool = True, root: bool = False,
        stats: GradStats | None = None, saved: tuple[TensorMeta, ...] = (),
    ) -> int:
        """Add a node; its gradient is ``stats``, or ``rms`` over its first output (None: none).

        Returns:
            The new node's id.
        """
        i = len(self.nodes)
        if stats is not None:
            g = stats
        else:
            g = None if rms is None else globals()["stats"](rms, math.prod(shapes[0]) or 1)
        self.nodes.append(Node(
            id=i, op=op, kind=kind, label=label or op, names=names,
            outputs=tuple(TensorMeta(s, "float32", "cpu") for s in shapes), saved=saved,
            module=module, source=Source("train.py", 10 + i, "forward") if kind == OP else None,
            grad=g if executed else None, grads=(g,) if executed else (), executed=executed,
            is_root=root, exec_order=i if executed else None,
        ))
        return i

    def edge(self, src: int, dst: int, *, output_nr: int = 0, input_nr: int = 0,
             rms: float | None = None, stats: GradStats | None = None) -> None:
        g = stats if stats is not None else (None if rms is None else globals()["stats"](rms))
        self.edges.append(Edge(src, dst, output_nr, input_nr, g))

    def finding(self, kind: str, severity: Severity, node: int, message: str) -> None:
        self.findings.append(Finding(kind, severity, node, message, "try something"))

    def graph(self, *, passes: int = 1, params: list[ParamInfo] | None = None,
              findings: list[Finding] | None = None) -> Graph:
        roots = [n.id for n in self.nodes if n.is_root]
        return Graph(nodes=self.nodes, edges=self.edges, roots=roots,
                     findings=self.findings if findings is None else findings,
                     params=params or [], passes=passes)


# -- shapes the drawing must get right ----------------------------------------------------------


def mlp() -> Graph:
    """loss <- mse <- addmm(fc2) <- sigmoid <- addmm(fc1) <- x, with fc1/fc2 weights and biases.

    Node ids: 0 loss, 1 addmm fc2, 2 sigmoid, 3 addmm fc1, 4 fc1.weight, 5 fc1.bias,
    6 fc2.weight, 7 fc2.bias, 8 x (an input leaf).
    """
    b = Builder()
    loss = b.add("MseLossBackward0", "mse_loss", shapes=((),), root=True, rms=1.0, saved=SELF)
    fc2 = b.add("AddmmBackward0", "addmm", module="fc2", rms=0.3, saved=SELF)
    sig = b.add("SigmoidBackward0", "sigmoid", module="act", rms=0.05, saved=SELF)
    fc1 = b.add("AddmmBackward0", "addmm", module="fc1", rms=0.01, saved=SELF)
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
    b = Builder()
    s = b.add("SumBackward0", "sum", shapes=((),), root=True)
    mul = b.add("MulBackward0", "mul")
    w = b.add("AccumulateGrad", "w", kind=PARAM, names=("w",))
    b.edge(mul, s)
    b.edge(w, mul, input_nr=0)
    b.edge(w, mul, input_nr=1)
    return b.graph()


def unbind() -> Graph:
    """loss = a + b where a, b = x.unbind(): one op with two outputs, output_nr 0 and 1."""
    b = Builder()
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
    b = Builder()
    loss = b.add("SumBackward0", "sum", shapes=((),), root=True, rms=1.0)
    mul = b.add("MulBackward0", "mul", rms=0.5)
    log = b.add("LogBackward0", "log", stats=stats(0.5))
    x = b.add("AccumulateGrad", "x", kind=LEAF, stats=stats(0.0, nan=3))
    w = b.add("AccumulateGrad", "w", kind=PARAM, names=("w", "decoder.w"), rms=2e6)
    dead = b.add("ExpBackward0", "exp", executed=False)
    b.edge(mul, loss)
    b.edge(log, mul, input_nr=0)
    b.edge(w, mul, input_nr=1)
    b.edge(x, log, stats=stats(0.0, nan=3))
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
    b = Builder()
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
    b = Builder()
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


# -- shapes the inspector must get right --------------------------------------------------------


def sigmoid_mlp(depth: int = 4) -> Graph:
    """loss <- sigmoid <- addmm(bias, x, t(weight)) ... with gradients fading toward the input.

    Layer ``k`` (0 = first in forward) has parameter RMS ``10 ** -(2 * (depth - k))``, so the
    first layer's weight is the faintest. Findings: a vanishing warning on ``fc0.weight`` and an
    info on the loss.
    """
    b = Builder()
    loss = b.add("MseLossBackward0", "mse_loss", shapes=((),), rms=1.0, root=True)
    prev = loss
    params: list[ParamInfo] = []
    weight_ids: dict[int, int] = {}
    bias_ids: dict[int, int] = {}
    for k in reversed(range(depth)):
        rms = 10.0 ** -(2 * (depth - k))
        sig = b.add("SigmoidBackward0", "sigmoid", module=f"fc{k}", rms=rms * 10, shapes=ROW)
        b.edge(sig, prev, input_nr=0 if prev == loss else 1)
        mm = b.add("AddmmBackward0", "addmm", module=f"fc{k}", rms=rms * 5, shapes=ROW)
        b.edge(mm, sig)
        bias = b.add("AccumulateGrad", f"fc{k}.bias", kind=PARAM, names=(f"fc{k}.bias",),
                      shapes=((8,),), module=f"fc{k}", rms=rms)
        t = b.add("TBackward0", "t", module=f"fc{k}", rms=rms, shapes=ROW)
        w = b.add("AccumulateGrad", f"fc{k}.weight", kind=PARAM, names=(f"fc{k}.weight",),
                   shapes=((8, 4),), module=f"fc{k}", rms=rms)
        b.edge(bias, mm, input_nr=0)
        b.edge(t, mm, input_nr=2)
        b.edge(w, t, input_nr=0)
        weight_ids[k] = w
        bias_ids[k] = bias
        prev = mm
    x = b.add("AccumulateGrad", "x", kind=LEAF, shapes=((4, 4),), rms=1e-9)
    b.edge(x, prev, input_nr=1)
    for k in range(depth):
        params.append(ParamInfo(f"fc{k}.weight", (8, 4), "reached", weight_ids[k], f"fc{k}"))
        params.append(ParamInfo(f"fc{k}.bias", (8,), "reached", bias_ids[k], f"fc{k}"))
    findings = [
        Finding("vanishing", Severity.WARNING, weight_ids[0],
                "fc0.weight gradient RMS is 1e-8 of the largest", "use ReLU or a residual", "fc0.weight"),
        Finding("nonfinite_loss", Severity.ERROR, weight_ids[depth - 1],
                "NaN in fc3.weight gradient", "lower the learning rate", f"fc{depth - 1}.weight"),
        Finding("unreachable_param", Severity.INFO, None, "head.weight got no gradient",
                "is it used?", "head.weight"),
    ]
    return b.graph(params=params, findings=findings)


def diamond() -> Graph:
    """loss = a(x) + b(x): ``x`` (node 3) has two consumers, so one line is a reference."""
    b = Builder()
    add = b.add("AddBackward0", "add", shapes=((),), root=True)
    a = b.add("ExpBackward0", "exp", shapes=ROW)
    c = b.add("SinBackward0", "sin", shapes=ROW)
    x = b.add("MulBackward0", "mul", shapes=ROW)
    p = b.add("AccumulateGrad", "w", kind=PARAM, names=("w",), shapes=ROW)
    b.edge(a, add, input_nr=0)
    b.edge(c, add, input_nr=1)
    b.edge(x, a)
    b.edge(x, c)
    b.edge(p, x, input_nr=0)
    b.edge(p, x, input_nr=1)
    return b.graph()


def chain(n: int) -> Graph:
    """A straight chain of ``n`` ops ending in one parameter (a deep, flat heavy path)."""
    b = Builder()
    for i in range(n - 1):
        b.add("AddBackward0", f"add{i}", module=f"block{i // 100}", shapes=ROW, root=i == 0)
        if i:
            b.edge(i, i - 1)
    w = b.add("AccumulateGrad", "w", kind=PARAM, names=("w",), rms=1e-12, shapes=ROW)
    b.edge(w, w - 1)
    return b.graph(findings=[Finding("vanishing", Severity.WARNING, w, "w is vanishing", "", "w")])


def extreme_stats(value: float, numel: int = 16, *, counted: bool = True) -> GradStats:
    """Statistics of a gradient whose every element is ``value`` (inf, nan, 1e300, 0, 1e-300).

    With ``counted=False`` a non-finite ``value`` sits in the numbers but not in the NaN/Inf
    counts: the overflowed reduction of a finite but huge gradient, as older captures hold.
    """
    nan = int(counted and math.isnan(value)) * numel
    inf = int(counted and math.isinf(value)) * numel
    norm = abs(value) * math.sqrt(numel) if math.isfinite(value) else abs(value)
    return GradStats(
        norm=norm, mean=value, std=0.0 if math.isfinite(value) else float("nan"), min=value,
        max=value, abs_max=abs(value), zero_frac=float(value == 0), nan_count=nan,
        inf_count=inf, numel=numel,
    )


EXTREMES: dict[str, GradStats] = {
    "healthy": extreme_stats(0.1),
    "inf": extreme_stats(float("inf")),
    "huge": extreme_stats(1e300),
    "nan": extreme_stats(float("nan")),
    "zero": extreme_stats(0.0),
    "tiny": extreme_stats(1e-300),
    "overflowed": extreme_stats(float("inf"), counted=False),
    "neg_inf": extreme_stats(float("-inf")),
}
"""One parameter layer per kind of extreme gradient, in this (forward) order."""


def extremes() -> Graph:
    """loss <- add <- mul(p_healthy) <- mul(p_inf) <- ... one parameter per ``EXTREMES`` entry.

    Each op carries its parameter's statistics too, so the tree, the details and the
    neighbours all meet every extreme value. Findings point at the inf and NaN parameters.
    """
    b = Builder()
    loss = b.add("SumBackward0", "sum", shapes=((),), root=True)
    b.nodes[loss] = replace(b.nodes[loss], grad=EXTREMES["huge"], grads=(EXTREMES["huge"],))
    prev = loss
    params: list[ParamInfo] = []
    ids: dict[str, int] = {}
    for name, g in reversed(EXTREMES.items()):
        op = b.add("MulBackward0", "mul", module=name, shapes=ROW)
        b.nodes[op] = replace(b.nodes[op], grad=g, grads=(g,))
        b.edge(op, prev)
        p = b.add("AccumulateGrad", f"{name}.weight", kind=PARAM, names=(f"{name}.weight",),
                   module=name, shapes=ROW)
        b.nodes[p] = replace(b.nodes[p], grad=g, grads=(g, g))
        b.edge(p, op, input_nr=1)
        ids[name] = p
        prev = op
    for name in EXTREMES:
        params.append(ParamInfo(f"{name}.weight", (4, 8), "reached", ids[name], name))
    findings = [
        Finding("nonfinite_origin", Severity.ERROR, ids["inf"], "Inf in inf.weight gradient",
                "clip the gradients", "inf.weight"),
        Finding("nonfinite_origin", Severity.ERROR, ids["nan"], "NaN in nan.weight gradient",
                "guard the sqrt", "nan.weight"),
    ]
    return b.graph(params=params, findings=findings)
