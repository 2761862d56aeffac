"""Tiny models, and torch as the oracle, for the tests that capture real autograd graphs.

Every builder is seeded inside ``fork_rng`` so building a model never moves the caller's random
state, and two builds with the same seed are bit-identical twins: one is run under a capture,
the other without, and torch's own results for the plain twin are the oracle.

The structure oracle shares no code with ``graphscope.autograd``: ``structure`` is its own
breadth-first walk over ``next_functions``, and the numbers come from torch reductions done here
in float64 on the very tensors torch produced. ``assert_same_structure`` compares graphscope's
``Graph`` against it as multisets (and, for small graphs, as isomorphic labelled multigraphs);
``assert_same_order`` also checks that node ids follow the breadth-first order.
"""

from __future__ import annotations

import copy
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import networkx as nx
import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import graphscope

# -- models -------------------------------------------------------------------------------------


def seeded(factory: Callable[[], object], seed: int = 0) -> object:
    """``factory()`` under ``manual_seed(seed)``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


class TinyMLP(nn.Module):
    """Linear -> tanh -> Linear -> sigmoid -> Linear: one op of each kind, easy to find."""

    def __init__(self, d_in: int = 4, hidden: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.sigmoid(self.fc2(torch.tanh(self.fc1(x)))))


class TiedLM(nn.Module):
    """A language-model toy whose output projection reuses the embedding matrix."""

    def __init__(self, vocab: int = 11, d: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.proj = nn.Linear(d, d)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.proj(self.embed(tokens))))


class Reused(nn.Module):
    """One Linear applied twice (module reuse), then a head."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.block = nn.Linear(d, d)
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.block(torch.tanh(self.block(x)))))


class CountingBlock(nn.Module):
    """A checkpointable block that counts how often its forward runs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.fc(x))


class Checkpointed(nn.Module):
    """pre -> checkpoint(block) -> head; ``how`` the region is called, ``share`` whether the
    block's parameters are also used outside it."""

    def __init__(self, reentrant: bool, how: str = "module", share: bool = False) -> None:
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.block = CountingBlock()
        self.head = nn.Linear(4, 1)
        self.reentrant, self.how, self.share = reentrant, how, share

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        if self.share:
            h = self.block.fc(h)
        block = self.block
        run = {"module": block, "method": block.forward, "closure": lambda t: block(t)}[self.how]
        h = checkpoint(run, h, use_reentrant=self.reentrant)
        return self.head(h).pow(2).mean()


class Poison(torch.autograd.Function):
    """Identity in forward; its backward turns the gradient into NaN: a NaN born at a known node."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return g * float("nan")


def mlp_batch(seed: int = 1, n: int = 5, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return seeded(lambda: (torch.randn(n, d), torch.randn(n, 1)), seed)  # type: ignore[return-value]


def mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def twins(factory: Callable[[], nn.Module], seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Two bit-identical copies of a model: one for graphscope, one for the plain torch run."""
    model = seeded(factory, seed)
    return model, copy.deepcopy(model)  # type: ignore[return-value]


# -- torch's gradients as the oracle -------------------------------------------------------------


def grads(model: nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}


def assert_grads_identical(a: nn.Module, b: nn.Module) -> None:
    """Every parameter gradient of ``a`` equals ``b``'s bit for bit (or both are None)."""
    ga, gb = grads(a), grads(b)
    assert ga.keys() == gb.keys()
    for name in ga:
        x, y = ga[name], gb[name]
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.layout == y.layout, name
            if x.is_sparse:
                assert torch.equal(x._indices(), y._indices()), name
                assert torch.equal(x._values(), y._values()), name
            else:
                assert torch.equal(x, y), name


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


def assert_param_norms(g: graphscope.Graph, model: nn.Module) -> int:
    """Each reached parameter's recorded norm equals ``p.grad.norm()``; returns how many."""
    checked = 0
    for name, p in model.named_parameters():
        info = next(i for i in g.params if i.name == name)
        if info.status != "reached":
            continue
        node = g.nodes[info.node]
        if p.grad is None:
            assert node.grad is None, name
            continue
        assert node.grad is not None, name
        assert_norm(node.grad.norm, p.grad)
        checked += 1
    return checked


def node_by_op(g: graphscope.Graph, op: str) -> graphscope.Node:
    """The one node whose autograd class is ``op`` (the test's model must have exactly one)."""
    found = [n for n in g.nodes if n.op == op]
    assert len(found) == 1, f"expected one {op} node, found {len(found)}: {[n.id for n in found]}"
    return found[0]


# -- torch's graph as the oracle -----------------------------------------------------------------


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
    """Breadth-first walk from each root tensor's ``grad_fn`` (a queue, no recursion)."""
    out = Structure()
    index: dict[Any, int] = {}
    queue: deque[Any] = deque()
    for t in roots:
        if t.grad_fn is not None and t.grad_fn not in index:
            index[t.grad_fn] = len(out.fns)
            out.fns.append(t.grad_fn)
            queue.append(t.grad_fn)
    while queue:
        fn = queue.popleft()
        for input_nr, (child, output_nr) in enumerate(fn.next_functions):
            if child is None:
                continue
            if child not in index:
                index[child] = len(out.fns)
                out.fns.append(child)
                queue.append(child)
            out.edges.append((index[child], index[fn], output_nr, input_nr))
    return out


def assert_same_structure(
    g: graphscope.Graph, roots: Iterable[torch.Tensor], *, iso: bool = True
) -> Structure:
    """graphscope's node and edge multisets equal the oracle's (and, for small graphs, the
    labelled multigraphs are isomorphic)."""
    s = structure(roots)
    assert len(g.nodes) == len(s.fns)
    assert len(g.edges) == len(s.edges)
    assert Counter(n.op for n in g.nodes) == s.ops
    assert (
        Counter((g.nodes[e.src].op, g.nodes[e.dst].op, e.output_nr, e.input_nr) for e in g.edges)
        == s.edge_ops
    )
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


def assert_same_order(g: graphscope.Graph, roots: Iterable[torch.Tensor]) -> Structure:
    """Node ids are the breadth-first order from the roots, and each edge joins the same two
    autograd nodes (with the same output_nr and input_nr) as in torch's graph."""
    s = structure(roots)
    assert [type(f).__name__ for f in s.fns] == [n.op for n in g.nodes]
    assert Counter(s.edges) == Counter((e.src, e.dst, e.output_nr, e.input_nr) for e in g.edges)
    return s
