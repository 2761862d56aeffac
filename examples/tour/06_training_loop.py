"""Tour 06: the training loop: forward, zero_grad(), backward(), optimizer.step(). Without
zero_grad() the gradients of every step add up in .grad; graphscope notices.

    python examples/tour/06_training_loop.py [OUT_DIR]
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"
torch.manual_seed(0)

model = nn.Linear(1, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x = torch.tensor([[1.0], [2.0], [3.0]])
target = 2 * x + 1
for step in range(3):
    loss = nn.functional.mse_loss(model(x), target)
    # optimizer.zero_grad() belongs here: forgotten on purpose, to see what graphscope says
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    optimizer.step()
    print(f"step {step}: loss {loss.item():.3f}")
for finding in graph.findings:
    print(finding)
print("Look at: the finding says .grad also holds earlier steps' gradients: call "
      "optimizer.zero_grad() before each backward.")
print(f"wrote {graphscope.render(graph).save(out / '06_training_loop.svg')}")
