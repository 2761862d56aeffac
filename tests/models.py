"""Tiny models shared by the core tests; all built in code with a fixed seed."""

from __future__ import annotations

import torch
from torch import nn


def bfs(root_fn):
    """Independent BFS over next_functions: (node set, edge multiset as (src, dst) pairs)."""
    seen = {root_fn}
    order = [root_fn]
    edges = []
    i = 0
    while i < len(order):
        fn = order[i]
        i += 1
        for child, _ in fn.next_functions:
            if child is None:
                continue
            edges.append((child, fn))
            if child not in seen:
                seen.add(child)
                order.append(child)
    return order, edges


class TiedLM(nn.Module):
    """Embedding and output layer share one weight matrix."""

    def __init__(self, vocab: int = 11, d: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.proj = nn.Linear(d, d)
        self.out = nn.Linear(d, vocab, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.proj(self.embed(tokens))))


class Square(torch.autograd.Function):
    """A custom Function with two outputs: x**2 and x+1."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x, x + 1

    @staticmethod
    def backward(ctx, g_sq, g_inc):
        (x,) = ctx.saved_tensors
        out = torch.zeros_like(x)
        if g_sq is not None:
            out = out + 2 * x * g_sq
        if g_inc is not None:
            out = out + g_inc
        return out
