"""Topology at scale (issue 5.6, issue 2.1): deep chains and exponential diamonds without
recursion, very wide fan-in, multi-output nodes, weight tying and module reuse."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import torch
from torch import nn

import graphscope

from .models import Reused, Tied, assert_grads_identical, assert_param_norms, mlp_batch, twins
from .oracle import assert_norm, assert_same_structure, assert_stats, node_by_op


@contextmanager
def _shallow_recursion(headroom: int = 60):
    """Allow only ``headroom`` frames above the current depth: any recursive walk fails fast."""
    depth, frame = 0, sys._getframe()
    while frame is not None:
        depth, frame = depth + 1, frame.f_back
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + headroom)
    try:
        yield
    finally:
        sys.setrecursionlimit(old)


def test_ten_thousand_deep_chain():
    """A 10,000-op chain is walked iteratively, recorded in full, and changes no gradient."""
    x = torch.ones(3, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y, y2 = x, x2
    for _ in range(10_000):
        y, y2 = y * 1.0001, y2 * 1.0001
    loss, plain = y.sum(), y2.sum()
    with _shallow_recursion():
        g = graphscope.capture(loss, warn=False)
        _ = g.nx
    assert len(g.nodes) == 10_002
    assert_same_structure(g, [loss], iso=False)
    loss.backward()
    plain.backward()
    assert torch.equal(x.grad, x2.grad)
    assert all(n.executed for n in g.nodes)
    assert sorted(n.exec_order for n in g.nodes) == list(range(10_002))
    assert_stats(node_by_op(g, "AccumulateGrad").grad, x.grad)
    assert graphscope.active_hook_count() == 0


def test_diamond_chain_with_two_to_the_sixty_paths():
    """60 diamonds in a row (2^60 paths) cost one visit per node, and backward is recorded."""
    x = torch.linspace(-1, 1, 4).requires_grad_()
    y = x
    for _ in range(60):
        y = y * 0.5 + y * 0.5
    loss = y.sum()
    with _shallow_recursion():
        g = graphscope.capture(loss, warn=False)
    assert len(g.nodes) == 3 * 60 + 2
    assert len(g.edges) == 4 * 60 + 1
    assert_same_structure(g, [loss])
    loss.backward()
    assert all(n.executed for n in g.nodes)
    assert_stats(node_by_op(g, "AccumulateGrad").grad, x.grad)
    assert graphscope.active_hook_count() == 0


def test_twenty_thousand_wide_fan_in():
    """20,000 leaves stacked into one op: every leaf node recorded with its own gradient."""
    leaves = [torch.full((1,), float(i), requires_grad=True) for i in range(20_000)]
    loss = (torch.stack(leaves).squeeze(1) * torch.arange(20_000.0)).sum()
    g = graphscope.capture(loss, warn=False)
    assert len(g.nodes) == 20_000 + 4
    assert_same_structure(g, [loss], iso=False)
    stack = node_by_op(g, "StackBackward0")
    assert len(g.producers(stack.id)) == 20_000
    loss.backward()
    # Each leaf i got gradient i exactly: its norm is |i| in any precision.
    norms = sorted(n.grad.norm for n in g.nodes if n.op == "AccumulateGrad")
    assert norms == [float(i) for i in range(20_000)]
    assert graphscope.active_hook_count() == 0


def test_unbind_and_split_per_output_gradients():
    """unbind/split are multi-output nodes: each output's gradient is recorded, an unused output
    has none (not zeros), and the edges name the output they carry."""
    w = torch.randn(3, 4, requires_grad=True)
    a, b, c = w.unbind(0)
    p, q = w.split(2, dim=1)
    loss = (a * 1.5).sum() + (b**2).sum() + (p.sin()).sum()
    g = graphscope.capture(loss, warn=False)
    assert_same_structure(g, [loss])
    ga, gb, gp = torch.autograd.grad(loss, [a, b, p], retain_graph=True)
    loss.backward()
    unbind = node_by_op(g, "UnbindBackward0")
    assert len(unbind.outputs) == 3 and [m.shape for m in unbind.outputs] == [(4,)] * 3
    assert {e.output_nr for e in g.out_edges(unbind.id)} == {0, 1}
    assert_stats(unbind.grads[0], ga)
    assert_stats(unbind.grads[1], gb)
    assert unbind.grads[2] is None
    split = node_by_op(g, "SplitBackward0")
    assert_stats(split.grads[0], gp)
    assert split.grads[1] is None
    assert_stats(node_by_op(g, "AccumulateGrad").grad, w.grad)
    assert graphscope.active_hook_count() == 0


def test_lstm_multi_output_node():
    """The LSTM layer node has several outputs; each one's gradient equals autograd.grad and
    every parameter norm equals p.grad.norm()."""
    model, twin = twins(lambda: nn.LSTM(3, 5))
    x = torch.randn(4, 2, 3)
    out, (h, c) = model(x)
    loss = out.pow(2).mean() + h.sum() + c.abs().sum()
    g = graphscope.capture(loss, model=model, warn=False)
    assert_same_structure(g, [loss])
    (rnn,) = [n for n in g.nodes if len(n.outputs) > 1]
    assert rnn.op == out.grad_fn.name()
    g_out, g_h, g_c = torch.autograd.grad(loss, [out, h, c], retain_graph=True)
    loss.backward()
    o2, (h2, c2) = twin(x)
    (o2.pow(2).mean() + h2.sum() + c2.abs().sum()).backward()
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 4
    assert_stats(rnn.grads[0], g_out)
    assert_stats(rnn.grads[1], g_h[0])
    assert_stats(rnn.grads[2], g_c[0])
    assert graphscope.active_hook_count() == 0


def test_weight_tying_one_node_all_names_no_double_count():
    """A tied weight is one node listing every name, with several consumers; its recorded norm
    is the whole gradient once."""
    model, twin = twins(Tied)
    idx = torch.tensor([[1, 2, 3], [3, 3, 9]])
    target = torch.tensor([[2, 3, 4], [4, 9, 0]])

    def loss_of(m):
        return nn.functional.cross_entropy(m(idx).flatten(0, 1), target.flatten())

    loss = loss_of(model)
    g = graphscope.capture(loss, model=model, warn=False)
    assert_same_structure(g, [loss])
    tied = g.find("out.weight")
    assert tied is g.find("embed.weight")
    assert tied.names == ("embed.weight", "out.weight")
    assert len(g.param_nodes) == len(list(model.parameters()))
    assert len(g.consumers(tied.id)) >= 2
    infos = [i for i in g.params if i.node == tied.id]
    assert sorted(i.name for i in infos) == ["embed.weight", "out.weight"]
    loss.backward()
    loss_of(twin).backward()
    assert_grads_identical(model, twin)
    assert_norm(tied.grad.norm, model.embed.weight.grad)
    assert graphscope.active_hook_count() == 0


def test_module_reuse_one_param_node_two_consumers():
    """A Linear applied twice: one node per parameter, two consumers, norm equals p.grad."""
    model, twin = twins(Reused)
    x, y = mlp_batch()
    loss = nn.functional.mse_loss(model(x), y)
    g = graphscope.capture(loss, model=model, warn=False)
    assert_same_structure(g, [loss])
    assert len(g.param_nodes) == 4
    assert len(g.consumers(g.find("block.weight").id)) == 2
    assert len(g.consumers(g.find("block.bias").id)) == 2
    loss.backward()
    nn.functional.mse_loss(twin(x), y).backward()
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 4
    assert graphscope.active_hook_count() == 0


def test_self_product_keeps_both_edges():
    """x * x is two parallel edges from x into one mul, with input_nr 0 and 1."""
    x = torch.randn(5, requires_grad=True)
    loss = (x * x).sum()
    g = graphscope.capture(loss, warn=False)
    leaf, mul = node_by_op(g, "AccumulateGrad"), node_by_op(g, "MulBackward0")
    assert sorted(e.input_nr for e in g.edges if e.src == leaf.id and e.dst == mul.id) == [0, 1]
    assert g.nx.number_of_edges(leaf.id, mul.id) == 2
    loss.backward()
    for e in g.edges:
        if e.src == leaf.id:
            assert_norm(e.grad.norm, x.detach())
    assert_stats(leaf.grad, x.grad)


def test_node_ids_are_deterministic():
    """Two identical forward passes give the same node ids, ops and edges."""

    def structure():
        model = twins(Tied)[0]
        loss = model(torch.tensor([[1, 2]])).sum()
        with graphscope.capture(loss, model=model, warn=False) as g:
            return [(n.id, n.op, n.names) for n in g.nodes], [
                (e.src, e.dst, e.output_nr, e.input_nr) for e in g.edges
            ]

    assert structure() == structure()
