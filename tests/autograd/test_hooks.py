"""Which backward passes a capture records, and what it says when recording fails.

Parameters' ``AccumulateGrad`` nodes are shared by every graph that uses them, so a capture's
hooks also fire for other graphs' backwards; those passes must leave the capture untouched.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import graphscope
from graphscope.autograd import stats as statsmod
from graphscope.errors import RecordingWarning


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _batch(seed: int) -> torch.Tensor:
    return torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))


def _snapshot(g: graphscope.Graph) -> list:
    return [(n.executed, n.exec_order, n.grad) for n in g.nodes] + [e.grad for e in g.edges]


def _param_norms_match(g: graphscope.Graph, grads: dict[str, torch.Tensor]) -> None:
    for name, grad in grads.items():
        assert g.find(name).grad.norm == pytest.approx(grad.double().norm().item(), rel=1e-6), name


def test_unrelated_backward_leaves_a_retained_capture_untouched():
    """A second graph's backward through shared parameters is not recorded as the capture's pass."""
    model = _mlp()
    loss1 = model(_batch(1)).pow(2).mean()
    g = graphscope.capture(loss1, model=model, warn=False)
    loss1.backward(retain_graph=True)
    first = {name: p.grad.clone() for name, p in model.named_parameters()}
    before = _snapshot(g)
    model.zero_grad()
    model(_batch(2)).sum().backward()  # another graph: same AccumulateGrad nodes
    assert g.passes == 1
    assert _snapshot(g) == before
    assert all(n.executed for n in g.nodes)
    _param_norms_match(g, first)
    # The capture's own graph is still recorded when it runs again.
    loss1.backward(torch.tensor(2.0))
    assert g.passes == 2
    assert g.nodes[g.roots[0]].grad.max == 2.0
    assert graphscope.active_hook_count() == 0


def test_gan_style_two_losses_each_capture_keeps_its_own():
    """Two captures over one model (real and fake batches): each records only its own loss."""
    model = _mlp()
    real = model(_batch(1)).mean()
    fake = model(_batch(2)).mean()
    g_real = graphscope.capture(real, model=model, warn=False)
    g_fake = graphscope.capture(fake, model=model, warn=False)
    (ref_real,) = torch.autograd.grad(real, [model[0].weight], retain_graph=True)
    (ref_fake,) = torch.autograd.grad(fake, [model[0].weight], retain_graph=True)
    assert g_real.passes == g_fake.passes == 1  # autograd.grad through each root is a pass
    model.zero_grad()
    real.backward()
    assert (g_real.passes, g_fake.passes) == (2, 1)
    fake.backward()
    assert (g_real.passes, g_fake.passes) == (2, 2)
    assert g_real.find("0.weight").grad.norm == pytest.approx(ref_real.norm().item(), rel=1e-6)
    assert g_fake.find("0.weight").grad.norm == pytest.approx(ref_fake.norm().item(), rel=1e-6)
    assert graphscope.active_hook_count() == 0


class _Boom(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("boom")


def test_backward_after_a_raised_pass_is_not_recorded():
    """After a backward that raised (hooks still armed), another graph's backward is not ours."""
    model = _mlp()
    loss = _Boom.apply(model(_batch(1))).sum()
    with graphscope.capture(loss, model=model, warn=False) as g:
        with pytest.raises(RuntimeError, match="boom"):
            loss.backward()
        model.zero_grad()
        model(_batch(2)).sum().backward()
        assert g.passes == 0
        assert not any(n.executed for n in g.nodes)
        assert all(n.grad is None for n in g.nodes)
    assert graphscope.active_hook_count() == 0


def test_gradient_penalty_double_backward_keeps_the_first_pass():
    """autograd.grad(create_graph=True) then a backward through the gradients: the capture keeps
    the first pass's statistics, and the user's gradients are torch's."""
    model = _mlp()
    x = _batch(1)
    loss = model(x).pow(2).mean()
    params = list(model.parameters())
    with graphscope.capture(loss, model=model, warn=False) as g:
        grads = torch.autograd.grad(loss, params, create_graph=True)
        before = _snapshot(g)
        penalty = sum(gr.pow(2).sum() for gr in grads)
        penalty.backward()
        assert g.passes == 1
        assert _snapshot(g) == before
    # torch is the oracle: the same steps without graphscope give the same .grad.
    twin = _mlp()
    tl = twin(x).pow(2).mean()
    tgrads = torch.autograd.grad(tl, list(twin.parameters()), create_graph=True)
    sum(gr.pow(2).sum() for gr in tgrads).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad)
    for (name, _), gr in zip(model.named_parameters(), grads):
        assert g.find(name).grad is None  # autograd.grad runs no AccumulateGrad
        (edge,) = [e for e in g.edges if e.src == g.find(name).id]
        assert edge.grad.norm == pytest.approx(gr.detach().double().norm().item(), rel=1e-6)


def test_a_bigger_graph_through_the_root_is_a_pass():
    """A backward from a loss built on top of the captured one runs through its root: recorded."""
    model = _mlp()
    loss = model(_batch(1)).mean()
    g = graphscope.capture(loss, model=model, warn=False)
    (loss * 3).backward()
    assert g.passes == 1
    assert g.nodes[g.roots[0]].grad.max == pytest.approx(3.0)
    assert all(n.executed for n in g.nodes)


def test_an_error_inside_a_hook_is_a_warning_naming_the_node(monkeypatch):
    """A statistics failure during backward warns once, naming the op; the backward is unharmed."""
    model = _mlp()
    twin = _mlp()
    x = _batch(1)
    loss = model(x).pow(2).mean()
    g = graphscope.capture(loss, model=model, warn=False)
    tanh = next(n for n in g.nodes if n.op == "TanhBackward0")
    real_add = statsmod.StatsBatch.add

    def failing_add(self, t):
        if t.shape == (5, 8):  # the gradient the last addmm sends to the tanh, and the tanh's
            raise RuntimeError("simulated kernel failure")
        return real_add(self, t)

    monkeypatch.setattr(statsmod.StatsBatch, "add", failing_add)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loss.backward()
    mine = [w for w in seen if issubclass(w.category, RecordingWarning)]
    assert len(mine) == 1, [str(w.message) for w in seen]
    text = str(mine[0].message)
    # The first node that failed is named (the addmm sending the gradient); the others that
    # failed after it (the tanh) add no second warning.
    assert "addmm" in text and "module 2" in text and "simulated kernel failure" in text
    assert tanh.executed and tanh.grad is None  # missing, and said so, not silently absent
    assert g.passes == 1 and g.find("0.weight").grad is not None
    twin(x).pow(2).mean().backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad)
    assert graphscope.active_hook_count() == 0
