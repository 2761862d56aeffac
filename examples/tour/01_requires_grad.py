"""Tour 01: requires_grad and grad_fn. Autograd records only what is computed from tensors that
require grad; each result remembers the op that made it (its grad_fn).

    python examples/tour/01_requires_grad.py [OUT_DIR]     # writes OUT_DIR/01_requires_grad.svg
"""

import sys
from pathlib import Path

import torch

import graphscope

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"

a = torch.tensor(3.0, requires_grad=True)  # a leaf: you made it, autograd will track it
c = torch.tensor(4.0)  # a constant: requires_grad=False, autograd ignores it
s = a * c
print(f"a.requires_grad={a.requires_grad}, a.grad_fn={a.grad_fn}")
print(f"c.requires_grad={c.requires_grad}  (a constant: no node in the graph)")
print(f"s.grad_fn={type(s.grad_fn).__name__}  (s remembers it came from a multiplication)")

graph = graphscope.capture(s)
s.backward()
print("Look at: one leaf (a), one op (mul); c is not drawn, it needs no gradient.")
print(f"wrote {graphscope.render(graph).save(out / '01_requires_grad.svg')}")
