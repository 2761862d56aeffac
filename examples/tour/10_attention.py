"""Tour 10: attention with softmax. Scores q.k / sqrt(d), softmax over the keys, a weighted sum
of the values. Softmax's gradient is small when one key wins (saturation).

    python examples/tour/10_attention.py [OUT_DIR]
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"
torch.manual_seed(0)


class Attention(nn.Module):
    """One head of scaled dot-product self-attention."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-2, -1) / x.shape[-1] ** 0.5
        weights = torch.softmax(scores, dim=-1)  # each row sums to 1
        return weights @ self.v(x)


model = Attention()
x = torch.randn(3, 4).requires_grad_()  # 3 tokens of 4 features; requires grad, so a node
with graphscope.record(model):
    loss = model(x).pow(2).mean()
graph = graphscope.capture(loss, model=model, names={"x": x})
loss.backward()
print("Look at: x feeds q, k and v (one node, three consumers); the softmax box shows its 3x3 "
      "weights and their gradient.")
print(f"wrote {graphscope.render(graph).save(out / '10_attention.svg')}")
