"""Diagnostics as pure functions over hand-built graphs, and on real captures: each pathology
found exactly where it is (issue 5.8), and no false alarm on healthy or loss-scaled models."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import graphscope
from graphscope.demos import DEMOS
from graphscope.diagnostics import diagnose
from graphscope.health import Thresholds, forward_params
from graphscope.model import Edge, Graph, GradStats, Node, ParamInfo, Severity
from tests.models import Poison, TinyMLP, assert_param_norms, mlp_batch, mse, node_by_op, seeded
from tests.test_health import recurrence


def _stats(rms: float, *, numel: int = 100, nan: int = 0, zero_frac: float = 0.0) -> GradStats:
    norm = math.nan if nan else rms * math.sqrt(numel)
    return GradStats(norm, 0.0, rms, -rms, rms, rms, zero_frac, nan, 0, numel)


def _chain(param_rms: list[float]) -> Graph:
    """root <- op_k <- ... each op consuming one parameter; param_rms in forward order."""
    nodes = [Node(0, "SumBackward0", label="sum", is_root=True, executed=True, exec_order=0,
                  grad=_stats(1.0, numel=1))]
    edges = []
    order = 1
    prev = 0
    for i, r in enumerate(reversed(param_rms)):
        op = Node(len(nodes), "MmBackward0", label="mm", executed=True, exec_order=order,
                  grad=_stats(1.0))
        nodes.append(op)
        edges.append(Edge(op.id, prev, 0, 0, _stats(1.0)))
        order += 1
        layer = len(param_rms) - 1 - i
        p = Node(len(nodes), "AccumulateGrad", kind="param", label=f"{layer}.weight",
                 names=(f"{layer}.weight",), executed=True, exec_order=order, grad=_stats(r))
        nodes.append(p)
        edges.append(Edge(p.id, op.id, 0, 1, _stats(r)))
        order += 1
        prev = op.id
    return Graph(nodes=nodes, edges=edges, roots=[0], passes=1)


def test_depth_trend_is_vanishing_warning():
    """Gradients fading by orders of magnitude toward the input are one vanishing warning, about
    the worst parameter, naming the faded ones in forward order."""
    rms = [10.0 ** -(12 - i) for i in range(12)]
    rms[0], rms[1] = rms[1], rms[0]  # the worst is not the first in forward order
    g = _chain(rms)
    (f,) = [f for f in diagnose(g) if f.kind == "vanishing"]
    assert f.severity == Severity.WARNING and f.param == "1.weight"
    assert [g.nodes[i].name for i in f.nodes[:3]] == ["0.weight", "1.weight", "2.weight"]


def test_uniform_scale_is_not_exploding():
    """Uniform scaling (x65536) changes no ratio and raises nothing."""
    g = _chain([0.01 * 65536] * 10)
    assert diagnose(g) == []


def test_loss_scale_moves_the_absolute_limits():
    """A GradScaler loss scale (x2^24) multiplies the limits: 0.1 * 2^24 is healthy there, and
    exploding without the scale."""
    g = _chain([0.1 * 2.0**24] * 10)
    assert {f.kind for f in diagnose(g)} == {"exploding"}
    g.meta["loss_scale"] = 2.0**24
    assert diagnose(g) == []


def test_growth_toward_input_is_exploding():
    """Gradients growing by orders of magnitude toward the input are exploding warnings."""
    g = _chain([10.0 ** (8 - i) for i in range(10)])
    found = [f for f in diagnose(g) if f.kind == "exploding"]
    assert {g.nodes[i].name for f in found for i in f.nodes} >= {"0.weight", "1.weight"}
    assert not [f for f in diagnose(g) if f.kind == "vanishing"]


def test_isolated_tiny_gradient_is_info():
    """One structurally ~zero gradient among healthy ones is info, not a vanishing warning."""
    rms = [0.1] * 8
    rms[3] = 1e-12
    f = [f for f in diagnose(_chain(rms)) if f.kind == "vanishing"]
    assert len(f) == 1 and f[0].severity == Severity.INFO and f[0].param == "3.weight"


def test_nan_origin_blames_only_the_first_node():
    """The origin is the node with finite input and non-finite output; its producers are not."""
    ok, bad = _stats(1.0), _stats(1.0, nan=3)
    g = Graph(
        nodes=[
            Node(0, "SumBackward0", label="sum", is_root=True, executed=True, exec_order=0, grad=ok),
            Node(1, "SqrtBackward0", label="sqrt", executed=True, exec_order=1, grad=ok),
            Node(2, "MulBackward0", label="mul", executed=True, exec_order=2, grad=bad),
            Node(3, "AccumulateGrad", kind="leaf", label="leaf", executed=True, exec_order=3,
                 grad=bad),
        ],
        edges=[Edge(1, 0, 0, 0, ok), Edge(2, 1, 0, 0, bad), Edge(3, 2, 0, 0, bad)],
        roots=[0],
        passes=1,
    )
    origins = [f for f in diagnose(g) if f.kind == "nonfinite_origin"]
    assert [f.node for f in origins] == [1]
    assert "clamp" in origins[0].hint.lower()


def _one_op(label: str, zero_frac: float) -> Graph:
    """A root op ``label`` that receives a gradient and sends back ``zero_frac`` exact zeros."""
    ok = _stats(1.0)
    sent = _stats(1.0, zero_frac=zero_frac)
    return Graph(
        nodes=[Node(0, f"{label.capitalize()}Backward0", label=label, is_root=True, executed=True,
                    exec_order=0, grad=ok),
               Node(1, "AccumulateGrad", kind="leaf", label="leaf", executed=True,
                    exec_order=1, grad=sent)],
        edges=[Edge(1, 0, 0, 0, sent)], roots=[0], passes=1)


def test_dead_relu_detected_only_when_all_zero():
    """A ReLU sending back only zeros is dead; one with half zeros is healthy."""
    assert [f.kind for f in diagnose(_one_op("relu", 1.0))] == ["dead"]
    assert diagnose(_one_op("relu", 0.5)) == []


def test_gating_op_is_dead_past_dead_frac_other_ops_only_at_all_zero():
    """A relu sending back 99.5% zeros is dead (dead_frac 0.99); a mul sending as many is not."""
    assert [(f.kind, f.node) for f in diagnose(_one_op("relu", 0.995))] == [("dead", 0)]
    assert diagnose(_one_op("mul", 0.995)) == []
    assert [f.kind for f in diagnose(_one_op("mul", 1.0))] == ["dead"]


def test_thresholds_are_configurable():
    """A stricter vanishing ratio flags more layers."""
    g = _chain([10.0 ** -(i % 3) for i in range(9)][::-1])
    loose = [f for f in diagnose(g) if f.kind == "vanishing"]
    strict = [f for f in diagnose(g, thresholds=Thresholds(vanishing_ratio=0.5)) if f.kind == "vanishing"]
    assert len(strict) > len(loose)


def test_forward_params_order_follows_model():
    """With a model, parameters are listed in registration order, not reversed execution order."""
    nodes = [
        Node(0, "MulBackward0", label="mul", is_root=True, executed=True, exec_order=0),
        # Backward ran a.w before b.w, so without a model b.w would count as the earlier layer.
        Node(1, "AccumulateGrad", kind="param", label="a.w", names=("a.w",), executed=True,
             exec_order=1),
        Node(2, "AccumulateGrad", kind="param", label="b.w", names=("b.w",), executed=True,
             exec_order=2),
    ]
    g = Graph(nodes=nodes, edges=[Edge(1, 0, 0, 0), Edge(2, 0, 0, 1)], roots=[0], passes=1)
    assert [n.name for n in forward_params(g)] == ["b.w", "a.w"]
    g.params = [ParamInfo("a.w", (3,), "reached", 1), ParamInfo("b.w", (3,), "reached", 2)]
    assert [n.name for n in forward_params(g)] == ["a.w", "b.w"]


def test_findings_come_worst_first():
    """diagnose() puts warnings before infos even when the rule giving the info runs first."""
    rms = [0.1] * 8
    rms[3] = 1e-12  # an isolated tiny gradient: info, from the magnitude rule
    g = _chain(rms)
    g.params = [ParamInfo(n.name, (100,), "reached", n.id) for n in forward_params(g)]
    g.params.append(ParamInfo("aux.weight", (3,), "unreachable"))  # a warning, a later rule
    found = diagnose(g)
    assert [(f.kind, f.severity) for f in found] == [
        ("unreachable_param", Severity.WARNING), ("vanishing", Severity.INFO)]
    assert "'aux.weight' (3) requires grad" in found[0].message  # the one shape formatter


def test_nonfinite_gradient_passed_to_backward_is_blamed_on_the_caller():
    """A root op that already received NaN was given it by backward(gradient=...): no op is the origin."""
    bad = _stats(1.0, nan=2)
    g = Graph(
        nodes=[
            Node(0, "MulBackward0", label="mul", is_root=True, executed=True, exec_order=0,
                 grad=bad),
            Node(1, "AccumulateGrad", kind="leaf", label="leaf", executed=True, exec_order=1,
                 grad=bad),
        ],
        edges=[Edge(1, 0, 0, 0, bad)],
        roots=[0],
        passes=1,
    )
    (origin,) = [f for f in diagnose(g) if f.kind == "nonfinite_origin"]
    assert origin.node == 0 and origin.severity == Severity.ERROR
    assert "already holds 2 NaN" in origin.message and "`gradient=`" in origin.hint


# -- empty gradients: nothing flowed -----------------------------------------------------------

_EMPTY = GradStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0)


def _empty_batch_branch(*, empty: bool) -> Graph:
    """sum <- relu <- index(x[mask]) <- x, and addmm's weight: the branch's rows are the batch.

    With ``empty`` the mask selected no rows: relu and index receive zero-element gradients and
    index sends all zeros to x, addmm all zeros to its weight. Without it, relu is a dead ReLU:
    a real gradient comes in and only zeros go back.
    """
    came_in = _EMPTY if empty else _stats(1.0)
    zeros = _stats(0.0, zero_frac=1.0)
    nodes = [
        Node(0, "SumBackward0", label="sum", is_root=True, executed=True, exec_order=0,
             grad=_stats(1.0, numel=1)),
        Node(1, "ReluBackward0", label="relu", executed=True, exec_order=1, grad=came_in),
        Node(2, "AddmmBackward0", label="addmm", executed=True, exec_order=2,
             grad=_EMPTY if empty else zeros),
        Node(3, "IndexBackward0", label="index", executed=True, exec_order=3,
             grad=_EMPTY if empty else zeros),
        Node(4, "AccumulateGrad", kind="leaf", label="leaf", executed=True, exec_order=4,
             grad=zeros),
        Node(5, "AccumulateGrad", kind="param", label="roi.weight", names=("roi.weight",),
             executed=True, exec_order=5, grad=zeros),
    ]
    edges = [
        Edge(1, 0, 0, 0, came_in),
        Edge(2, 1, 0, 0, _EMPTY if empty else zeros),
        Edge(3, 2, 0, 1, _EMPTY if empty else zeros),
        Edge(5, 2, 0, 2, zeros),
        Edge(4, 3, 0, 0, zeros),
    ]
    return Graph(nodes=nodes, edges=edges, roots=[0], passes=1)


def test_empty_gradient_is_not_a_dead_unit():
    """Ops that received a zero-element gradient, and the zeros they send on, are not dead."""
    assert diagnose(_empty_batch_branch(empty=True)) == []
    dead = [f for f in diagnose(_empty_batch_branch(empty=False)) if f.kind == "dead"]
    assert {n for f in dead for n in f.nodes} == {1, 5}  # the dead ReLU, and the weight it starves


@pytest.mark.parametrize("kind", ["empty", "zeroed by an empty batch", "dead"])
def test_gradient_without_magnitude_sets_no_depth_trend(kind):
    """A layer whose gradient is empty or all zeros has no RMS to put on the depth trend."""
    g = _chain([1.0] * 6)
    last = g.find("5.weight")
    if kind == "empty":
        last.grad = _EMPTY
    else:  # its op received nothing (empty) or a real gradient it zeroed (dead)
        last.grad = _stats(0.0, zero_frac=1.0)
        op = g.nodes[g.consumers(last.id)[0]]
        op.grad = _EMPTY if kind != "dead" else _stats(1.0)
    assert [f for f in diagnose(g) if f.kind in ("vanishing", "exploding")] == []


def test_nan_after_an_empty_gradient_says_nothing_flowed_in():
    """An op that got a zero-element gradient and sent back NaN does not claim a finite input."""
    bad = _stats(1.0, nan=2)
    g = Graph(
        nodes=[
            Node(0, "SumBackward0", label="sum", is_root=True, executed=True, exec_order=0,
                 grad=_stats(1.0, numel=1)),
            Node(1, "CustomBackward", label="custom", executed=True, exec_order=1, grad=_EMPTY),
            Node(2, "AccumulateGrad", kind="leaf", label="leaf", executed=True, exec_order=2,
                 grad=bad),
        ],
        edges=[Edge(1, 0, 0, 0, _EMPTY), Edge(2, 1, 0, 0, bad)],
        roots=[0],
        passes=1,
    )
    (origin,) = [f for f in diagnose(g) if f.kind == "nonfinite_origin"]
    assert origin.node == 1
    assert "finite gradient" not in origin.message and "empty gradient" in origin.message


def test_branch_with_an_empty_batch_raises_nothing():
    """Heads whose batch selected no rows (x[mask], index_select) raise no dead/vanishing/exploding."""
    class TwoHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.trunk = torch.nn.Linear(4, 8)
            self.head = torch.nn.Linear(8, 1)
            # Registered last: the depth trend compares the first and last layers.
            self.roi = torch.nn.Linear(8, 8)
            self.cls = torch.nn.Linear(8, 2)

        def forward(self, x, mask):
            h = torch.relu(self.trunk(x))
            rois = torch.relu(self.roi(h[mask]))
            picked = self.cls(h.index_select(0, mask.nonzero().flatten()))
            return self.head(h).sum() + rois.sum() + picked.sum()

    torch.manual_seed(0)
    model = TwoHeads()
    mask = torch.zeros(6, dtype=torch.bool)
    loss = model(torch.randn(6, 4), mask)
    with graphscope.capture(loss, model=model, warn=False) as g:
        loss.backward()
    named = [f for f in g.findings if f.kind in ("dead", "vanishing", "exploding")]
    assert named == [], [str(f) for f in named]
    assert [f for f in g.findings if f.severity >= Severity.WARNING] == []


# -- pathologies on real captures (issue 5.8, issue 2.5) ------------------------------------------


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


def _kinds(g: graphscope.Graph, *, at_least=Severity.WARNING) -> set[str]:
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
    assert origins[0].severity == Severity.ERROR
    assert "Poison" in origins[0].message
    poison = g.nodes[origins[0].node]
    for n in g.backward_order():
        if n.exec_order < poison.exec_order:
            assert n.grad.finite, n.op
    assert not model.head.weight.grad.isnan().any() and model.fc1.weight.grad.isnan().all()
    assert [w.category for w in caught].count(graphscope.NonFiniteGradientWarning) == 1


def test_where_sqrt_trap_origin_is_sqrt():
    """torch.where guarding sqrt: the one origin is the sqrt, not the where; the hint explains
    why (the where, the sqrt)."""
    g, caught = _demo("nan_hunt")
    origins = [f for f in g.findings if f.kind == "nonfinite_origin"]
    assert [g.nodes[f.node].op for f in origins] == ["SqrtBackward0"]
    assert "where" in origins[0].hint and "sqrt" in origins[0].hint
    where = node_by_op(g, "WhereBackward0")
    assert not g.findings_for(where.id)
    assert any(w.category is graphscope.NonFiniteGradientWarning for w in caught)


def test_nan_loss_with_finite_gradients_is_a_forward_problem():
    """A NaN loss whose gradients are all finite is reported as a forward problem, born at the
    add of the NaN constant, with no NaN origin in the gradients."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    loss = mse(model, x, y) + torch.tensor(float("nan"))
    g, _ = _run(model, loss)
    assert all(n.grad is None or n.grad.finite for n in g.nodes)
    (finding,) = [f for f in g.findings if f.kind == "nonfinite_loss"]
    assert finding.node == g.roots[0]
    assert "forward" in finding.message and "nan" in finding.message.lower()
    (origin,) = [f for f in g.findings if f.kind == "nonfinite_origin"]
    assert origin.node == g.roots[0] and "born in the forward pass" in origin.message


def test_dead_relu_found_at_the_relu():
    """A ReLU behind a bias of -100 is reported dead once, at the relu node, and warned."""
    g, caught = _demo("dead_relu")
    dead = [f for f in g.findings if f.kind == "dead" and f.param is None]
    assert len(dead) == 1 and g.nodes[dead[0].node].label == "relu"
    assert any(w.category is graphscope.DeadUnitWarning for w in caught)


def test_sigmoid_stack_vanishes_toward_the_input():
    """A 20-layer sigmoid MLP: vanishing warnings, led by the first layers; no explosion."""
    g, caught = _demo("sigmoid_mlp")
    vanishing = [f for f in g.findings if f.kind == "vanishing" and f.severity >= Severity.WARNING]
    named = {g.nodes[i].name for f in vanishing for i in f.nodes}
    assert "0.weight" in named
    assert "40.weight" not in named  # the output layer is healthy
    assert "exploding" not in _kinds(g)
    assert any(w.category is graphscope.VanishingGradientWarning for w in caught)


def test_linear_stack_explodes_toward_the_input():
    """A 20-layer linear stack with std 0.5 init: exploding warnings at the first layers."""
    g, caught = _demo("exploding")
    exploding = [f for f in g.findings if f.kind == "exploding"]
    assert "0.weight" in {g.nodes[i].name for f in exploding for i in f.nodes}
    assert "vanishing" not in _kinds(g, at_least=Severity.INFO)
    assert any(w.category is graphscope.ExplodingGradientWarning for w in caught)


def test_unused_detached_and_frozen_parameters():
    """Unused and detached parameters are named as unreachable (warned); frozen ones are info."""
    g, caught = _demo("unused_layer")
    status = {i.name: i.status for i in g.params}
    assert status["embed.weight"] == "reached"
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
    assert frozen.severity == Severity.INFO
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


@pytest.mark.parametrize("scale", [2.0**16, 2.0**24])
def test_grad_scaler_scaled_gradients_not_exploding(scale):
    """A GradScaler-scaled loss changes no finding: uniform scaling is not an explosion."""
    model, forward = seeded(DEMOS["relu_mlp"].make)  # healthy: Kaiming-initialised ReLU MLP
    twin, twin_forward = seeded(DEMOS["relu_mlp"].make)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    scaled = scaler.scale(forward())
    g = graphscope.capture(scaled, model=model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scaled.backward()
    plain = twin_forward()
    ref = graphscope.capture(plain, model=twin, warn=False)
    plain.backward()
    assert assert_param_norms(g, model) == 42
    assert not [f for f in g.findings if f.kind == "exploding"], [str(f) for f in g.findings]
    assert not [w for w in caught if issubclass(w.category, graphscope.ExplodingGradientWarning)]
    assert sorted(f.kind for f in g.findings) == sorted(f.kind for f in ref.findings)


def test_tiny_gradients_in_proportion_to_a_tiny_loss_are_information():
    """Every gradient ~1e-9 under a loss of 1e-7 (a converged fit) is an info that names the
    loss; the same gradients under a loss of 1 are a vanishing warning."""
    g = _chain([1e-9] * 10)
    g.meta["root_values"] = [1e-7]
    (f,) = [f for f in diagnose(g) if f.kind == "vanishing"]
    assert f.severity == Severity.INFO and "The loss itself is 1.00e-07" in f.message
    g.meta["root_values"] = [1.0]
    (f,) = [f for f in diagnose(g) if f.kind == "vanishing"]
    assert f.severity == Severity.WARNING


def test_vanishing_through_time_is_one_warning_naming_the_recurrent_weight():
    """A recurrence fading 0.5x a step over 100 steps: one vanishing warning at its shared
    weight that says 'through time'; fading 0.9x over 30 steps: no warning."""
    found = [f for f in diagnose(recurrence(100, 0.5)) if f.severity >= Severity.WARNING]
    assert [(f.kind, f.param) for f in found] == [("vanishing", "rnn.weight_hh_l0")]
    assert "through time" in found[0].message and "LSTM" in found[0].hint
    assert not [f for f in diagnose(recurrence(30, 0.9)) if f.severity >= Severity.WARNING]
