"""A small CNN: two conv-relu-pool blocks and a linear classifier; read the shapes on the edges.

    python examples/cnn.py [OUT_DIR]      # writes OUT_DIR/cnn.svg

Each ``max_pool2d`` halves the feature maps (16x16 -> 8x8 -> 4x4) while the convolutions add
channels (1 -> 8 -> 16); ``view`` (from ``Flatten``) turns (4, 16, 4, 4) into (4, 256) for
the linear layer. The picture writes every tensor's shape on its edge.
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope
from graphscope.formatting import fmt_shape

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")

model = nn.Sequential(
    nn.Conv2d(1, 8, 3, padding=1),  # (4, 1, 16, 16) -> (4, 8, 16, 16)
    nn.ReLU(),
    nn.MaxPool2d(2),  # -> (4, 8, 8, 8)
    nn.Conv2d(8, 16, 3, padding=1),  # -> (4, 16, 8, 8)
    nn.ReLU(),
    nn.MaxPool2d(2),  # -> (4, 16, 4, 4)
    nn.Flatten(),  # -> (4, 256)
    nn.Linear(16 * 4 * 4, 10),  # ten classes
)
x = torch.randn(4, 1, 16, 16)  # four 16x16 greyscale images
labels = torch.randint(0, 10, (4,))
loss = nn.functional.cross_entropy(model(x), labels)
graph = graphscope.capture(loss, model=model)
loss.backward()

# Walk the main path back from the loss, printing each op's output shape.
node = graph[graph.roots[0]]
path_back = []
while node.kind == "op":
    path_back.append(f"{node.label} {fmt_shape(node.shape)}")
    ops = [p for p in graph.producers(node.id) if graph[p].kind == "op" and graph[p].label != "t"]
    if not ops:
        break
    node = graph[ops[0]]
print(" <- ".join(path_back))
path = graphscope.render(graph).save(out / "cnn.svg")
print(f"wrote {path}")
