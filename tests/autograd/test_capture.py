"""Core capture: structure against an independent BFS, gradients against torch, bad input."""

from __future__ import annotations

import collections
import sys

import pytest
import torch
from torch import nn

import graphscope
from graphscope.demos import DEMOS, LSTMRegressor, SelfAttention, mlp
from tests.models import Square, TiedLM, bfs


def _multiset(graph):
    return collections.Counter((graph.nodes[e.src].op, graph.nodes[e.dst].op) for e in graph.edges)


def _check_structure(loss, graph):
    order, edges = bfs(loss.grad_fn)
    assert [type(f).__name__ for f in order] == [n.op for n in graph.nodes]
    ids = {f: i for i, f in enumerate(order)}
    assert collections.Counter((ids[a], ids[b]) for a, b in edges) == collections.Counter(
        (e.src, e.dst) for e in graph.edges
    )


def _check_param_grads(model, graph):
    for name, p in model.named_parameters():
        node = graph.find(name)
        assert node.grad is not None, name
        ref = p.grad
        assert node.grad.norm == pytest.approx(ref.norm().item(), rel=1e-5, abs=1e-30), name
        # The mean of values summing to ~0 is cancellation noise: compare on the scale of the RMS.
        scale = ref.norm().item() / ref.numel() ** 0.5
        assert node.grad.mean == pytest.approx(ref.mean().item(), rel=1e-4, abs=1e-5 * scale), name
        assert node.grad.max == pytest.approx(ref.max().item(), rel=1e-6), name
        assert node.grad.min == pytest.approx(ref.min().item(), rel=1e-6), name
        assert node.grad.numel == ref.numel()


MODELS = {
    "mlp": lambda: (mlp(3, 8, nn.ReLU), torch.randn(5, 8)),
    "cnn": lambda: (
        nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2)),
        torch.randn(2, 1, 8, 8),
    ),
    "lstm": lambda: (LSTMRegressor(), torch.randn(3, 5, 4)),
    "attention": lambda: (SelfAttention(), torch.randn(2, 4, 16)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_structure_and_param_grads_match_torch(name):
    """Nodes/edges equal an independent BFS and parameter stats equal p.grad for common models."""
    torch.manual_seed(0)
    model, x = MODELS[name]()
    loss = model(x).pow(2).sum()
    graph = graphscope.capture(loss, model=model, warn=False)
    _check_structure(loss, graph)
    loss.backward()
    _check_param_grads(model, graph)
    assert graph.passes == 1
    assert graphscope.active_hook_count() == 0


def test_intermediate_grad_equals_autograd_grad():
    """An op node's grad stats equal torch.autograd.grad(loss, t) for its output tensor t."""
    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    x = torch.randn(5, 4)
    h = x @ w
    s = torch.sigmoid(h)
    loss = (s * s).sum()
    (ref_h, ref_s) = torch.autograd.grad(loss, [h, s], retain_graph=True)
    graph = graphscope.capture(loss, warn=False)
    loss.backward()
    by_op = {n.op: n for n in graph.nodes}
    assert by_op["MmBackward0"].grad.norm == pytest.approx(ref_h.norm().item(), rel=1e-6)
    assert by_op["SigmoidBackward0"].grad.norm == pytest.approx(ref_s.norm().item(), rel=1e-6)
    assert by_op["SigmoidBackward0"].grad.std == pytest.approx(
        ref_s.std(unbiased=False).item(), rel=1e-5
    )


def test_parallel_edges_kept():
    """x * x gives two edges from x's producer, in the model and in graph.nx."""
    x = torch.randn(3, requires_grad=True)
    y = (x * 2)
    loss = (y * y).sum()
    graph = graphscope.capture(loss, warn=False)
    square = graph.nodes[1]
    assert square.op == "MulBackward0"
    ins = graph.in_edges(square.id)
    assert len(ins) == 2 and ins[0].src == ins[1].src
    assert graph.nx.number_of_edges(ins[0].src, square.id) == 2


def test_node_fields_and_saved_tensors():
    """Nodes carry op, kind, label, shape, dtype, device and saved tensor shapes."""
    lin = nn.Linear(4, 2)
    x = torch.randn(3, 4, requires_grad=True)
    loss = torch.sigmoid(lin(x)).sum()
    graph = graphscope.capture(loss, model=lin, warn=False)
    sig = next(n for n in graph.nodes if n.op == "SigmoidBackward0")
    assert (sig.kind, sig.label, sig.shape, sig.dtype, sig.device) == (
        "op", "sigmoid", (3, 2), "float32", "cpu"
    )
    assert [(s.name, s.shape) for s in sig.saved] == [("result", (3, 2))]
    w = graph.find("weight")
    assert (w.kind, w.shape, w.module) == ("param", (2, 4), "")
    leaf = next(n for n in graph.nodes if n.kind == "leaf")
    assert leaf.shape == (3, 4)
    nx = graph.nx
    assert nx.nodes[sig.id]["op"] == "SigmoidBackward0"
    assert nx.nodes[w.id]["name"] == "weight"


def test_lstm_multi_output_node_has_per_output_grads():
    """The LSTM's multi-output node records one GradStats per output and output_nr on edges."""
    torch.manual_seed(0)
    model = LSTMRegressor()
    loss = model(torch.randn(2, 5, 4)).sum()
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    multi = [n for n in graph.nodes if len(n.outputs) > 1]
    assert multi, "LSTM should produce a multi-output node"
    node = multi[0]
    assert len(node.grads) == len(node.outputs)
    assert node.grad is not None
    present = [g for g in node.grads if g is not None]
    assert node.grad.norm == pytest.approx(sum(g.norm**2 for g in present) ** 0.5)


def test_weight_tying_one_node_all_names():
    """A tied weight is one node that lists every name and is counted once."""
    torch.manual_seed(0)
    model = TiedLM()
    loss = model(torch.tensor([[1, 2, 3]])).sum()
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    tied = graph.find("embed.weight")
    assert tied.names == ("embed.weight", "out.weight")
    assert len([n for n in graph.nodes if "embed.weight" in n.names]) == 1
    assert len(graph.consumers(tied.id)) >= 2
    assert tied.grad.norm == pytest.approx(model.embed.weight.grad.norm().item(), rel=1e-5)


def test_custom_function_multi_output_and_saved():
    """A custom autograd.Function is one node labelled by its class, with its saved tensor."""
    x = torch.randn(4, requires_grad=True)
    a, b = Square.apply(x)
    loss = (a + b).sum()
    graph = graphscope.capture(loss, warn=False)
    fn = next(n for n in graph.nodes if n.label == "Square")
    assert len(fn.outputs) == 2
    assert [s.shape for s in fn.saved] == [(4,)]
    loss.backward()
    leaf = next(n for n in graph.nodes if n.kind == "leaf")
    assert leaf.grad.norm == pytest.approx(x.grad.norm().item(), rel=1e-6)


def test_deep_chain_is_iterative_and_fast():
    """A 10,000-step chain is walked without hitting the recursion limit."""
    x = torch.randn(2, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    loss = y.sum()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)
    try:
        graph = graphscope.capture(loss, warn=False)
    finally:
        sys.setrecursionlimit(limit)
    assert len(graph.nodes) == 10_002
    loss.backward()
    assert graph.nodes[-1].grad.norm == pytest.approx(x.grad.norm().item(), rel=1e-5)


def test_diamond_chain_visits_each_node_once():
    """A diamond chain with 2^60 paths has 3 nodes per level, not exponentially many."""
    x = torch.randn(2, requires_grad=True)
    y = x
    for _ in range(60):
        y = y.sin() + y.cos()
    graph = graphscope.capture(y.sum(), warn=False)
    order, edges = bfs(y.sum().grad_fn)
    assert len(graph.nodes) == len(order) == 3 * 60 + 2
    assert len(graph.edges) == len(edges)


def test_nan_origin_is_the_injected_node():
    """A NaN born in one op is reported exactly once, at that op, not downstream."""
    torch.manual_seed(0)
    graph = DEMOS["nan_hunt"].build()
    origins = [f for f in graph.findings if f.kind == "nonfinite_origin"]
    assert len(origins) == 1
    assert graph.nodes[origins[0].node].op == "SqrtBackward0"
    assert "sqrt" in origins[0].hint


def test_nan_loss_with_finite_grads_is_a_forward_problem():
    """A NaN loss whose gradients are finite is reported as a forward-pass problem."""
    x = torch.randn(3, requires_grad=True)
    loss = (x * 2).sum() + torch.tensor(float("nan"))
    graph = graphscope.capture(loss, warn=False)
    loss.backward()
    kinds = [f.kind for f in graph.findings]
    assert "nonfinite_loss" in kinds and "nonfinite_origin" not in kinds
    assert "forward" in graph.findings[0].message


def test_unused_and_detached_params_named_and_frozen_is_info():
    """Unused and detached parameters are warned by name; frozen ones are info only."""
    graph = DEMOS["unused_layer"].build()
    unreachable = {f.param for f in graph.findings if f.kind == "unreachable_param"}
    assert unreachable == {"aux_head.weight", "aux_head.bias", "branch.weight", "branch.bias"}
    frozen = [f for f in graph.findings if f.kind == "frozen_param"]
    assert len(frozen) == 1 and frozen[0].severity == graphscope.Severity.INFO
    assert "frozen.weight" in frozen[0].message
    status = {p.name: p.status for p in graph.params}
    assert status["embed.weight"] == "reached" and status["frozen.bias"] == "frozen"


def test_warnings_are_issued_after_backward():
    """Findings are issued as GradientWarning subclasses after backward unless warn=False."""
    with pytest.warns(graphscope.VanishingGradientWarning, match="Vanishing gradient"):
        torch.manual_seed(0)
        model = mlp(20, 16, nn.Sigmoid)
        loss = model(torch.randn(4, 8)).sum()
        graphscope.capture(loss, model=model)
        loss.backward()


def test_bad_inputs_get_clear_errors():
    """Non-tensors, leaves, requires_grad=False, no_grad and inference_mode each explain the fix."""
    with pytest.raises(graphscope.CaptureTypeError, match="expects a tensor"):
        graphscope.capture(3.0)
    leaf = torch.randn(3, requires_grad=True)
    with pytest.raises(graphscope.CaptureError, match="leaf tensor"):
        graphscope.capture(leaf)
    with pytest.raises(graphscope.CaptureError, match="requires_grad=True"):
        graphscope.capture(torch.randn(3).sum())
    with torch.no_grad():
        built = (leaf * 2).sum()
        with pytest.raises(graphscope.CaptureError, match="grad mode is off"):
            graphscope.capture(built)
    with pytest.raises(graphscope.CaptureError, match="nothing it was computed from requires grad"):
        graphscope.capture(built)
    with torch.inference_mode():
        inf = (leaf * 2).sum()
    with pytest.raises(graphscope.CaptureError, match="inference_mode"):
        graphscope.capture(inf)
    with pytest.raises(graphscope.CaptureTypeError, match="nn.Module"):
        graphscope.capture((leaf * 2).sum(), model="not a model")
    assert issubclass(graphscope.CaptureError, ValueError)
    assert issubclass(graphscope.CaptureTypeError, TypeError)


def test_non_scalar_and_multiple_roots():
    """A non-scalar output is captured, and a tuple of outputs is one graph with several roots."""
    x = torch.randn(3, requires_grad=True)
    a, b = x * 2, x.exp()
    graph = graphscope.capture((a, b), warn=False)
    assert len(graph.roots) == 2 and all(graph.nodes[r].is_root for r in graph.roots)
    assert sum(1 for n in graph.nodes if n.kind == "leaf") == 1


def test_capture_leaves_gradients_bit_identical():
    """Gradients with a capture are bit-identical to gradients without one."""
    def run(with_capture):
        torch.manual_seed(1)
        model = mlp(4, 8, nn.Tanh)
        loss = model(torch.randn(6, 8)).pow(2).mean()
        if with_capture:
            graphscope.capture(loss, model=model, warn=False)
        loss.backward()
        return [p.grad.clone() for p in model.parameters()]

    for a, b in zip(run(False), run(True)):
        assert torch.equal(a, b)


def test_pruned_nodes_are_not_executed():
    """autograd.grad(inputs=...) leaves unneeded nodes with grad None, not zero."""
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    loss = (a.sin() + b.cos()).sum()
    graph = graphscope.capture(loss, warn=False)
    torch.autograd.grad(loss, [a])
    cos = next(n for n in graph.nodes if n.op == "CosBackward0")
    sin = next(n for n in graph.nodes if n.op == "SinBackward0")
    assert cos.grad is None and not cos.executed
    assert sin.executed and sin.grad is not None
    assert graphscope.active_hook_count() == 0


def test_hooks_removed_when_backward_raises():
    """A backward that raises leaves no graphscope hook once the capture's with-block exits."""

    class Boom(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("boom in backward")

    x = torch.randn(3, requires_grad=True)
    loss = Boom.apply(x * 2).sum()
    with pytest.raises(RuntimeError, match="boom in backward"):
        with graphscope.capture(loss, warn=False):
            loss.backward()
    assert graphscope.active_hook_count() == 0


def test_modules_inferred_from_parameters_without_a_recording():
    """capture(model=) alone puts ops between a block's parameters into that block's module."""
    torch.manual_seed(0)
    model = nn.Sequential(SelfAttention(), SelfAttention())
    loss = model(torch.randn(2, 4, 16)).sum()
    graph = graphscope.capture(loss, model=model, warn=False)
    softmax = sorted(n.module for n in graph.nodes if n.label == "softmax")
    assert softmax == ["0", "1"]
    addmm = {n.module for n in graph.nodes if n.label == "addmm"}
    assert {"0.q", "0.k", "0.v", "0.out", "1.q"} <= addmm
    assert graph.meta["module_attribution"] == "inferred from parameters"
    root = graph.nodes[graph.roots[0]]
    assert root.module is None  # the loss after the last block belongs to no block


def test_capture_after_backward_warns_that_nothing_will_be_recorded():
    """A capture of a graph whose backward already ran says so, and how to capture instead."""
    from graphscope.errors import RecordingWarning

    model = mlp(2, 4, nn.Tanh)
    loss = model(torch.randn(2, 8)).pow(2).mean()
    loss.backward()
    with pytest.warns(RecordingWarning, match=r"already ran.*capture\(loss\) before.*retain_graph=True"):
        g = graphscope.capture(loss, model=model)
    g.close()
    assert g.passes == 0 and g.meta["graph_freed"] is True


def test_capture_of_a_retained_graph_after_backward_does_not_warn(recwarn):
    """After backward(retain_graph=True) the graph is alive: capturing it is fine and silent."""
    model = mlp(2, 4, nn.Tanh)
    loss = model(torch.randn(2, 8)).pow(2).mean()
    loss.backward(retain_graph=True)
    with graphscope.capture(loss, model=model) as g:
        loss.backward()
    assert g.passes == 1
    assert not [w for w in recwarn if "already ran" in str(w.message)]
