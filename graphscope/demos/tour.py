"""The tour's lessons as demos (``graphscope demo tour-03``): each builds its tensors in plain
PyTorch, captures with the learner's names, runs backward. The scripts in ``examples/tour/``
are what a learner reads; these are their in-app twins (a demo never imports ``examples/``).
Imports torch and the capture layer; ``graphscope.demos`` imports it on first build only.
"""

from __future__ import annotations

import torch

from graphscope.autograd import capture
from graphscope.model import Graph


def requires_grad() -> Graph:
    """s = a * c with a leaf a that requires grad and a constant c that does not."""
    a = torch.tensor(3.0, requires_grad=True)
    c = torch.tensor(4.0)
    s = a * c
    graph = capture(s, warn=False, names={"a": a, "s": s})
    s.backward()
    return graph


def scalar_backward() -> Graph:
    """loss = (x ** 2).sum() for x = [1, 2, 3]: one number to differentiate, x.grad = 2x."""
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x ** 2
    loss = y.sum()
    graph = capture(loss, warn=False, names={"x": x, "y": y, "loss": loss})
    loss.backward()
    return graph


def linear_regression() -> Graph:
    """mse_loss of nn.Linear(2, 1) on three points: a one-layer network with no activation."""
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 2, generator=gen))
        model.bias.copy_(torch.randn(1, generator=gen))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    target = torch.tensor([[1.0], [2.0], [3.0]])
    loss = torch.nn.functional.mse_loss(model(x), target)
    graph = capture(loss, model=model, warn=False, names={"x": x, "target": target, "loss": loss})
    loss.backward()
    return graph


def chain_rule() -> Graph:
    """y = w * x + b with x = 2, w = -3, b = 1: every node's value and gradient."""
    x = torch.tensor(2.0, requires_grad=True)
    w = torch.tensor(-3.0, requires_grad=True)
    b = torch.tensor(1.0, requires_grad=True)
    y = w * x + b
    graph = capture(y, warn=False, names={"x": x, "w": w, "b": b, "y": y})
    y.backward()
    return graph
