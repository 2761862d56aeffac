"""Graph lifetime (issue 5.2): freed graphs, retained graphs, double backward, partial backward
and graphs that change every step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphscope

from .models import TinyMLP, assert_grads_identical, mlp_batch, mse, seeded, twins
from .oracle import assert_norm, assert_same_structure, assert_stats, node_by_op


def _second_backward_error(loss: torch.Tensor) -> RuntimeError:
    with pytest.raises(RuntimeError) as info:
        loss.backward()
    return info.value


def test_capture_after_backward_walks_structure_and_passes_torch_error_through():
    """Capturing a freed graph gives its structure; the second backward's error is torch's own."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()
    loss, plain = mse(model, x, y), mse(twin, x, y)
    loss.backward()
    plain.backward()
    with pytest.warns(graphscope.RecordingWarning, match="already ran"):
        g = graphscope.capture(loss, model=model, warn=False)
    with g:
        assert_same_structure(g, [loss])
        assert all(info.status == "reached" for info in g.params)
        err = _second_backward_error(loss)
    expected = _second_backward_error(plain)
    assert type(err) is type(expected) and str(err) == str(expected)
    assert graphscope.active_hook_count() == 0
    assert_grads_identical(model, twin)


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
    with pytest.warns(graphscope.RecordingWarning, match="already ran"):
        g = graphscope.capture(loss, model=model, warn=False)
    with g:
        assert g.meta["graph_freed"] is True
        # MseLossBackward0 saved two real tensors (self, target); once freed they must not read
        # as "NoneType" values, which is what an undefined optional tensor looks like.
        assert [m.value for m in live_saved["MseLossBackward0"] if m.name == "self"] == [None]
        freed = [m for m in g.nodes[g.roots[0]].saved if m.name in ("self", "target")]
        assert all(m.value != "NoneType" for m in freed), freed


def test_retain_graph_twice_records_two_separate_passes():
    """Two backwards through a retained graph: two passes, the second one's numbers only."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()
    loss = mse(model, x, y)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward(retain_graph=True)
    mse(twin, x, y).backward(torch.tensor(3.0))  # what pass two alone gives
    first = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert g.passes == 1
    assert graphscope.active_hook_count() > 0  # still armed: the user may backward again
    for name, grad in first.items():
        assert_norm(g.find(name).grad.norm, grad)
    loss.backward(torch.tensor(3.0))
    assert g.passes == 2
    assert graphscope.active_hook_count() == 0
    for name, p in twin.named_parameters():
        assert_stats(g.find(name).grad, p.grad)
        assert g.find(name).grad.norm != float(first[name].norm())
    assert_stats(g.nodes[g.roots[0]].grad, torch.tensor(3.0))
    order = [n.exec_order for n in g.backward_order()]
    assert order == list(range(len(order)))


def test_create_graph_and_double_backward():
    """create_graph=True then a backward through the gradient: values are torch's, hooks end at 0."""
    x = torch.linspace(-1, 1, 5).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y = (x**3).sum()
    with graphscope.capture(y, warn=False) as g:
        (gx,) = torch.autograd.grad(y, x, create_graph=True)
        # autograd.grad does not run AccumulateGrad: the leaf is not executed, its consumer's edge is.
        leaf = node_by_op(g, "AccumulateGrad")
        assert leaf.grad is None and not leaf.executed
        (edge,) = [e for e in g.edges if e.src == leaf.id]
        assert_stats(edge.grad, gx)
        gx.sum().backward()
    (gx2,) = torch.autograd.grad((x2**3).sum(), x2, create_graph=True)
    gx2.sum().backward()
    assert torch.equal(gx, gx2)
    assert torch.equal(x.grad, x2.grad)
    assert graphscope.active_hook_count() == 0


def test_autograd_grad_on_an_intermediate_prunes_the_rest():
    """autograd.grad(loss, h): nodes below h are reported not executed with no gradient, and are
    never called vanishing or dead."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    h = torch.tanh(model.fc1(x))
    loss = nn.functional.mse_loss(model.head(torch.sigmoid(model.fc2(h))), y)
    g = graphscope.capture(loss, model=model, warn=False)
    (gh,) = torch.autograd.grad(loss, h)
    assert g.passes == 1
    assert graphscope.active_hook_count() == 0
    for name in ("fc1.weight", "fc1.bias"):
        node = g.find(name)
        assert node.grad is None and not node.executed and node.exec_order is None
    tanh = node_by_op(g, "TanhBackward0")
    assert tanh.grad is None and not tanh.executed
    # h's consumer (fc2's addmm) sent exactly torch's gradient back along the edge to tanh.
    (edge,) = [e for e in g.edges if e.src == tanh.id]
    assert_stats(edge.grad, gh)
    for name in ("fc2.weight", "head.weight"):
        assert g.find(name).grad is None  # autograd.grad does not accumulate into leaves
    pruned = {n.id for n in g.nodes if not n.executed}
    assert not [f for f in g.findings if f.node in pruned and f.kind in ("vanishing", "dead")]
    assert all(info.status == "reached" for info in g.params)


def test_backward_inputs_records_only_what_ran():
    """backward(inputs=[w]) : only w's branch runs; other parameters are pruned, not zero."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()
    loss = mse(model, x, y)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward(inputs=[model.fc2.weight])
    mse(twin, x, y).backward(inputs=[twin.fc2.weight])
    assert_grads_identical(model, twin)
    assert graphscope.active_hook_count() == 0
    w = g.find("fc2.weight")
    assert w.executed
    assert_norm(w.grad.norm, model.fc2.weight.grad)
    for name, p in model.named_parameters():
        if name != "fc2.weight":
            node = g.find(name)
            assert p.grad is None and node.grad is None and not node.executed, name
    pruned = {n.id for n in g.nodes if not n.executed}
    assert not [f for f in g.findings if f.node in pruned and f.kind in ("vanishing", "dead")]
    assert not [f for f in g.findings if f.kind == "unreachable_param"]


def test_dynamic_control_flow_each_step_its_own_graph():
    """A forward whose depth changes per step: each capture matches that step's graph only."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    sizes = []
    for step in range(6):
        h = model.fc1(x)
        for _ in range(step % 3):
            h = torch.tanh(model.fc2(h)) if step % 2 else torch.relu(model.fc2(h))
        loss = nn.functional.mse_loss(model.head(h), y)
        model.zero_grad()
        g = graphscope.capture(loss, model=model, warn=False)
        assert_same_structure(g, [loss])
        loss.backward()
        assert g.passes == 1
        assert graphscope.active_hook_count() == 0
        assert all(n.executed for n in g.nodes)
        used = {"fc1.weight", "fc1.bias", "head.weight", "head.bias"}
        if step % 3:
            used |= {"fc2.weight", "fc2.bias"}
        for info in g.params:
            assert info.status == ("reached" if info.name in used else "unreachable"), info
        sizes.append(len(g.nodes))
    assert len(set(sizes)) == 3
