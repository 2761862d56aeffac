"""The four benchmark models of issue 6, built in code with random init (no downloads).

Owns the model definitions and their example batches; ``run.py`` times them. Each ``Case`` gives
a fresh model and a ``step()`` that runs forward and returns the loss. Imports torch only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class Case:
    """One benchmark model.

    Attributes:
        name: Short name used in the results table.
        model: The ``nn.Module``.
        inputs: Positional arguments of ``model``.
        criterion: Turns the model's output into a scalar loss.
        repeats: How many timed repeats a measurement takes (fewer for big models).
    """

    name: str
    model: nn.Module
    inputs: tuple[torch.Tensor, ...]
    criterion: Callable[[torch.Tensor], torch.Tensor]
    repeats: int

    def forward(self) -> torch.Tensor:
        """Run the model on its batch; returns the loss."""
        return self.criterion(self.model(*self.inputs))


class SigmoidMLP(nn.Module):
    """``depth`` Linear+sigmoid layers: the textbook vanishing-gradient stack."""

    def __init__(self, depth: int = 50, width: int = 256) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.sigmoid(layer(x))
        return self.head(x)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convolutions with batch norm and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 layout: a stem, four stages of two basic blocks, global pooling, a head."""

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 64, 7, 2, 3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        stages, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(512, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class UnrolledLSTM(nn.Module):
    """Two stacked ``LSTMCell``s stepped in Python: the graph has one copy per time step."""

    def __init__(self, inputs: int = 32, hidden: int = 128, layers: int = 2) -> None:
        super().__init__()
        self.cells = nn.ModuleList(
            nn.LSTMCell(inputs if i == 0 else hidden, hidden) for i in range(layers)
        )
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[1]
        states = [
            (x.new_zeros(batch, c.hidden_size), x.new_zeros(batch, c.hidden_size))
            for c in self.cells
        ]
        for t in range(x.shape[0]):
            inp = x[t]
            for i, cell in enumerate(self.cells):
                states[i] = cell(inp, states[i])
                inp = states[i][0]
        return self.head(inp)


class Attention(nn.Module):
    """Causal multi-head self-attention written out (GPT-2 style, no fused kernel)."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        att = F.softmax(att.masked_fill(mask, float("-inf")), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        return self.proj(y)


class Block(nn.Module):
    """Pre-norm transformer block: attention and a 4x GELU MLP, each with a residual."""

    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.ln2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.out = nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT2(nn.Module):
    """GPT-2 small layout: 12 blocks, d=768, 12 heads, tied input/output embedding."""

    def __init__(
        self, vocab: int = 50257, d: int = 768, layers: int = 12, heads: int = 12, ctx: int = 1024
    ) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()


def cases(*, seed: int = 0) -> list[Case]:
    """Build the four benchmark models with their batches (deterministic for ``seed``)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x_mlp = torch.randn(64, 256, generator=gen)
    y_mlp = torch.randint(0, 10, (64,), generator=gen)
    x_img = torch.randn(4, 3, 128, 128, generator=gen)
    y_img = torch.randint(0, 1000, (4,), generator=gen)
    x_seq = torch.randn(200, 16, 32, generator=gen)
    y_seq = torch.randn(16, 1, generator=gen)
    idx = torch.randint(0, 50257, (2, 128), generator=gen)
    tgt = torch.randint(0, 50257, (2, 128), generator=gen).reshape(-1)
    return [
        Case("mlp50", SigmoidMLP(), (x_mlp,), lambda out: F.cross_entropy(out, y_mlp), 7),
        Case("resnet18", ResNet18(), (x_img,), lambda out: F.cross_entropy(out, y_img), 5),
        Case("lstm200", UnrolledLSTM(), (x_seq,), lambda out: F.mse_loss(out, y_seq), 5),
        Case("gpt2", GPT2(), (idx,), lambda out: F.cross_entropy(out.reshape(-1, 50257), tgt), 3),
    ]
