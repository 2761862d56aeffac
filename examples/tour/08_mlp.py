"""Tour 08: a multi-layer perceptron: Linear, ReLU, Linear, ReLU, Linear. Each layer's weight
gets its gradient through every layer above it.

    python examples/tour/08_mlp.py [OUT_DIR]
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"
torch.manual_seed(3)

model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
x = torch.randn(8, 3)
target = torch.randn(8, 1)
with graphscope.record(model):  # each op learns which layer made it
    loss = nn.functional.mse_loss(model(x), target)
graph = graphscope.capture(loss, model=model)
loss.backward()
for p in graph.param_nodes:
    print(f"{p.name:>10}  grad rms {p.grad.rms:.4g}")
print("Look at: the biases (4 values) show their gradients; a relu passes gradient only where "
      "its input was positive.")
print(f"wrote {graphscope.render(graph).save(out / '08_mlp.svg')}")
