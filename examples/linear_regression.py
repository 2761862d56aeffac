"""Linear regression as a one-layer network: the smallest autograd graph worth drawing.

    python examples/linear_regression.py [OUT_DIR]      # writes OUT_DIR/linear_regression.svg

The model is ``nn.Linear(3, 1)`` with no activation and an MSE loss, so the whole graph is
``weight -> t -> addmm <- bias``, then ``mse_loss``. Look for: the two parameters (cylinders)
each get their gradient from one op; the edge labels give every tensor's shape.
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope
from graphscope.formatting import fmt_stats

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")

model = nn.Linear(3, 1)
x = torch.randn(64, 3)
y = x @ torch.tensor([[2.0], [-1.0], [0.5]]) + 0.3  # the line to fit: weights 2, -1, 0.5; bias 0.3
loss = nn.functional.mse_loss(model(x), y)

# capture() walks loss.grad_fn now and arms hooks that record the gradients of the next backward.
graph = graphscope.capture(loss, model=model)
loss.backward()

for node in graph.nodes:
    print(f"{node.title:>12}  {node.op:<18} gradient: {fmt_stats(node.grad)}")
path = graphscope.render(graph).save(out / "linear_regression.svg")
print(f"wrote {path}")
