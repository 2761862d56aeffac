"""Diagnostics as pure functions over hand-built graphs, and on the demo models."""

from __future__ import annotations

import math

import pytest

from graphscope.demos import DEMOS
from graphscope.diagnostics import Thresholds, diagnose, forward_params
from graphscope.model import Edge, Graph, GradStats, Node, Severity


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
    """Gradients fading by orders of magnitude toward the input are vanishing warnings."""
    g = _chain([10.0 ** -(12 - i) for i in range(12)])
    found = [f for f in diagnose(g) if f.kind == "vanishing"]
    assert found and all(f.severity == Severity.WARNING for f in found)
    assert found[0].param == "0.weight"  # the worst one leads


def test_uniform_scale_is_not_exploding():
    """GradScaler-style uniform scaling (x65536) changes no ratio and raises nothing."""
    g = _chain([0.01 * 65536] * 10)
    assert diagnose(g) == []


def test_growth_toward_input_is_exploding():
    """Gradients growing by orders of magnitude toward the input are exploding warnings."""
    g = _chain([10.0 ** (8 - i) for i in range(10)])
    found = [f for f in diagnose(g) if f.kind == "exploding"]
    assert {f.param for f in found} >= {"0.weight", "1.weight"}
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


def test_dead_relu_detected_only_when_all_zero():
    """A ReLU sending back only zeros is dead; one with half zeros is healthy."""
    def graph(zero_frac):
        ok = _stats(1.0)
        sent = _stats(1.0, zero_frac=zero_frac)
        return Graph(
            nodes=[Node(0, "ReluBackward0", label="relu", is_root=True, executed=True,
                        exec_order=0, grad=ok),
                   Node(1, "AccumulateGrad", kind="leaf", label="leaf", executed=True,
                        exec_order=1, grad=sent)],
            edges=[Edge(1, 0, 0, 0, sent)], roots=[0], passes=1)

    assert [f.kind for f in diagnose(graph(1.0))] == ["dead"]
    assert diagnose(graph(0.5)) == []


def test_thresholds_are_configurable():
    """A stricter vanishing ratio flags more layers."""
    g = _chain([10.0 ** -(i % 3) for i in range(9)][::-1])
    loose = [f for f in diagnose(g) if f.kind == "vanishing"]
    strict = [f for f in diagnose(g, Thresholds(vanishing_ratio=0.5)) if f.kind == "vanishing"]
    assert len(strict) > len(loose)


@pytest.mark.parametrize("name", ["relu_mlp", "cnn", "lstm", "linear_regression", "attention"])
def test_no_false_alarms_on_healthy_models(name):
    """Healthy demo models raise no warning or error."""
    findings = DEMOS[name].build().findings
    assert [f for f in findings if f.severity >= Severity.WARNING] == []


def test_sigmoid_vanishes_and_exploding_stack_explodes():
    """The 20-layer sigmoid MLP vanishes and the std-0.5 linear stack explodes."""
    assert any(f.kind == "vanishing" for f in DEMOS["sigmoid_mlp"].build().findings)
    assert any(f.kind == "exploding" for f in DEMOS["exploding"].build().findings)


def test_dead_relu_demo():
    """A ReLU after a bias of -100 is reported dead, with the ReLU named."""
    g = DEMOS["dead_relu"].build()
    dead = [f for f in g.findings if f.kind == "dead" and f.param is None]
    assert len(dead) == 1 and g.nodes[dead[0].node].label == "relu"


def test_forward_params_order_follows_model():
    """With a model, parameters are listed in registration (forward) order."""
    g = DEMOS["sigmoid_mlp"].build()
    names = [n.name for n in forward_params(g)]
    assert names[:2] == ["0.weight", "0.bias"] and names[-1] == "40.bias"
