"""Tour 05: linear regression is a one-layer network with no activation: y = x @ W.T + b,
trained on the mean squared error.

    python examples/tour/05_linear_regression.py [OUT_DIR]
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"
torch.manual_seed(0)

model = nn.Linear(2, 1)
x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
target = torch.tensor([[1.0], [2.0], [3.0]])
loss = nn.functional.mse_loss(model(x), target)

graph = graphscope.capture(loss, model=model)
loss.backward()
print(f"weight.grad = {model.weight.grad.tolist()}, bias.grad = {model.bias.grad.tolist()}")
print("Look at: weight and bias (cylinders) each get their gradient from one op, addmm.")
print(f"wrote {graphscope.render(graph).save(out / '05_linear_regression.svg')}")
