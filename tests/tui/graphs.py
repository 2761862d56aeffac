"""Hand-built ``model.Graph`` fixtures for the TUI and CLI tests (no torch).

Ids follow the capture's convention: the order a breadth-first walk from the root meets the
nodes, so the loss is node 0 and parameters come last.
"""

from __future__ import annotations

import math
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


def stats(rms: float, numel: int = 16, *, nan: int = 0, zero_frac: float = 0.0) -> GradStats:
    """Gradient statistics with the given RMS over ``numel`` elements."""
    norm = float("nan") if nan else rms * math.sqrt(numel)
    return GradStats(
        norm=norm, mean=rms / 2, std=rms, min=-rms, max=rms, abs_max=rms,
        zero_frac=zero_frac, nan_count=nan, inf_count=0, numel=numel,
    )


class Builder:
    """Adds nodes in id order and edges producer -> consumer."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []

    def node(self, op: str, label: str, *, kind: str = OP, names: tuple[str, ...] = (),
             shape: tuple[int, ...] = (4, 8), module: str | None = None,
             rms: float | None = 0.1) -> int:
        i = len(self.nodes)
        g = None if rms is None else stats(rms, math.prod(shape) or 1)
        self.nodes.append(Node(
            id=i, op=op, kind=kind, label=label, names=names,
            outputs=(TensorMeta(shape, "float32", "cpu"),), module=module,
            source=Source("train.py", 10 + i, "forward") if kind == OP else None,
            grad=g, grads=(g,), executed=rms is not None, is_root=(i == 0), exec_order=i,
        ))
        return i

    def edge(self, src: int, dst: int, input_nr: int = 0) -> None:
        self.edges.append(Edge(src, dst, 0, input_nr, None))

    def graph(self, **kw) -> Graph:
        return Graph(nodes=self.nodes, edges=self.edges, roots=[0], passes=1, **kw)


def sigmoid_mlp(depth: int = 4) -> Graph:
    """loss <- sigmoid <- addmm(bias, x, t(weight)) ... with gradients fading toward the input.

    Layer ``k`` (0 = first in forward) has parameter RMS ``10 ** -(2 * (depth - k))``, so the
    first layer's weight is the faintest. Findings: a vanishing warning on ``fc0.weight`` and an
    info on the loss.
    """
    b = Builder()
    loss = b.node("MseLossBackward0", "mse_loss", shape=(), rms=1.0)
    prev = loss
    params: list[ParamInfo] = []
    weight_ids: dict[int, int] = {}
    bias_ids: dict[int, int] = {}
    for k in reversed(range(depth)):
        rms = 10.0 ** -(2 * (depth - k))
        sig = b.node("SigmoidBackward0", "sigmoid", module=f"fc{k}", rms=rms * 10)
        b.edge(sig, prev, 0 if prev == loss else 1)
        mm = b.node("AddmmBackward0", "addmm", module=f"fc{k}", rms=rms * 5)
        b.edge(mm, sig)
        bias = b.node("AccumulateGrad", f"fc{k}.bias", kind=PARAM, names=(f"fc{k}.bias",),
                      shape=(8,), module=f"fc{k}", rms=rms)
        t = b.node("TBackward0", "t", module=f"fc{k}", rms=rms)
        w = b.node("AccumulateGrad", f"fc{k}.weight", kind=PARAM, names=(f"fc{k}.weight",),
                   shape=(8, 4), module=f"fc{k}", rms=rms)
        b.edge(bias, mm, 0)
        b.edge(t, mm, 2)
        b.edge(w, t, 0)
        weight_ids[k] = w
        bias_ids[k] = bias
        prev = mm
    x = b.node("AccumulateGrad", "x", kind=LEAF, shape=(4, 4), rms=1e-9)
    b.edge(x, prev, 1)
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
    add = b.node("AddBackward0", "add", shape=())
    a = b.node("ExpBackward0", "exp")
    c = b.node("SinBackward0", "sin")
    x = b.node("MulBackward0", "mul")
    p = b.node("AccumulateGrad", "w", kind=PARAM, names=("w",))
    b.edge(a, add, 0)
    b.edge(c, add, 1)
    b.edge(x, a)
    b.edge(x, c)
    b.edge(p, x, 0)
    b.edge(p, x, 1)
    return b.graph()


def chain(n: int) -> Graph:
    """A straight chain of ``n`` ops ending in one parameter (a deep, flat heavy path)."""
    b = Builder()
    for i in range(n - 1):
        b.node("AddBackward0", f"add{i}", module=f"block{i // 100}")
        if i:
            b.edge(i, i - 1)
    w = b.node("AccumulateGrad", "w", kind=PARAM, names=("w",), rms=1e-12)
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
    loss = b.node("SumBackward0", "sum", shape=())
    b.nodes[loss] = replace(b.nodes[loss], grad=EXTREMES["huge"], grads=(EXTREMES["huge"],))
    prev = loss
    params: list[ParamInfo] = []
    ids: dict[str, int] = {}
    for name, g in reversed(EXTREMES.items()):
        op = b.node("MulBackward0", "mul", module=name)
        b.nodes[op] = replace(b.nodes[op], grad=g, grads=(g,))
        b.edge(op, prev)
        p = b.node("AccumulateGrad", f"{name}.weight", kind=PARAM, names=(f"{name}.weight",),
                   module=name)
        b.nodes[p] = replace(b.nodes[p], grad=g, grads=(g, g))
        b.edge(p, op, 1)
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
