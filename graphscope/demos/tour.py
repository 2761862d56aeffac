"""The tour's lessons as demos (``graphscope demo tour-03``): each builds its tensors in plain
PyTorch, captures with the learner's names, runs backward. The scripts in ``examples/tour/``
are what a learner reads; these are their in-app twins (a demo never imports ``examples/``).
Imports torch and the capture layer; ``graphscope.demos`` imports it on first build only.
"""

from __future__ import annotations

import torch

from graphscope.autograd import capture, record
from graphscope.model import Graph


def requires_grad() -> Graph:
    """s = a * c with a leaf a that requires grad and a constant c that does not."""
    a = torch.tensor(3.0, requires_grad=True)
    c = torch.tensor(4.0)
    s = a * c
    graph = capture(s, warn=False, names={"a": a, "s": s})
    s.backward()
    return graph


def scalar_backward() -> Graph:
    """loss = (x ** 2).sum() for x = [1, 2, 3]: one number to differentiate, x.grad = 2x."""
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x ** 2
    loss = y.sum()
    graph = capture(loss, warn=False, names={"x": x, "y": y, "loss": loss})
    loss.backward()
    return graph


def linear_regression() -> Graph:
    """mse_loss of nn.Linear(2, 1) on three points: a one-layer network with no activation."""
    gen = torch.Generator().manual_seed(0)
    model = torch.nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, 2, generator=gen))
        model.bias.copy_(torch.randn(1, generator=gen))
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    target = torch.tensor([[1.0], [2.0], [3.0]])
    loss = torch.nn.functional.mse_loss(model(x), target)
    graph = capture(loss, model=model, warn=False, names={"x": x, "target": target, "loss": loss})
    loss.backward()
    return graph


def chain_rule() -> Graph:
    """y = w * x + b with x = 2, w = -3, b = 1: every node's value and gradient."""
    x = torch.tensor(2.0, requires_grad=True)
    w = torch.tensor(-3.0, requires_grad=True)
    b = torch.tensor(1.0, requires_grad=True)
    y = w * x + b
    graph = capture(y, warn=False, names={"x": x, "w": w, "b": b, "y": y})
    y.backward()
    return graph


def activations() -> Graph:
    """Four sigmoids in a row on z = [-2, 0, 2]: each multiplies the gradient by at most 0.25."""
    z = torch.tensor([-2.0, 0.0, 2.0], requires_grad=True)
    h = z
    for _ in range(4):
        h = torch.sigmoid(h)
    out_sum = h.sum()
    graph = capture(out_sum, warn=False, names={"z": z, "out_sum": out_sum})
    out_sum.backward()
    return graph


def training_loop() -> Graph:
    """Three SGD steps of nn.Linear(1, 1) on y = 2x + 1 without zero_grad(): the last step's
    capture, whose .grad also holds the two earlier steps' gradients."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.tensor([[1.0], [2.0], [3.0]])
    target = 2 * x + 1
    for _ in range(3):
        loss = torch.nn.functional.mse_loss(model(x), target)
        graph = capture(loss, model=model, warn=False, names={"loss": loss})
        loss.backward()  # no optimizer.zero_grad() before it: forgotten on purpose
        optimizer.step()
    return graph


def train_eval() -> Graph:
    """Linear, ReLU, Dropout(0.5), Linear in train mode: the dropout op is in the graph (in
    eval mode it is not, and under no_grad() nothing is). Seeded as the script is, so the same
    units drop."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                    torch.nn.Linear(3, 1))
        x = torch.randn(2, 4)
        model.train()
        loss = model(x).pow(2).mean()
    graph = capture(loss, model=model, warn=False, names={"x": x, "loss": loss})
    loss.backward()
    return graph


def mlp() -> Graph:
    """Linear(3, 4), ReLU, Linear(4, 4), ReLU, Linear(4, 1) under mse_loss, ops named by layer."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 4),
                                    torch.nn.ReLU(), torch.nn.Linear(4, 1))
        x = torch.randn(8, 3)
        target = torch.randn(8, 1)
    with record(model):
        loss = torch.nn.functional.mse_loss(model(x), target)
    graph = capture(loss, model=model, warn=False, names={"x": x, "target": target, "loss": loss})
    loss.backward()
    return graph


class _CellLoop(torch.nn.Module):
    """nn.LSTMCell over the time steps of ``xs``, the last hidden state fed to a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.LSTMCell(2, 3)
        self.head = torch.nn.Linear(3, 1)

    def forward(self, xs: torch.Tensor) -> torch.Tensor:
        h = c = xs.new_zeros(xs.shape[1], 3)
        for x in xs:
            h, c = self.cell(x, (h, c))
        return self.head(h)


def _recorded(make: type[torch.nn.Module], shape: tuple[int, ...], name: str, *,
              grad: bool = False) -> Graph:
    """``make()`` and a random input of ``shape`` (seed 0, as the script), recorded (ops learn
    their module), its loss ``model(x).pow(2).mean()`` captured with the learner's names."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = make()
        x = torch.randn(*shape).requires_grad_(grad)
    with record(model):
        loss = model(x).pow(2).mean()  # the LSTM's one output: its .sum() in the script
    graph = capture(loss, model=model, warn=False, names={name: x, "loss": loss})
    loss.backward()
    return graph


def lstm_cell() -> Graph:
    """nn.LSTMCell in a loop over 3 steps (time, batch, features): each step's gates are ops of
    their own."""
    return _recorded(_CellLoop, (3, 1, 2), "xs")


class _Attention(torch.nn.Module):
    """One head of scaled dot-product self-attention."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(d, d), torch.nn.Linear(d, d),
                                  torch.nn.Linear(d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-2, -1) / x.shape[-1] ** 0.5
        return torch.softmax(scores, dim=-1) @ self.v(x)


def attention() -> Graph:
    """Self-attention on 3 tokens of 4 features: x (requiring grad, so a node) feeds q, k and v;
    softmax's 3x3 weights and their gradient."""
    return _recorded(_Attention, (3, 4), "x", grad=True)
