"""Tour 03: the chain rule on y = w * x + b. Every box shows its value and its gradient, so you
can check each step by hand: dy/dw = x, dy/dx = w, dy/db = 1.

    python examples/tour/03_chain_rule.py [OUT_DIR]
"""

import sys
from pathlib import Path

import torch

import graphscope

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"

x = torch.tensor(2.0, requires_grad=True)
w = torch.tensor(-3.0, requires_grad=True)
b = torch.tensor(1.0, requires_grad=True)
y = w * x + b

graph = graphscope.capture(y)
y.backward()
print(f"y = {y.item()}; dy/dw = x = {w.grad.item()}, dy/dx = w = {x.grad.item()}, dy/db = {b.grad.item()}")
print("Look at: the add sends its gradient 1 unchanged to b and to mul; mul multiplies it by the "
      "other factor: w gets x, x gets w.")
print(f"wrote {graphscope.render(graph).save(out / '03_chain_rule.svg')}")
