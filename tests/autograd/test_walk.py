"""The walk's saved values, checked against the arguments the user passed to torch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import graphscope


def _saved(graph, op: str) -> dict[str, str | None]:
    """``name -> value`` of the saved non-tensor values of the one node ``op``."""
    (node,) = [n for n in graph.nodes if n.op == op]
    return {m.name: m.value for m in node.saved if m.shape is None}


def test_saved_values_read_as_the_user_wrote_them():
    """Negative ints, tuples, bools, floats, strings and None saved by ops read as passed."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 6, requires_grad=True)
    conv = nn.Conv2d(3, 4, 3, stride=(1, 2), padding=1, bias=False)
    h = conv(x)
    logits = h.mean((-1, -2))
    y = torch.tensor([1, -100])
    parts = [
        F.cross_entropy(logits, y, ignore_index=-100),
        F.gelu(h, approximate="tanh").sum(dim=-1).tril(-1).sum(),
        F.pad(h, (-1, 2)).pow(2.5).sum(),
        h.clamp(min=-0.5).sum(),
        h.transpose(-1, -2).sum(),
    ]
    g = graphscope.capture(sum(parts))
    assert _saved(g, "NllLossBackward0")["ignore_index"] == repr(-100)
    assert _saved(g, "NllLossBackward0")["weight"] == repr(None)
    conv_saved = _saved(g, "ConvolutionBackward0")
    assert conv_saved["stride"] == repr(conv.stride) == "(1, 2)"
    assert conv_saved["padding"] == repr(conv.padding)
    assert conv_saved["transposed"] == repr(False)
    assert conv_saved["groups"] == repr(1)
    assert conv_saved["dilation"] == repr(conv.dilation)
    assert _saved(g, "MeanBackward1")["dim"] == repr((-1, -2))
    assert _saved(g, "TransposeBackward0") == {"dim0": repr(-1), "dim1": repr(-2)}
    assert _saved(g, "GeluBackward0")["approximate"] == repr("tanh")
    assert _saved(g, "SumBackward1")["dim"] == repr((-1,))
    assert _saved(g, "TrilBackward0")["diagonal"] == repr(-1)
    assert _saved(g, "ConstantPadNdBackward0")["pad"] == repr((-1, 2))
    assert _saved(g, "PowBackward0")["exponent"] == repr(2.5)
    assert _saved(g, "ClampBackward1") == {"min": repr(-0.5), "max": repr(None)}


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_reduction_reads_as_its_name(reduction):
    """A loss's saved ``reduction`` (an enum int in torch) reads as the string the user passed."""
    x = torch.randn(3, 4, requires_grad=True)
    loss = F.mse_loss(x, torch.zeros(3, 4), reduction=reduction).sum()
    g = graphscope.capture(loss)
    assert _saved(g, "MseLossBackward0")["reduction"] == repr(reduction)


def test_embedding_padding_idx_reads_as_passed():
    """``padding_idx=None`` reads None (torch saves -1); an index reads as nn.Embedding keeps it."""
    for padding_idx in (None, 2, -1):
        emb = nn.Embedding(10, 3, padding_idx=padding_idx)
        g = graphscope.capture(emb(torch.tensor([1, 2])).sum())
        assert _saved(g, "EmbeddingBackward0")["padding_idx"] == repr(emb.padding_idx), padding_idx


def test_slice_bounds_read_as_written():
    """``x[-2:]`` saves start -2 and an open end (torch's INT64_MAX): they read -2 and None."""
    x = torch.randn(4, 5, requires_grad=True)
    cases = ((slice(-2, None), -2, None), (slice(1, None), 1, None), (slice(None, 3), 0, 3))
    for index, start, end in cases:
        g = graphscope.capture(x[:, index].sum())
        saved = _saved(g, "SliceBackward0")
        assert (saved["start"], saved["end"]) == (repr(start), repr(end)), index
