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
from torch import nn

import graphscope

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")



class PartlyUsed(nn.Module):
    """An encoder whose auxiliary head is never used and whose second branch is detached."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.branch = nn.Linear(16, 16)
        self.head = nn.Linear(16, 1)
        self.aux_head = nn.Linear(16, 3)  # defined but never called in forward
        self.frozen = nn.Linear(16, 16)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.embed(x))
        side = self.branch(h).detach()  # the bug: cuts `branch` off from the loss
        return self.head(self.frozen(h) + side)


model = PartlyUsed()
loss = nn.functional.mse_loss(model(torch.randn(32, 8)), torch.randn(32, 1))
graph = graphscope.capture(loss, model=model, warn=False)
loss.backward()

for param in graph.params:
    got = "no gradient" if dict(model.named_parameters())[param.name].grad is None else "gradient"
    print(f"{param.name:>16}  {param.status:<12} {got}")
path = graphscope.render(graph).save(out / "unused_layer.svg")
print(f"wrote {path}")
