"""The walk: topology at any scale without recursion (deep chains, exponential diamonds, wide
fan-in, parallel edges), deterministic ids, saved tensors described without unpacking (a
checkpoint is never recomputed), freed graphs walked for structure, and saved values read back
as the arguments the user passed to torch."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphscope
from tests.models import (
    Checkpointed,
    TiedLM,
    TinyMLP,
    assert_grads_identical,
    assert_norm,
    assert_param_norms,
    assert_same_structure,
    assert_stats,
    mlp_batch,
    mse,
    node_by_op,
    seeded,
    twins,
)


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


def test_self_product_keeps_both_edges():
    """x * x is two parallel edges from x into one mul, with input_nr 0 and 1, in the model and
    in graph.nx, each carrying the gradient sent to x along it."""
    x = torch.randn(5, requires_grad=True)
    loss = (x * x).sum()
    g = graphscope.capture(loss, warn=False)
    leaf, mul = node_by_op(g, "AccumulateGrad"), node_by_op(g, "MulBackward0")
    assert sorted(e.input_nr for e in g.in_edges(mul.id)) == [0, 1]
    assert {e.src for e in g.in_edges(mul.id)} == {leaf.id}
    assert g.nx.number_of_edges(leaf.id, mul.id) == 2
    loss.backward()
    for e in g.edges:
        if e.src == leaf.id:
            assert_norm(e.grad.norm, x.detach())
    assert_stats(leaf.grad, x.grad)


def test_node_ids_are_deterministic():
    """Two identical forward passes give the same node ids, ops and edges."""

    def ids():
        model = twins(TiedLM)[0]
        loss = model(torch.tensor([[1, 2]])).sum()
        with graphscope.capture(loss, model=model, warn=False) as g:
            return [(n.id, n.op, n.names) for n in g.nodes], [
                (e.src, e.dst, e.output_nr, e.input_nr) for e in g.edges
            ]

    assert ids() == ids()


def test_non_reentrant_checkpoint_walk_does_not_recompute():
    """Capturing a non-reentrant checkpoint reruns nothing; backward recomputes exactly once, as
    without graphscope; every op inside is visible and every parameter reached."""
    model, twin = twins(lambda: Checkpointed(reentrant=False))
    x, _ = mlp_batch()
    loss = model(x)
    assert model.block.calls == 1
    g = graphscope.capture(loss, model=model, warn=False)
    assert model.block.calls == 1
    assert_same_structure(g, [loss])
    assert {i.status for i in g.params} == {"reached"}
    inside = g.find("block.fc.weight")
    assert inside.grad is None
    packed = [m for n in g.nodes for m in n.saved if m.value and "saved_tensors_hooks" in m.value]
    assert packed, "saved tensors of the region should be described without unpacking"
    loss.backward()
    twin(x).backward()
    assert model.block.calls == twin.block.calls == 2
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 6
    assert graphscope.active_hook_count() == 0


def test_capture_after_backward_says_the_graph_was_freed():
    """A graph freed by an earlier backward is flagged, and its freed saved tensors are not
    described as if they had been None all along."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    loss = mse(model, x, y)
    before = graphscope.capture(loss, model=model, warn=False)
    before.close()
    live_saved = {n.op: n.saved for n in before.nodes}
    loss.backward()
    with pytest.warns(
        graphscope.RecordingWarning, match=r"already ran.*capture\(loss\) before.*retain_graph=True"
    ):
        g = graphscope.capture(loss, model=model)
    with g:
        assert g.meta["graph_freed"] is True
        # MseLossBackward0 saved two real tensors (self, target); once freed they must not read
        # as "NoneType" values, which is what an undefined optional tensor looks like.
        assert [m.value for m in live_saved["MseLossBackward0"] if m.name == "self"] == [None]
        freed = [m for m in g.nodes[g.roots[0]].saved if m.name in ("self", "target")]
        assert all(m.value != "NoneType" for m in freed), freed
    assert g.passes == 0


def _saved(graph, op: str) -> dict[str, str | None]:
    """``name -> value`` of the saved non-tensor values of the one node ``op``."""
    (node,) = [n for n in graph.nodes if n.op == op]
    return {m.name: m.value for m in node.saved if m.shape is None}


def test_saved_values_read_as_the_user_wrote_them():
    """Negative ints, tuples, bools, floats, strings and None saved by ops read as passed."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    conv = nn.Conv2d(3, 4, 3, stride=(1, 2), padding=1, bias=False)
    h = conv(x)
    logits = h.mean((-1, -2))
    y = torch.tensor([1, -100])
    parts = [
        F.cross_entropy(logits, y, ignore_index=-100),
        F.gelu(h, approximate="tanh").sum(dim=-1).tril(-1).sum(),
        F.pad(h, (-1, 2)).pow(2.5).sum(),
        h.clamp(min=-0.5).sum(),
        h.transpose(-1, -2).sum(),
    ]
    g = graphscope.capture(sum(parts))
    assert _saved(g, "NllLossBackward0")["ignore_index"] == repr(-100)
    assert _saved(g, "NllLossBackward0")["weight"] == repr(None)
    conv_saved = _saved(g, "ConvolutionBackward0")
    assert conv_saved["stride"] == repr(conv.stride) == "(1, 2)"
    assert conv_saved["padding"] == repr(conv.padding)
    assert conv_saved["transposed"] == repr(False)
    assert conv_saved["groups"] == repr(1)
    assert conv_saved["dilation"] == repr(conv.dilation)
    assert _saved(g, "MeanBackward1")["dim"] == repr((-1, -2))
    assert _saved(g, "TransposeBackward0") == {"dim0": repr(-1), "dim1": repr(-2)}
    assert _saved(g, "GeluBackward0")["approximate"] == repr("tanh")
    assert _saved(g, "SumBackward1")["dim"] == repr((-1,))
    assert _saved(g, "TrilBackward0")["diagonal"] == repr(-1)
    assert _saved(g, "ConstantPadNdBackward0")["pad"] == repr((-1, 2))
    assert _saved(g, "PowBackward0")["exponent"] == repr(2.5)
    assert _saved(g, "ClampBackward1") == {"min": repr(-0.5), "max": repr(None)}


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reduction_reads_as_its_name(reduction):
    """A loss's saved ``reduction`` (an enum int in torch) reads as the string the user passed."""
    x = torch.randn(3, 4, requires_grad=True)
    loss = F.mse_loss(x, torch.zeros(3, 4), reduction=reduction).sum()
    g = graphscope.capture(loss)
    assert _saved(g, "MseLossBackward0")["reduction"] == repr(reduction)


def test_embedding_padding_idx_reads_as_passed():
    """``padding_idx=None`` reads None (torch saves -1); an index reads as nn.Embedding keeps it."""
    for padding_idx in (None, 2, -1):
        emb = nn.Embedding(10, 3, padding_idx=padding_idx)
        g = graphscope.capture(emb(torch.tensor([1, 2])).sum())
        assert _saved(g, "EmbeddingBackward0")["padding_idx"] == repr(emb.padding_idx), padding_idx


def test_slice_bounds_read_as_written():
    """``x[-2:]`` saves start -2 and an open end (torch's INT64_MAX): they read -2 and None."""
    x = torch.randn(4, 5, requires_grad=True)
    cases = ((slice(-2, None), -2, None), (slice(1, None), 1, None), (slice(None, 3), 0, 3))
    for index, start, end in cases:
        g = graphscope.capture(x[:, index].sum())
        saved = _saved(g, "SliceBackward0")
        assert (saved["start"], saved["end"]) == (repr(start), repr(end)), index
