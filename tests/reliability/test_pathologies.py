"""Pathologies found exactly where they are (issue 5.8, issue 2.5): one NaN origin at the node
that made it, the where/sqrt trap, a NaN loss with finite gradients, dead ReLUs, vanishing and
exploding stacks, unused/detached/frozen parameters, and no false alarm on healthy models."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import graphscope
from graphscope.demos import DEMOS

from .models import Poison, TinyMLP, mlp_batch, mse, seeded
from .oracle import node_by_op


def _run(model: nn.Module, loss: torch.Tensor) -> tuple[graphscope.Graph, list[warnings.WarningMessage]]:
    """Capture with warnings on, run backward, return the graph and the GradientWarnings issued."""
    g = graphscope.capture(loss, model=model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.backward()
    assert graphscope.active_hook_count() == 0
    return g, [w for w in caught if issubclass(w.category, graphscope.GradientWarning)]


def _demo(name: str) -> tuple[graphscope.Graph, list[warnings.WarningMessage]]:
    model, forward = seeded(DEMOS[name].make)
    return _run(model, forward())


def _kinds(g: graphscope.Graph, *, at_least=graphscope.Severity.WARNING) -> set[str]:
    return {f.kind for f in g.findings if f.severity >= at_least}


class PoisonedMLP(TinyMLP):
    """TinyMLP with a NaN-making backward between fc2 and the sigmoid."""

    def forward(self, x):
        return self.head(torch.sigmoid(Poison.apply(self.fc2(torch.tanh(self.fc1(x))))))


def test_injected_nan_has_exactly_one_origin():
    """A NaN born in one node's backward is blamed on that node only, not on anything below."""
    model = seeded(PoisonedMLP)
    x, y = mlp_batch()
    g, caught = _run(model, mse(model, x, y))
    origins = [f for f in g.findings if f.kind == "nonfinite_origin"]
    assert [g.nodes[f.node].op for f in origins] == ["PoisonBackward"]
    assert origins[0].severity == graphscope.Severity.ERROR
    assert "Poison" in origins[0].message
    poison = g.nodes[origins[0].node]
    for n in g.backward_order():
        if n.exec_order < poison.exec_order:
            assert n.grad.finite, n.op
    assert not model.head.weight.grad.isnan().any() and model.fc1.weight.grad.isnan().all()
    assert [w.category for w in caught].count(graphscope.NonFiniteGradientWarning) == 1


def test_where_sqrt_trap_origin_is_sqrt():
    """torch.where guarding sqrt: the origin is the sqrt, not the where; the hint explains why."""
    g, caught = _demo("nan_hunt")
    origins = [f for f in g.findings if f.kind == "nonfinite_origin"]
    assert [g.nodes[f.node].op for f in origins] == ["SqrtBackward0"]
    assert "where" in origins[0].hint
    where = node_by_op(g, "WhereBackward0")
    assert not g.findings_for(where.id)
    assert any(w.category is graphscope.NonFiniteGradientWarning for w in caught)


def test_nan_loss_with_finite_gradients_is_a_forward_problem():
    """A NaN loss whose gradients are all finite is reported as a forward problem, with no
    NaN origin in the gradients."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    loss = mse(model, x, y) + torch.tensor(float("nan"))
    g, _ = _run(model, loss)
    assert all(n.grad is None or n.grad.finite for n in g.nodes)
    (finding,) = [f for f in g.findings if f.kind.startswith("nonfinite")]
    assert finding.kind == "nonfinite_loss" and finding.node == g.roots[0]
    assert "forward" in finding.message and "nan" in finding.message.lower()


def test_dead_relu_found_at_the_relu():
    """A ReLU behind a bias of -100 is reported dead at the relu node."""
    g, caught = _demo("dead_relu")
    dead = [f for f in g.findings if f.kind == "dead" and f.node is not None]
    assert "relu" in {g.nodes[f.node].label for f in dead}
    assert any(w.category is graphscope.DeadUnitWarning for w in caught)


def test_sigmoid_stack_vanishes_toward_the_input():
    """A 20-layer sigmoid MLP: vanishing warnings, led by the first layers; no explosion."""
    g, caught = _demo("sigmoid_mlp")
    vanishing = [f for f in g.findings if f.kind == "vanishing" and f.severity >= graphscope.Severity.WARNING]
    assert "0.weight" in {f.param for f in vanishing}
    assert "40.weight" not in {f.param for f in vanishing}  # the output layer is healthy
    assert "exploding" not in _kinds(g)
    assert any(w.category is graphscope.VanishingGradientWarning for w in caught)


def test_linear_stack_explodes_toward_the_input():
    """A 20-layer linear stack with std 0.5 init: exploding warnings at the first layers."""
    g, caught = _demo("exploding")
    exploding = [f for f in g.findings if f.kind == "exploding"]
    assert "0.weight" in {f.param for f in exploding}
    assert "vanishing" not in _kinds(g, at_least=graphscope.Severity.INFO)
    assert any(w.category is graphscope.ExplodingGradientWarning for w in caught)


def test_unused_detached_and_frozen_parameters():
    """Unused and detached parameters are named as unreachable (warned); frozen ones are info."""
    g, caught = _demo("unused_layer")
    status = {i.name: i.status for i in g.params}
    assert {n for n, s in status.items() if s == "unreachable"} == {
        "aux_head.weight",
        "aux_head.bias",
        "branch.weight",
        "branch.bias",
    }
    assert {n for n, s in status.items() if s == "frozen"} == {"frozen.weight", "frozen.bias"}
    unreachable = {f.param for f in g.findings if f.kind == "unreachable_param"}
    assert unreachable == {"aux_head.weight", "aux_head.bias", "branch.weight", "branch.bias"}
    (frozen,) = [f for f in g.findings if f.kind == "frozen_param"]
    assert frozen.severity == graphscope.Severity.INFO
    assert "frozen.weight" in frozen.message
    unused = [w for w in caught if w.category is graphscope.UnusedParameterWarning]
    assert unused and all(any(name in str(w.message) for name in unreachable) for w in unused)
    assert "frozen.weight" not in " ".join(str(w.message) for w in caught)


@pytest.mark.parametrize("name", ["relu_mlp", "linear_regression", "attention", "cnn", "lstm"])
def test_no_false_alarm_on_healthy_models(name):
    """Healthy models raise no warning-level finding and issue no GradientWarning."""
    g, caught = _demo(name)
    assert _kinds(g) == set(), [str(f) for f in g.findings]
    assert caught == []
