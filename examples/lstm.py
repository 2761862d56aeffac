"""An LSTM two ways: ``nn.LSTM``'s one fused node per layer, and the same cell written out.

    python examples/lstm.py [OUT_DIR]      # writes OUT_DIR/lstm.svg and OUT_DIR/lstm_gates.svg

``nn.LSTM`` runs each layer as one fused op over all time steps, so its graph is short though
the computation is long: the op returns several tensors (the output sequence and the states) and
the edges say which one they carry (``out 0``). What the fused node hides is the cell itself;
written out below, each step shows its three sigmoid gates, the tanh candidate and the
cell-state sum ``c = f * c + i * g`` that carries the gradient back through time.
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")
x = torch.randn(8, 6, 4)  # batch 8, 6 time steps, 4 features
y = torch.randn(8, 1)


class FusedLSTM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 16, num_layers=2, batch_first=True)
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        seq, _ = self.lstm(x)
        return self.head(seq[:, -1])


class GatesLSTM(nn.Module):
    """One layer of the same cell, step by step."""

    def __init__(self) -> None:
        super().__init__()
        self.gates = nn.Linear(4 + 16, 4 * 16)  # input, forget, cell and output gates at once
        self.head = nn.Linear(16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = x.new_zeros(x.shape[0], 16)
        for t in range(x.shape[1]):
            i, f, g, o = self.gates(torch.cat([x[:, t], h], dim=1)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
        return self.head(h)


for name, model in (("lstm", FusedLSTM()), ("lstm_gates", GatesLSTM())):
    loss = nn.functional.mse_loss(model(x), y)
    graph = graphscope.capture(loss, model=model)
    loss.backward()
    for node in graph.nodes:
        if len(node.outputs) > 1 and name == "lstm":  # the fused op: one node, three outputs
            shapes = ", ".join(str(o) for o in node.outputs)
            used = sorted({e.output_nr for e in graph.out_edges(node.id)})
            print(f"{node.label}: {len(node.outputs)} outputs {shapes}; used downstream: {used}")
    ops = sorted({n.label for n in graph.nodes if n.kind == "op"})
    print(f"{name}: {len(graph)} nodes; ops: {', '.join(ops)}")
    print(f"wrote {graphscope.render(graph).save(out / f'{name}.svg')}")
