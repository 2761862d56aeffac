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

import graphscope
from graphscope.demos import DEMOS
from graphscope.formatting import fmt_stats

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")

model, forward = DEMOS["attention"].make()
loss = forward()
graph = graphscope.capture(loss, model=model, warn=False)
loss.backward()

softmax = next(n for n in graph.nodes if n.label == "softmax")
print(f"softmax (node {softmax.id}): output {softmax.outputs[0]}, gradient {fmt_stats(softmax.grad)}")
for finding in graph.findings:
    print(finding)
path = graphscope.render(graph).save(out / "attention.svg")
print(f"wrote {path}")
