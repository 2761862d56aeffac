"""Tour 04: activation functions and their derivatives, and why deep sigmoid nets vanish.
sigmoid'(z) is at most 0.25, tanh'(z) at most 1, relu'(z) is 0 or 1.

    python examples/tour/04_activations.py [OUT_DIR]
"""

import sys
from pathlib import Path

import torch

import graphscope

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"

z = torch.tensor([-2.0, 0.0, 2.0], requires_grad=True)
h = z
for _ in range(4):  # four sigmoids in a row: each multiplies the gradient by at most 0.25
    h = torch.sigmoid(h)
out_sum = h.sum()
graph = graphscope.capture(out_sum, names={"z": z})
out_sum.backward()
print(f"after 4 sigmoids, dz = {[round(g, 5) for g in z.grad.tolist()]}: about 0.25**4 = 0.004 of what "
      "reached the top")
print("Look at: the grad line of each sigmoid box shrinks on the way down to z (vanishing).")
print(f"wrote {graphscope.render(graph).save(out / '04_activations.svg')}")
