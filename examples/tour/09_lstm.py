"""Tour 09: an LSTM written with nn.LSTMCell in a loop, so its gates show: per time step three
sigmoid gates (input, forget, output), two tanh and the cell-state sum c = f*c + i*g.
nn.LSTM computes the same in one fused node that hides all of it.

    python examples/tour/09_lstm.py [OUT_DIR]     # writes 09_lstm.svg and 09_lstm_fused.svg
"""

import sys
from pathlib import Path

import torch
from torch import nn

import graphscope

out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "docs" / "tour"
torch.manual_seed(0)


class CellLoop(nn.Module):
    """nn.LSTMCell over 3 time steps, the last hidden state fed to a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(2, 3)
        self.head = nn.Linear(3, 1)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        h = c = xs.new_zeros(xs.shape[1], 3)
        for x in xs:  # one time step per loop: its gates are ops of their own
            h, c = self.cell(x, (h, c))
        return self.head(h)


model = CellLoop()
xs = torch.randn(3, 1, 2)  # (time, batch, features)
loss = model(xs).pow(2).sum()
graph = graphscope.capture(loss, model=model)
loss.backward()
print("Look at: per step the sigmoid, tanh and mul ops; follow the add (the cell state) back "
      "through the steps: gradient reaches early steps through c as well as through the gates.")
print(f"wrote {graphscope.render(graph).save(out / '09_lstm.svg')}")

fused = nn.LSTM(2, 3)
out_seq, _ = fused(xs)
fused_loss = out_seq[-1].pow(2).sum()
fused_graph = graphscope.capture(fused_loss, model=fused)
fused_loss.backward()
print("Look at: nn.LSTM is one node; the caption says what it hides.")
print(f"wrote {graphscope.render(fused_graph).save(out / '09_lstm_fused.svg')}")
