"""An LSTM: one autograd op with several outputs, and a long sequence folded into it.

    python examples/lstm.py [OUT_DIR]      # writes OUT_DIR/lstm.svg

``nn.LSTM`` runs each layer as one fused op over all 12 time steps, so the graph is short even
though the computation is long. The op returns several tensors (the output sequence and the
states); edges say which one they carry (``out 0``). Look for the weights ``weight_ih_l0``,
``weight_hh_l0`` of each layer feeding their layer's op, and the slice of the last time step
(``select``) that feeds the head.
"""

import sys
from pathlib import Path

import torch

import graphscope
from graphscope.demos import DEMOS

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")

model, forward = DEMOS["lstm"].make()
loss = forward()
graph = graphscope.capture(loss, model=model)
loss.backward()

for node in graph.nodes:
    if len(node.outputs) > 1:
        shapes = ", ".join(str(o) for o in node.outputs)
        used = sorted({e.output_nr for e in graph.out_edges(node.id)})
        print(f"{node.label}: {len(node.outputs)} outputs {shapes}; outputs used downstream: {used}")
path = graphscope.render(graph).save(out / "lstm.svg")
print(f"wrote {path}")
