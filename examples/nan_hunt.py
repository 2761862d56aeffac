"""Hunting a NaN: ``torch.where`` guards ``sqrt`` in forward, but not in backward.

    python examples/nan_hunt.py [OUT_DIR]      # writes OUT_DIR/nan_hunt.svg

``torch.where(h > 0, h.sqrt(), 0)`` gives a finite forward, so the loss looks fine. But
``sqrt`` was still computed for negative ``h``; in backward its derivative 0.5 / sqrt(h) is NaN
there, and 0 * NaN is NaN: the gradient of ``fc`` fills with NaN. graphscope names the op where
the non-finite gradient starts (magenta border, "‼" in the picture); everything upstream of it is
magenta. The fix: ``h.clamp(min=eps).sqrt()`` inside the where.
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")



class SafeSqrtNet(nn.Module):
    """A layer that 'guards' sqrt with torch.where: the classic NaN trap."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        # where() picks 0 for h <= 0 in forward, but backward still runs sqrt's gradient there:
        # 0.5 / sqrt(h) of a negative h is NaN, and 0 * NaN is NaN.
        guarded = torch.where(h > 0, h.sqrt(), torch.zeros_like(h))
        return self.head(guarded)


model = SafeSqrtNet()
loss = model(torch.randn(16, 4)).pow(2).mean()
print(f"loss = {loss.item():.4f} (finite)")
graph = graphscope.capture(loss, model=model, warn=False)
loss.backward()

for finding in graph.findings:
    if finding.kind == "nonfinite_origin":
        node = graph[finding.node]
        where = f", created at {node.source}" if node.source else ""
        print(f"NaN origin: node {node.id} ({node.op}){where}")
        print(finding)
print(f"fc.weight.grad has NaN: {model.fc.weight.grad.isnan().any().item()}")
path = graphscope.render(graph).save(out / "nan_hunt.svg")
print(f"wrote {path}")
