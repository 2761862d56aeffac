"""Parameters that never learn: an unused head, a detached branch and a frozen layer.

    python examples/unused_layer.py [OUT_DIR]      # writes OUT_DIR/unused_layer.svg

Pass ``model=`` to ``capture`` and graphscope compares the model's parameters with the ones the
walk from the loss reached. ``aux_head`` is defined but never called; ``branch`` is called but
its output is ``.detach()``-ed, which cuts it off; ``frozen`` has ``requires_grad=False``. None
of them gets a gradient, and none of them appears in the graph itself: the picture lists them
in a dashed frame of their own.
"""

import sys
from pathlib import Path

import torch

import graphscope
from graphscope.demos import DEMOS

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")

model, forward = DEMOS["unused_layer"].make()
loss = forward()
graph = graphscope.capture(loss, model=model, warn=False)
loss.backward()

for param in graph.params:
    got = "no gradient" if dict(model.named_parameters())[param.name].grad is None else "gradient"
    print(f"{param.name:>16}  {param.status:<12} {got}")
path = graphscope.render(graph).save(out / "unused_layer.svg")
print(f"wrote {path}")
