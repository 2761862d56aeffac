"""render() on a tensor: draws without side effects on the user's graph; model= names weights."""

from __future__ import annotations

import torch
from torch import nn

import graphscope
from graphscope.autograd import graph_of


def _model_and_loss() -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    return model, model(torch.randn(2, 3)).pow(2).mean()


def test_render_of_an_uncaptured_loss_arms_nothing():
    """Drawing a loss never captured adds no hook and links no capture to it."""
    model, loss = _model_and_loss()
    before = graphscope.active_hook_count()
    graphscope.render(loss)
    assert graphscope.active_hook_count() == before == 0
    assert graph_of(loss) is None
    loss.backward()  # observed by no one: no capture, no findings, nothing recorded
    assert graph_of(loss) is None


def test_render_of_an_uncaptured_loss_leaves_gradients_bit_identical():
    """A backward after render(loss) gives exactly the gradients of one without it."""
    model, loss = _model_and_loss()
    twin, plain = _model_and_loss()
    graphscope.render(loss)
    loss.backward()
    plain.backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_render_with_model_names_the_weights():
    """render(loss, model=m) labels the parameters with their qualified names."""
    model, loss = _model_and_loss()
    dot = graphscope.render(loss, model=model).dot
    for name in ("0.weight", "0.bias", "2.weight", "2.bias"):
        assert name in dot
    assert "0.weight" not in graphscope.render(loss).dot
