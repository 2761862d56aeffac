"""The built-in example models behind ``graphscope.demos``: small, random-init networks.

Each ``_<demo>`` function builds ``(model, forward)`` in code (no downloads); ``build``
captures one. Imports torch and the capture layer, which is why ``graphscope.demos`` (the
catalogue of names and lessons) imports this module only when a demo is made or built.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from graphscope.autograd import capture
from graphscope.autograd.recording import record
from graphscope.model import Graph

Forward = Callable[[], torch.Tensor]


def build(name: str, description: str, make: Callable[[], tuple[nn.Module, Forward]], *,
          seed: int = 0) -> Graph:
    """Build the model, capture its loss, run backward; returns the finished ``Graph``.

    Seeded inside ``fork_rng`` so the caller's random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, forward = make()
        with record(model):  # every op learns its module path and source line
            loss = forward()
    graph = capture(loss, model=model, warn=False, names=_names(forward, loss))
    loss.backward()
    graph.meta["title"] = f"{name}: {description}"
    return graph


def _names(forward: Forward, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """The demo's own names for its tensors, which ``capture`` cannot see from here: the
    variables its ``forward`` closes over (``x``, ``y``) and the loss. A tensor held by two of
    them is left unnamed, as capture does."""
    code, cells = getattr(forward, "__code__", None), getattr(forward, "__closure__", None) or ()
    held = [(n, c.cell_contents) for n, c in zip(code.co_freevars if code else (), cells)
            if isinstance(c.cell_contents, torch.Tensor)]
    held.append(("loss", loss))
    once = {id(t) for t in (t for _, t in held) if sum(u is t for _, u in held) == 1}
    return {n: t for n, t in held if id(t) in once}


def mlp(depth: int, width: int, activation: type[nn.Module] | None) -> nn.Sequential:
    """``depth`` hidden Linear layers of ``width`` units, each followed by ``activation``."""
    layers: list[nn.Module] = []
    for i in range(depth):
        layers.append(nn.Linear(width if i else 8, width))
        if activation is not None:
            layers.append(activation())
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _regression(model: nn.Module, inputs: int = 8, batch: int = 32) -> Forward:
    x = torch.randn(batch, inputs)
    y = torch.randn(batch, 1)
    return lambda: nn.functional.mse_loss(model(x), y)


def _linear_regression() -> tuple[nn.Module, Forward]:
    model = nn.Linear(3, 1)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[2.0], [-1.0], [0.5]]) + 0.3
    return model, lambda: nn.functional.mse_loss(model(x), y)


def _sigmoid_mlp() -> tuple[nn.Module, Forward]:
    model = mlp(20, 32, nn.Sigmoid)
    return model, _regression(model)


def _relu_mlp() -> tuple[nn.Module, Forward]:
    model = mlp(20, 32, nn.ReLU)
    # ReLU alone is not enough at depth 20: PyTorch's default init shrinks every layer's signal
    # by about 0.4. Kaiming (He) init keeps it at 1, which is what makes deep ReLU nets train.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.bias.zero_()
    return model, _regression(model)


def _exploding() -> tuple[nn.Module, Forward]:
    model = mlp(20, 32, None)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0.0, 0.5)
    return model, _regression(model)


class LSTMRegressor(nn.Module):
    """A 2-layer LSTM over a sequence, its last hidden state fed to a linear head."""

    def __init__(self, features: int = 4, hidden: int = 16) -> None:
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class LSTMGates(nn.Module):
    """One LSTM layer written out, so each gate is its own op in the graph (``nn.LSTM`` fuses
    a whole layer, all time steps, into one node that hides them)."""

    def __init__(self, inputs: int, hidden: int) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Linear(inputs + hidden, 4 * hidden)  # input, forget, cell, output

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], self.hidden)
        c = x.new_zeros(x.shape[0], self.hidden)
        steps = []
        for t in range(x.shape[1]):
            i, f, g, o = self.gates(torch.cat([x[:, t], h], dim=1)).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # the cell-state sum
            h = torch.sigmoid(o) * torch.tanh(c)
            steps.append(h)
        return torch.stack(steps, dim=1)


class UnrolledLSTM(nn.Module):
    """A 2-layer LSTM unrolled over its time steps, its last hidden state fed to a linear head."""

    def __init__(self, features: int = 4, hidden: int = 16) -> None:
        super().__init__()
        self.layers = nn.Sequential(LSTMGates(features, hidden), LSTMGates(hidden, hidden))
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(x)[:, -1])


def _lstm() -> tuple[nn.Module, Forward]:
    model = UnrolledLSTM()
    x = torch.randn(8, 6, 4)
    y = torch.randn(8, 1)
    return model, lambda: nn.functional.mse_loss(model(x), y)


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


def _attention() -> tuple[nn.Module, Forward]:
    model = SelfAttention()
    # x requires grad so it is a node: q, k, v and the residual all read it, and its gradient is
    # the sum of the four that flow back.
    x = torch.randn(2, 6, 16, requires_grad=True)
    target = torch.randint(0, 16, (2, 6))
    return model, lambda: nn.functional.cross_entropy(model(x).flatten(0, 1), target.flatten())


def _cnn() -> tuple[nn.Module, Forward]:
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 10),
    )
    x = torch.randn(4, 1, 16, 16)
    y = torch.randint(0, 10, (4,))
    return model, lambda: nn.functional.cross_entropy(model(x), y)


class SafeSqrtNet(nn.Module):
    """A layer that 'guards' sqrt with torch.where, the classic NaN trap."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        guarded = torch.where(h > 0, h.sqrt(), torch.zeros_like(h))
        return self.head(guarded)


def _nan_hunt() -> tuple[nn.Module, Forward]:
    model = SafeSqrtNet()
    x = torch.randn(16, 4)
    return model, lambda: model(x).pow(2).mean()


class PartlyUsed(nn.Module):
    """An encoder whose auxiliary head is never used and whose second branch is detached."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 16)
        self.branch = nn.Linear(16, 16)
        self.head = nn.Linear(16, 1)
        self.aux_head = nn.Linear(16, 3)  # defined but never called in forward
        self.frozen = nn.Linear(16, 16)
        self.frozen.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.embed(x))
        side = self.branch(h).detach()  # the bug: cuts `branch` off from the loss
        return self.head(self.frozen(h) + side)


def _unused_layer() -> tuple[nn.Module, Forward]:
    model = PartlyUsed()
    return model, _regression(model)


class DeadReLU(nn.Module):
    """A hidden layer whose bias starts at -100: every ReLU is off."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(8, 16)
        self.out = nn.Linear(16, 1)
        with torch.no_grad():
            self.hidden.bias.fill_(-100.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(x)))


def _dead_relu() -> tuple[nn.Module, Forward]:
    model = DeadReLU()
    return model, _regression(model)
