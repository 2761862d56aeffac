"""Property-based tests (issue 5.13) on random small models built from linear, activation, add,
mul, unbind and cat/split ops: a capture changes nothing, its structure is torch's, every
parameter has exactly one status, and parameter norms are torch's."""

from __future__ import annotations

import copy

import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import graphscope

from .oracle import assert_norm, assert_same_structure, structure

LAYERS = 4
src = st.integers(0, 63)  # an index into the pool of tensors made so far (taken modulo its size)
OPS = st.one_of(
    st.tuples(st.just("linear"), st.integers(0, LAYERS - 1), src),
    st.tuples(st.just("act"), st.sampled_from(["relu", "tanh", "sigmoid"]), src),
    st.tuples(st.just("add"), src, src),
    st.tuples(st.just("mul"), src, src),  # mul(i, i) is x * x: two parallel edges
    st.tuples(st.just("unbind"), src, st.permutations(range(4))),
    st.tuples(st.just("cat"), src, src, st.integers(0, 1)),
    st.tuples(st.just("detach"), src),
)
PROGRAMS = st.lists(OPS, min_size=1, max_size=8)


class Program(nn.Module):
    """Runs a list of ops over a growing pool of (3, 4) tensors; some layers may be frozen."""

    def __init__(self, frozen: list[bool]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(LAYERS))
        for layer, f in zip(self.layers, frozen):
            layer.requires_grad_(not f)

    def forward(self, x: torch.Tensor, ops: list[tuple]) -> torch.Tensor:
        pool = [x, self.layers[0](x)]

        def at(i: int) -> torch.Tensor:
            return pool[i % len(pool)]

        for op in ops:
            kind = op[0]
            if kind == "linear":
                out = self.layers[op[1]](at(op[2]))
            elif kind == "act":
                out = getattr(torch, op[1])(at(op[2]))
            elif kind == "add":
                out = at(op[1]) + at(op[2])
            elif kind == "mul":
                out = at(op[1]) * at(op[2])
            elif kind == "unbind":  # a multi-output node, one output used twice, one dropped
                parts = at(op[1]).unbind(1)
                p = op[2]
                out = torch.stack([parts[p[0]], parts[p[1]], parts[p[2]], parts[p[0]]], 1)
            elif kind == "cat":  # cat then split: a multi-output split node
                out = torch.cat([at(op[1]), at(op[2])], 1).split(4, 1)[op[3]]
            else:
                out = at(op[1]).detach()
            pool.append(out)
        return pool[-1].pow(2).mean() + pool[-2].tanh().sum()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=PROGRAMS, frozen=st.lists(st.booleans(), min_size=LAYERS, max_size=LAYERS), seed=st.integers(0, 2**16))
def test_random_models(ops, frozen, seed):
    """On a random model: outputs and gradients bit-identical with and without a capture; node
    and edge multisets equal the independent walk; each parameter exactly one of reached /
    unreachable / frozen / opaque, consistent with torch; recorded norms equal p.grad.norm()."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Program(frozen)
        x = torch.randn(3, 4)
    twin = copy.deepcopy(model)
    loss = model(x, ops)
    assume(loss.grad_fn is not None)
    plain = twin(x, ops)
    assert torch.equal(loss, plain)

    g = graphscope.capture(loss, model=model, warn=False)
    oracle = assert_same_structure(g, [loss])
    loss.backward()
    plain.backward()
    assert graphscope.active_hook_count() == 0
    assert torch.equal(loss, plain)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), name

    names = [name for name, _ in model.named_parameters()]
    assert sorted(i.name for i in g.params) == sorted(names)
    for info in g.params:
        p = model.get_parameter(info.name)
        assert info.status in ("reached", "unreachable", "frozen", "opaque")
        if id(p) in oracle.leaf_ids:
            assert info.status == "reached", info
            node = g.nodes[info.node]
            assert info.name in node.names and node.kind == "param"
            if p.grad is None:
                assert node.grad is None, info
            else:
                assert node.grad is not None, info
                assert_norm(node.grad.norm, p.grad)
        elif not p.requires_grad:
            assert info.status == "frozen", info
        else:
            assert info.status == "unreachable", info
            assert p.grad is None
    assert {f.param for f in g.findings if f.kind == "unreachable_param"} == {
        i.name for i in g.params if i.status == "unreachable"
    }


def test_oracle_sees_what_torch_sees():
    """Self-check of the oracle: x * x gives one leaf, one mul and two edges."""
    x = torch.randn(2, requires_grad=True)
    s = structure([(x * x).sum()])
    assert s.ops == {"SumBackward0": 1, "MulBackward0": 1, "AccumulateGrad": 1}
    assert len(s.edges) == 3
