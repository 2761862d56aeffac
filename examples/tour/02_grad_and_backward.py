"""Tour 02: .grad and a scalar backward(). backward() starts from d(loss)/d(loss) = 1, so it
needs a single number; the gradient lands in .grad of each leaf.

    python examples/tour/02_grad_and_backward.py [OUT_DIR]
"""

import sys
from pathlib import Path

import torch

import graphscope
from graphscope.errors import explain

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"

x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
y = x ** 2  # three numbers: y.backward() would not know how to weigh them
try:
    y.backward()
except RuntimeError as error:
    print(f"y.backward() on a vector fails: {error}\n  graphscope.errors.explain: {explain(error)}\n")

loss = y.sum()  # one number: d(loss)/dx = 2x
graph = graphscope.capture(loss)
loss.backward()
print(f"x.grad = {x.grad.tolist()}  (2x, as the chain rule says)")
print("Look at: x's box shows its data [1, 2, 3] and its grad [2, 4, 6].")
print(f"wrote {graphscope.render(graph).save(out / '02_grad_and_backward.svg')}")
