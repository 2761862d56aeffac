"""Tour 07: train() / eval() and no_grad(). Dropout drops units only in train mode; eval()
turns it off for evaluation, and torch.no_grad() stops autograd from recording at all.

    python examples/tour/07_train_eval_no_grad.py [OUT_DIR]
"""

import sys
import warnings
from pathlib import Path

import torch
from torch import nn

import graphscope
from graphscope.errors import ModeWarning

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"
torch.manual_seed(0)

model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Dropout(0.5), nn.Linear(3, 1))
x = torch.randn(2, 4)

model.eval()  # evaluation: dropout off ...
with torch.no_grad():  # ... and no graph recorded
    print(f"eval output (no graph): requires_grad={model(x).requires_grad}")

# Forgetting model.train() before training: graphscope says so.
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loss = model(x).pow(2).mean()
    graph = graphscope.capture(loss, model=model)
print(*(str(w.message) for w in caught if issubclass(w.category, ModeWarning)), sep="\n")
model.train()
loss = model(x).pow(2).mean()
graph = graphscope.capture(loss, model=model)
loss.backward()
print(f"modes recorded: {graph.meta['modes']}")
print("Look at: in train mode the dropout op is in the graph between relu and the last layer.")
print(f"wrote {graphscope.render(graph).save(out / '07_train_eval_no_grad.svg')}")
