"""The tour's lessons as demos (``graphscope demo tour-03``): each builds its tensors in plain
PyTorch, captures with the learner's names, runs backward. The scripts in ``examples/tour/``
are what a learner reads; these are their in-app twins (a demo never imports ``examples/``).
Imports torch and the capture layer; ``graphscope.demos`` imports it on first build only.
"""

from __future__ import annotations

import torch

from graphscope.autograd import capture
from graphscope.model import Graph


def chain_rule() -> Graph:
    """y = w * x + b with x = 2, w = -3, b = 1: every node's value and gradient."""
    x = torch.tensor(2.0, requires_grad=True)
    w = torch.tensor(-3.0, requires_grad=True)
    b = torch.tensor(1.0, requires_grad=True)
    y = w * x + b
    graph = capture(y, warn=False, names={"x": x, "w": w, "b": b, "y": y})
    y.backward()
    return graph
