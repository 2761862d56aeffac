"""An independent oracle for captured graphs: torch's own autograd graph and gradients.

Deliberately shares no code with ``graphscope.autograd``: the structure comes from a depth-first
walk over ``next_functions`` (graphscope walks breadth-first), the numbers from torch reductions
done here in float64 on the very tensors torch produced. Tests compare graphscope's ``Graph``
against these as multisets, never by node id, so the oracle does not depend on graphscope's
traversal order.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

import networkx as nx
import pytest
import torch

import graphscope


@dataclass
class Structure:
    """The autograd graph under some roots: distinct nodes and every (producer, consumer) edge."""

    fns: list[Any] = field(default_factory=list)
    # (producer index, consumer index, output_nr, input_nr), forward direction.
    edges: list[tuple[int, int, int, int]] = field(default_factory=list)

    @property
    def ops(self) -> Counter:
        return Counter(type(f).__name__ for f in self.fns)

    @property
    def edge_ops(self) -> Counter:
        return Counter(
            (type(self.fns[s]).__name__, type(self.fns[d]).__name__, o, i)
            for s, d, o, i in self.edges
        )

    @property
    def leaf_ids(self) -> set[int]:
        """``id()`` of every tensor whose ``AccumulateGrad`` the graph reaches."""
        return {id(f.variable) for f in self.fns if type(f).__name__ == "AccumulateGrad"}

    def to_nx(self) -> nx.MultiDiGraph:
        g = nx.MultiDiGraph()
        for i, f in enumerate(self.fns):
            g.add_node(i, op=type(f).__name__)
        for s, d, o, i in self.edges:
            g.add_edge(s, d, key=i, output_nr=o, input_nr=i)
        return g


def structure(roots: Iterable[torch.Tensor]) -> Structure:
    """Depth-first walk from each root tensor's ``grad_fn`` (an explicit stack, no recursion)."""
    out = Structure()
    index: dict[Any, int] = {}
    stack: list[Any] = []
    for t in roots:
        if t.grad_fn is not None and t.grad_fn not in index:
            index[t.grad_fn] = len(out.fns)
            out.fns.append(t.grad_fn)
            stack.append(t.grad_fn)
    while stack:
        fn = stack.pop()
        for input_nr, (child, output_nr) in enumerate(fn.next_functions):
            if child is None:
                continue
            if child not in index:
                index[child] = len(out.fns)
                out.fns.append(child)
                stack.append(child)
            out.edges.append((index[child], index[fn], output_nr, input_nr))
    return out


def graph_ops(g: graphscope.Graph) -> Counter:
    return Counter(n.op for n in g.nodes)


def graph_edge_ops(g: graphscope.Graph) -> Counter:
    return Counter(
        (g.nodes[e.src].op, g.nodes[e.dst].op, e.output_nr, e.input_nr) for e in g.edges
    )


def assert_same_structure(g: graphscope.Graph, roots: Iterable[torch.Tensor], *, iso: bool = True) -> Structure:
    """graphscope's node and edge multisets equal the oracle's (and, for small graphs, the
    labelled multigraphs are isomorphic)."""
    s = structure(roots)
    assert len(g.nodes) == len(s.fns)
    assert len(g.edges) == len(s.edges)
    assert graph_ops(g) == s.ops
    assert graph_edge_ops(g) == s.edge_ops
    assert g.nx.number_of_nodes() == len(s.fns)
    assert g.nx.number_of_edges() == len(s.edges)
    if iso and len(s.fns) <= 200:
        assert nx.is_isomorphic(
            s.to_nx(),
            g.nx,
            node_match=lambda a, b: a["op"] == b["op"],
            edge_match=lambda a, b: sorted((d["output_nr"], d["input_nr"]) for d in a.values())
            == sorted((d["output_nr"], d["input_nr"]) for d in b.values()),
        )
    return s


def dense(t: torch.Tensor) -> torch.Tensor:
    """The gradient as torch means it: sparse made dense (duplicates summed), complex as magnitude."""
    if t.layout != torch.strided:
        t = t.to_dense()
    if t.is_complex():
        t = t.abs()
    return t.detach()


# graphscope may reduce in fp32 or fp64 (issue 2.3), torch's own ``t.norm()`` reduces in the
# tensor's dtype: the two agree to fp32 rounding, a few ulps over the sizes used here.
NORM_REL = 1e-6


def assert_norm(recorded: float, t: torch.Tensor) -> None:
    """``recorded`` is the 2-norm of ``t``: equal to its exact (fp64) norm and, for fp32/fp64
    tensors, to torch's own ``t.norm()``, up to fp32 rounding."""
    d = dense(t)
    exact = float(torch.linalg.vector_norm(d.to(torch.float64)))
    assert math.isclose(recorded, exact, rel_tol=NORM_REL, abs_tol=1e-300), (recorded, exact)
    if t.dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128):
        theirs = float(t.detach().norm())
        assert math.isclose(recorded, theirs, rel_tol=NORM_REL, abs_tol=1e-300), (recorded, theirs)


def assert_stats(s: graphscope.GradStats | None, t: torch.Tensor, *, rel: float = 1e-5) -> None:
    """Recorded statistics describe tensor ``t``: counts, min and max exact, the norm to fp32
    rounding (``assert_norm``), mean and std to a relative 1e-5 of the magnitudes (fp32
    accumulation is allowed)."""
    assert s is not None, "expected recorded gradient statistics, got None (no gradient)"
    d = dense(t).reshape(-1)
    d64 = d.to(torch.float64)
    n = d.numel()
    assert s.numel == n
    assert s.nan_count == int(torch.isnan(d64).sum())
    assert s.inf_count == int(torch.isinf(d64).sum())
    assert s.zero_frac == pytest.approx(float((d64 == 0).sum()) / n if n else 0.0, rel=1e-12)
    if s.nan_count == 0:
        assert_norm(s.norm, t)
        if n:
            assert s.min == float(d64.min())
            assert s.max == float(d64.max())
            assert s.abs_max == float(d64.abs().max())
            if s.inf_count == 0:
                # fp32 accumulation error scales with the magnitudes, not with the (possibly
                # cancelling) mean itself.
                tol = rel * float(d64.abs().mean()) + 1e-30
                assert math.isclose(s.mean, float(d64.mean()), rel_tol=rel, abs_tol=tol)
                assert math.isclose(s.std, float(d64.std(correction=0)), rel_tol=rel, abs_tol=tol)
    else:
        assert math.isnan(s.norm)


def node_by_op(g: graphscope.Graph, op: str) -> graphscope.Node:
    """The one node whose autograd class is ``op`` (the test's model must have exactly one)."""
    found = [n for n in g.nodes if n.op == op]
    assert len(found) == 1, f"expected one {op} node, found {len(found)}: {[n.id for n in found]}"
    return found[0]


def param_node(g: graphscope.Graph, name: str) -> graphscope.Node:
    return g.find(name)
