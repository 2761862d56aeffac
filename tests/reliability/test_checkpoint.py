"""Activation checkpointing (issue 5.4): the walk never recomputes a region by touching its saved
tensors; reentrant regions are one opaque node whose parameters are not called unused."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import graphscope

from .models import assert_grads_identical, assert_param_norms, mlp_batch, twins
from .oracle import assert_norm, assert_same_structure


class Block(nn.Module):
    """A checkpointable block that counts how often its forward runs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return torch.tanh(self.fc(x))


class Net(nn.Module):
    def __init__(self, reentrant: bool, how: str = "module", share: bool = False) -> None:
        super().__init__()
        self.pre = nn.Linear(4, 4)
        self.block = Block()
        self.head = nn.Linear(4, 1)
        self.reentrant, self.how, self.share = reentrant, how, share

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pre(x)
        if self.share:  # the block's parameters are also used outside the region
            h = self.block.fc(h)
        block = self.block
        run = {"module": block, "method": block.forward, "closure": lambda t: block(t)}[self.how]
        h = checkpoint(run, h, use_reentrant=self.reentrant)
        return self.head(h).pow(2).mean()


def test_non_reentrant_walk_does_not_recompute():
    """Capturing a non-reentrant checkpoint reruns nothing; backward recomputes exactly once, as
    without graphscope; every op inside is visible and every parameter reached."""
    model, twin = twins(lambda: Net(reentrant=False))
    x, _ = mlp_batch()
    loss = model(x)
    assert model.block.calls == 1
    g = graphscope.capture(loss, model=model, warn=False)
    assert model.block.calls == 1
    assert_same_structure(g, [loss])
    assert {i.status for i in g.params} == {"reached"}
    inside = g.find("block.fc.weight")
    assert inside.grad is None
    packed = [m for n in g.nodes for m in n.saved if m.value and "saved_tensors_hooks" in m.value]
    assert packed, "saved tensors of the region should be described without unpacking"
    loss.backward()
    twin(x).backward()
    assert model.block.calls == twin.block.calls == 2
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 6
    assert graphscope.active_hook_count() == 0


@pytest.mark.parametrize("how", ["module", "method", "closure"])
def test_reentrant_region_is_opaque_and_its_params_not_unused(how):
    """A reentrant checkpoint is one opaque node; its parameters are 'opaque', never unreachable,
    and no UnusedParameterWarning is issued."""
    model, twin = twins(lambda: Net(reentrant=True, how=how))
    x, _ = mlp_batch()
    loss = model(x)
    g = graphscope.capture(loss, model=model)
    assert model.block.calls == 1
    (region,) = [n for n in g.nodes if n.opaque is not None]
    assert region.opaque == "checkpoint" and region.op == "CheckpointFunctionBackward"
    status = {i.name: i.status for i in g.params}
    assert status == {
        "pre.weight": "reached",
        "pre.bias": "reached",
        "block.fc.weight": "opaque",
        "block.fc.bias": "opaque",
        "head.weight": "reached",
        "head.bias": "reached",
    }
    assert all(i.node == region.id for i in g.params if i.status == "opaque")
    kinds = [f.kind for f in g.findings]
    assert "unreachable_param" not in kinds and "opaque" in kinds
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.backward()
    assert not [w for w in caught if issubclass(w.category, graphscope.UnusedParameterWarning)]
    twin(x).backward()
    assert model.block.calls == twin.block.calls == 2
    assert_grads_identical(model, twin)
    assert region.executed
    for name in ("pre.weight", "pre.bias", "head.weight", "head.bias"):
        assert_norm(g.find(name).grad.norm, model.get_parameter(name).grad)
    assert graphscope.active_hook_count() == 0


def test_reentrant_nested_backward_does_not_end_the_outer_pass():
    """A parameter used both outside and inside a reentrant region: the nested backward that
    runs the region must not close the recording of the outer backward."""
    model, twin = twins(lambda: Net(reentrant=True, share=True))
    x, _ = mlp_batch()
    loss = model(x)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    twin(x).backward()
    assert_grads_identical(model, twin)
    assert g.passes == 1
    assert graphscope.active_hook_count() == 0
    # Every node of the outer graph ran in the outer backward, the pre layer included.
    assert [n.op for n in g.nodes if not n.executed] == []
    for name in ("pre.weight", "pre.bias", "head.weight", "head.bias"):
        assert_norm(g.find(name).grad.norm, model.get_parameter(name).grad)
