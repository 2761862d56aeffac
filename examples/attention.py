"""Self-attention: softmax over scaled dot products, with a residual and LayerNorm.

    python examples/attention.py [OUT_DIR]      # writes OUT_DIR/attention.svg

Look for ``softmax`` between the two batched matrix products, and for the one pale-blue
parameter: ``k.bias``. Adding the same bias to every key adds the same number to every score
of a query, and softmax does not change when all its inputs shift together, so the key bias
gets (almost) no gradient. graphscope reports it as an isolated near-zero gradient: structural,
not a training problem.
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope
from graphscope.formatting import fmt_stats

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")



class SelfAttention(nn.Module):
    """One head of scaled dot-product self-attention with a residual and LayerNorm."""

    def __init__(self, d: int = 16) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.out = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-2, -1) / x.shape[-1] ** 0.5
        weights = torch.softmax(scores, dim=-1)
        return self.norm(x + self.out(weights @ self.v(x)))


model = SelfAttention()
x = torch.randn(2, 6, 16)  # 2 sequences of 6 tokens, 16 features each
target = torch.randint(0, 16, (2, 6))
loss = nn.functional.cross_entropy(model(x).flatten(0, 1), target.flatten())
graph = graphscope.capture(loss, model=model, warn=False)
loss.backward()

softmax = next(n for n in graph.nodes if n.label == "softmax")
print(f"softmax (node {softmax.id}): output {softmax.outputs[0]}, gradient {fmt_stats(softmax.grad)}")
for finding in graph.findings:
    print(finding)
path = graphscope.render(graph).save(out / "attention.svg")
print(f"wrote {path}")
