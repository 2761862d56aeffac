"""Tiny models and helpers shared by the reliability tests.

Every builder is seeded inside ``fork_rng`` so building a model never moves the caller's random
state, and two builds with the same seed are bit-identical twins: one is run under a capture,
the other without, and torch's own results for the plain twin are the oracle.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

import graphscope

from .oracle import assert_norm


def seeded(factory: Callable[[], object], seed: int = 0) -> object:
    """``factory()`` under ``manual_seed(seed)``, leaving the global RNG untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


class TinyMLP(nn.Module):
    """Linear -> tanh -> Linear -> sigmoid -> Linear: one op of each kind, easy to find."""

    def __init__(self, d_in: int = 4, hidden: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.head = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.sigmoid(self.fc2(torch.tanh(self.fc1(x)))))


class Tied(nn.Module):
    """A language-model toy whose output projection reuses the embedding matrix."""

    def __init__(self, vocab: int = 10, d: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.mix = nn.Linear(d, d)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mix(self.embed(idx))))


class Reused(nn.Module):
    """One Linear applied twice (module reuse), then a head."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.block = nn.Linear(d, d)
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.block(torch.tanh(self.block(x)))))


class Poison(torch.autograd.Function):
    """Identity in forward; its backward turns the gradient into NaN: a NaN born at a known node."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, g: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return g * float("nan")


def mlp_batch(seed: int = 1, n: int = 5, d: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return seeded(lambda: (torch.randn(n, d), torch.randn(n, 1)), seed)  # type: ignore[return-value]


def mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def grads(model: nn.Module) -> dict[str, torch.Tensor | None]:
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()}


def assert_grads_identical(a: nn.Module, b: nn.Module) -> None:
    """Every parameter gradient of ``a`` equals ``b``'s bit for bit (or both are None)."""
    ga, gb = grads(a), grads(b)
    assert ga.keys() == gb.keys()
    for name in ga:
        x, y = ga[name], gb[name]
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and x.layout == y.layout, name
            if x.is_sparse:
                assert torch.equal(x._indices(), y._indices()), name
                assert torch.equal(x._values(), y._values()), name
            else:
                assert torch.equal(x, y), name


def twins(factory: Callable[[], nn.Module], seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """Two bit-identical copies of a model: one for graphscope, one for the plain torch run."""
    model = seeded(factory, seed)
    return model, copy.deepcopy(model)  # type: ignore[return-value]


def assert_param_norms(g: graphscope.Graph, model: nn.Module) -> int:
    """Each reached parameter's recorded norm equals ``p.grad.norm()``; returns how many."""
    checked = 0
    for name, p in model.named_parameters():
        info = next(i for i in g.params if i.name == name)
        if info.status != "reached":
            continue
        node = g.nodes[info.node]
        if p.grad is None:
            assert node.grad is None, name
            continue
        assert node.grad is not None, name
        assert_norm(node.grad.norm, p.grad)
        checked += 1
    return checked
