"""In-place ops and views (issue 5.5): version-counter errors reach the user unchanged; legal
in-place ops (ReLU(inplace=True), slice assignment, as_strided) are captured with torch's
gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphscope

from .models import assert_grads_identical, assert_param_norms, mlp_batch, twins
from .oracle import assert_same_structure, assert_stats, node_by_op


class Clobber(nn.Module):
    """Modifies sigmoid's saved output in place: an illegal in-place op."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        s = torch.sigmoid(self.fc(x))
        out = s.sum()
        s.mul_(2)
        return out + s.sum()


def _backward_error(loss: torch.Tensor) -> RuntimeError:
    with pytest.raises(RuntimeError) as info:
        loss.backward()
    return info.value


@pytest.mark.parametrize("when", ["after_inplace", "before_inplace"])
def test_version_counter_error_passes_through(when):
    """torch's 'modified by an inplace operation' error reaches the user word for word."""
    model, twin = twins(Clobber)
    x, _ = mlp_batch()
    if when == "after_inplace":
        loss = model(x)
        g = graphscope.capture(loss, model=model, warn=False)
    else:  # capture a graph whose saved tensor is clobbered after the capture
        s = torch.sigmoid(model.fc(x))
        loss = s.sum()
        g = graphscope.capture(loss, model=model, warn=False)
        s.mul_(2)
    with g:
        err = _backward_error(loss)
    if when == "after_inplace":
        expected = _backward_error(twin(x))
    else:
        s2 = torch.sigmoid(twin.fc(x))
        plain = s2.sum()
        s2.mul_(2)
        expected = _backward_error(plain)
    assert type(err) is type(expected) and str(err) == str(expected)
    assert graphscope.active_hook_count() == 0
    assert_grads_identical(model, twin)


class InplaceNet(nn.Module):
    """ReLU(inplace=True), a slice assignment (CopySlices) and an as_strided view."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Linear(4, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, x, keep=None):
        r = self.relu(self.fc1(x))
        if keep is not None:
            keep["relu"] = r
        buf = torch.zeros(x.shape[0], 8)
        buf[:, :4] = r[:, :4] * 2  # CopySlices
        buf[:, 4:] += torch.tanh(self.fc2(x))[:, ::2]  # CopySlices over an in-place add
        strided = r.as_strided((x.shape[0], 4), (8, 2))  # every other unit
        buf = buf + strided.repeat(1, 2)
        return self.head(buf).pow(2).mean()


def test_legal_inplace_ops_recorded_with_torch_gradients():
    """Legal in-place ops and views: structure as torch's, gradients bit-identical, recorded
    norms equal p.grad, the in-place ReLU's recorded gradient equals autograd.grad."""
    model, twin = twins(InplaceNet)
    x, _ = mlp_batch()
    loss = model(x)
    g = graphscope.capture(loss, model=model, warn=False)
    ops = {n.op for n in g.nodes}
    assert {"CopySlices", "AsStridedBackward0", "ReluBackward0"} <= ops
    assert_same_structure(g, [loss])
    loss.backward()
    keep: dict = {}
    plain = twin(x, keep)
    (expected,) = torch.autograd.grad(plain, keep["relu"], retain_graph=True)
    plain.backward()
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 6
    assert_stats(node_by_op(g, "ReluBackward0").grad, expected)
    assert graphscope.active_hook_count() == 0
