"""A forgotten zero_grad(): a parameter's .grad after a backward that holds more than that
backward sent (graphscope.autograd.hooks reads .grad at the end of the pass; the diagnosis and
watch word it). Torch is the oracle: .grad before and after the backward give what was sent."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import graphscope
from graphscope.errors import GradientWarning
from graphscope.formatting import fmt_num
from graphscope.model import FindingKind, Severity
from tests.models import TinyMLP, assert_grads_identical, mlp_batch, mse, seeded, twins


def _accumulated(g: graphscope.Graph) -> list[graphscope.Finding]:
    return [f for f in g.findings if f.kind == FindingKind.ACCUMULATED]


class Wide(nn.Module):
    """A layer past the stats batch's small-tensor size (its gradient is reduced in place) and a
    small one."""

    def __init__(self) -> None:
        super().__init__()
        self.big = nn.Linear(300, 300)
        self.small = nn.Linear(300, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.small(torch.tanh(self.big(x)))


def test_second_backward_without_zero_grad_is_information_with_both_norms():
    """Step 2 without zero_grad is info per parameter with the held and sent norms."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = mse(model, x, y)
    g1 = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    opt.step()
    assert not _accumulated(g1)
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    loss = mse(model, x, y)
    g2 = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    (f,) = _accumulated(g2)  # one finding for the one cause, naming every parameter
    assert {g2.nodes[i].name for i in f.nodes} == {n for n, _ in model.named_parameters()}
    assert f.severity == Severity.INFO
    held = {e["node"]: e["norm"] for e in g2.meta["accumulated_grad"]}
    for name, p in model.named_parameters():
        node = g2.find(name)
        sent = (p.grad - before[name]).norm().item()
        assert math.isclose(node.grad.norm, sent, rel_tol=1e-5)
        assert math.isclose(held[node.id], p.grad.norm().item(), rel_tol=1e-6)
        said = f"norm {fmt_num(held[node.id])} but this backward sent it {fmt_num(node.grad.norm)}"
        assert said in f.message
        assert "zero_grad()" in f.hint


def test_forgotten_zero_grad_under_watch_becomes_a_warning():
    """Under watch, a forgotten zero_grad is info on steps 2-3 and a warning from step 4."""
    model = seeded(TinyMLP)
    with pytest.warns(GradientWarning, match=r"zero_grad\(\) is missing") as caught:
        x, y = mlp_batch()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with graphscope.watch(model, keep=5, warn=True) as w:
            for _ in range(5):
                mse(model, x, y).backward()
                opt.step()
    levels = [{f.severity for f in _accumulated(g)} for g in w.graphs]
    info, warning = {Severity.INFO}, {Severity.WARNING}
    assert levels == [set(), info, info, warning, warning]
    assert all(f.category is GradientWarning for f in caught if "zero_grad" in str(f.message))


@pytest.mark.parametrize("zero_grad", ["none", "zeros"])
def test_zero_grad_every_step_says_nothing(zero_grad):
    """zero_grad() before each backward (to None or to zeros) reports nothing, large or small."""
    model = seeded(Wide)
    x, y = mlp_batch(d=300)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graphscope.watch(model, keep=4, warn=False) as w:
        for _ in range(4):
            opt.zero_grad(set_to_none=zero_grad == "none")
            mse(model, x, y).backward()
            opt.step()
    assert len(w.graphs) == 4
    assert all(not _accumulated(g) and "accumulated_grad" not in g.meta for g in w.graphs)


def test_accumulating_on_purpose_is_at_most_information():
    """Accumulating 2 micro-batches on purpose is info on the second one, never a warning."""
    model = seeded(TinyMLP)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graphscope.watch(model, keep=8, warn=False) as w:
        for step in range(4):
            for micro in range(2):
                x, y = mlp_batch(seed=10 * step + micro)
                mse(model, x, y).backward()
            opt.step()
            opt.zero_grad()
    levels = [{f.severity for f in _accumulated(g)} for g in w.graphs]
    assert levels == [set(), {Severity.INFO}] * 4


def test_accumulating_many_micro_batches_is_not_a_warning():
    """Five micro-batches in a row without an optimizer step between them stay information."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with graphscope.watch(model, keep=10, warn=False) as w:
        for _ in range(2):
            for _ in range(5):
                mse(model, x, y).backward()
            opt.step()
            opt.zero_grad()
    severities = {f.severity for g in w.graphs for f in _accumulated(g)}
    assert severities == {Severity.INFO}
    entries = [e for g in w.graphs for e in g.meta.get("accumulated_grad", ())]
    assert entries and {e["steps_in_a_row"] for e in entries} == {1}


def test_watched_gradients_are_bit_identical_to_an_unwatched_twin():
    """Reading .grad leaves it bit-identical to an unwatched twin's, step after step."""
    watched, plain = twins(TinyMLP)
    x, y = mlp_batch()
    opt_w = torch.optim.SGD(watched.parameters(), lr=0.01)
    opt_p = torch.optim.SGD(plain.parameters(), lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientWarning)
        with graphscope.watch(watched, keep=1):
            for _ in range(4):
                mse(watched, x, y).backward()
                opt_w.step()
    for _ in range(4):
        mse(plain, x, y).backward()
        opt_p.step()
    assert_grads_identical(watched, plain)
    for a, b in zip(watched.parameters(), plain.parameters()):
        assert torch.equal(a, b)


def test_retain_graph_second_pass_sees_the_first_passes_gradient():
    """A second retain_graph pass sees .grad at twice what it sent: read after AccumulateGrad."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    loss = mse(model, x, y)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward(retain_graph=True)
    assert not _accumulated(g)
    loss.backward()
    (entry,) = [e for e in g.meta["accumulated_grad"] if g.nodes[e["node"]].name == "head.bias"]
    assert math.isclose(entry["norm"], 2 * g.nodes[entry["node"]].grad.norm, rel_tol=1e-6)
    assert math.isclose(entry["norm"], model.head.bias.grad.norm().item(), rel_tol=1e-6)


def test_autograd_grad_does_not_run_accumulate_grad():
    """torch.autograd.grad writes no .grad, so an earlier .grad is not reported."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    mse(model, x, y).backward()
    loss = mse(model, x, y)
    g = graphscope.capture(loss, model=model, warn=False)
    torch.autograd.grad(loss, list(model.parameters()))
    assert g.passes == 1 and not _accumulated(g)
