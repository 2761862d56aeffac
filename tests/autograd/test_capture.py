"""capture(): input validation with teaching errors, odd-but-valid roots, parameter naming and
status (tied, reused, unused, frozen, opaque), multi-output and custom nodes, structure against
torch's graph, gradients against torch, and the user's state left as it was."""

from __future__ import annotations

import copy
import gc
import warnings
import weakref

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.autograd.function import once_differentiable

import graphscope
from graphscope.demos import LSTMRegressor, SelfAttention, mlp
from tests.models import (
    Checkpointed,
    Reused,
    TiedLM,
    TinyMLP,
    assert_grads_identical,
    assert_norm,
    assert_param_norms,
    assert_same_order,
    assert_same_structure,
    assert_stats,
    mlp_batch,
    node_by_op,
    seeded,
    structure,
    twins,
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
    assert_same_order(graph, [loss])
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


def test_warnings_are_issued_after_backward():
    """Findings are issued as GradientWarning subclasses after backward unless warn=False."""
    with pytest.warns(graphscope.VanishingGradientWarning, match="Vanishing gradient"):
        torch.manual_seed(0)
        model = mlp(20, 16, nn.Sigmoid)
        loss = model(torch.randn(4, 8)).sum()
        graphscope.capture(loss, model=model)
        loss.backward()


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


def test_capture_of_a_retained_graph_after_backward_does_not_warn(recwarn):
    """After backward(retain_graph=True) the graph is alive: capturing it is fine and silent."""
    model = mlp(2, 4, nn.Tanh)
    loss = model(torch.randn(2, 8)).pow(2).mean()
    loss.backward(retain_graph=True)
    with graphscope.capture(loss, model=model) as g:
        loss.backward()
    assert g.passes == 1
    assert not [w for w in recwarn if "already ran" in str(w.message)]


# -- what capture accepts, and what it refuses -------------------------------------------------


def _capture_error(outputs, **kw) -> str:
    with pytest.raises(graphscope.CaptureError) as info:
        graphscope.capture(outputs, **kw)
    assert isinstance(info.value, ValueError)
    assert graphscope.active_hook_count() == 0
    return str(info.value)


def test_leaf_loss_is_a_clear_error():
    """A leaf passed as the loss says it is a leaf tensor and what to capture instead."""
    w = torch.randn(3, requires_grad=True)
    msg = _capture_error(w)
    assert "leaf tensor" in msg and "(3)" in msg


def test_nothing_requires_grad_is_a_clear_error():
    """A loss computed from tensors that do not require grad says so and names requires_grad=True."""
    loss = (torch.randn(3) * 2).sum()
    assert "requires_grad=True" in _capture_error(loss)


def test_no_grad_and_inference_mode_get_distinct_messages():
    """Built under no_grad and under inference_mode: two different messages, each naming its
    mode; captured outside no_grad, the first says nothing it was computed from requires grad."""
    w = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        a = (w * 2).sum()
    with torch.inference_mode():
        b = (w * 2).sum()
    msg_a, msg_b = _capture_error(a), _capture_error(b)
    assert "no_grad" in msg_a and "nothing it was computed from requires grad" in msg_a
    assert "inference_mode" in msg_b
    assert msg_a != msg_b


def test_capture_inside_no_grad_names_grad_mode():
    """A forward built while grad mode is off, captured there, says grad mode is off."""
    w = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        msg = _capture_error((w * 2).sum())
    assert "no_grad" in msg and "grad mode is off" in msg


@pytest.mark.parametrize("bad", [3.0, "loss", None, object(), [1, 2], {"a": 1}, []])
def test_not_a_tensor_is_a_type_error(bad):
    """Anything that holds no tensor raises CaptureTypeError (a TypeError) naming what it got."""
    with pytest.raises(graphscope.CaptureTypeError) as info:
        graphscope.capture(bad)
    assert isinstance(info.value, TypeError)
    assert type(bad).__name__ in str(info.value)
    if not isinstance(bad, (list, dict)):
        assert "expects a tensor" in str(info.value)
    assert graphscope.active_hook_count() == 0


@pytest.mark.parametrize("bad", [{"w": torch.zeros(1)}, "not a model"])
def test_model_that_is_not_a_module_is_a_type_error(bad):
    """model= given something other than an nn.Module raises CaptureTypeError."""
    loss = (torch.randn(3, requires_grad=True) * 2).sum()
    with pytest.raises(graphscope.CaptureTypeError, match="nn.Module"):
        graphscope.capture(loss, model=bad)
    assert graphscope.active_hook_count() == 0


def test_one_bad_tensor_in_a_list_is_named():
    """In a list of outputs, the error names which entry has no graph."""
    ok = (torch.randn(2, requires_grad=True) * 2).sum()
    msg = _capture_error([ok, torch.randn(2)])
    assert "outputs[1]" in msg


def test_non_scalar_output_captured_and_its_root_grad_is_the_backward_gradient():
    """A non-scalar output is captured (structure = torch's); its root's recorded gradient is the
    `gradient=` tensor given to backward."""
    model = seeded(TinyMLP)
    x, _ = mlp_batch()
    out = model(x)  # (5, 1)
    g = graphscope.capture(out, model=model, warn=False)
    assert_same_structure(g, [out])
    seed = torch.tensor([1.0, -2.0, 0.0, 3.5, 0.25]).reshape(out.shape)
    out.backward(seed)
    assert graphscope.active_hook_count() == 0
    root = g.nodes[g.roots[0]]
    assert root.is_root
    assert_stats(root.grad, seed)
    assert g.meta["root_values"] == [None]


def test_list_of_outputs_is_one_graph_with_several_roots():
    """A tuple of outputs: one graph, one root per distinct grad_fn, shared nodes once."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    out = model(x)
    a = (out - y).pow(2).mean()
    b = out.abs().sum()
    g = graphscope.capture((a, b, a), model=model, warn=False)
    assert len(g.roots) == 2 and all(g.nodes[r].is_root for r in g.roots)
    assert {g.nodes[r].op for r in g.roots} == {a.grad_fn.__class__.__name__, "SumBackward0"}
    assert_same_structure(g, [a, b])
    torch.autograd.backward([a, b])
    assert g.passes == 1
    assert graphscope.active_hook_count() == 0
    for name, p in model.named_parameters():
        assert_norm(g.find(name).grad.norm, p.grad)


def test_dict_of_outputs_is_flattened():
    """A dict of outputs (e.g. a loss dict) is flattened into its tensor values."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    out = model(x)
    losses = {"mse": (out - y).pow(2).mean(), "l1": (out - y).abs().mean(), "step": 3}
    g = graphscope.capture(losses, model=model, warn=False)
    assert len(g.roots) == 2
    assert_same_structure(g, [losses["mse"], losses["l1"]])
    (losses["mse"] + losses["l1"]).backward()
    # The sum's own AddBackward node is not part of the capture; the two roots are.
    for r in g.roots:
        assert g.nodes[r].grad is not None and g.nodes[r].grad.norm == 1.0
    assert graphscope.active_hook_count() == 0


# -- parameters: names and status ----------------------------------------------------------------


def test_weight_tying_one_node_all_names_no_double_count():
    """A tied weight is one node listing every name, with several consumers; its recorded norm
    is the whole gradient once."""
    model, twin = twins(TiedLM)
    idx = torch.tensor([[1, 2, 3], [3, 3, 9]])
    target = torch.tensor([[2, 3, 4], [4, 9, 0]])

    def loss_of(m):
        return nn.functional.cross_entropy(m(idx).flatten(0, 1), target.flatten())

    loss = loss_of(model)
    g = graphscope.capture(loss, model=model, warn=False)
    assert_same_structure(g, [loss])
    tied = g.find("out.weight")
    assert tied is g.find("embed.weight")
    assert tied.names == ("embed.weight", "out.weight")
    assert len([n for n in g.nodes if "embed.weight" in n.names]) == 1
    assert len(g.param_nodes) == len(list(model.parameters()))
    assert len(g.consumers(tied.id)) >= 2
    infos = [i for i in g.params if i.node == tied.id]
    assert sorted(i.name for i in infos) == ["embed.weight", "out.weight"]
    loss.backward()
    loss_of(twin).backward()
    assert_grads_identical(model, twin)
    assert_norm(tied.grad.norm, model.embed.weight.grad)
    assert graphscope.active_hook_count() == 0


def test_module_reuse_one_param_node_two_consumers():
    """A Linear applied twice: one node per parameter, two consumers, norm equals p.grad."""
    model, twin = twins(Reused)
    x, y = mlp_batch()
    loss = nn.functional.mse_loss(model(x), y)
    g = graphscope.capture(loss, model=model, warn=False)
    assert_same_structure(g, [loss])
    assert len(g.param_nodes) == 4
    assert len(g.consumers(g.find("block.weight").id)) == 2
    assert len(g.consumers(g.find("block.bias").id)) == 2
    loss.backward()
    nn.functional.mse_loss(twin(x), y).backward()
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 4
    assert graphscope.active_hook_count() == 0


@pytest.mark.parametrize("how", ["module", "method", "closure"])
def test_reentrant_checkpoint_is_opaque_and_its_params_not_unused(how):
    """A reentrant checkpoint is one opaque node; its parameters are 'opaque', never unreachable,
    and no UnusedParameterWarning is issued."""
    model, twin = twins(lambda: Checkpointed(reentrant=True, how=how))
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


# -- multi-output nodes and custom autograd.Functions --------------------------------------------


def test_unbind_and_split_per_output_gradients():
    """unbind/split are multi-output nodes: each output's gradient is recorded, an unused output
    has none (not zeros), and the edges name the output they carry."""
    w = torch.randn(3, 4, requires_grad=True)
    a, b, c = w.unbind(0)
    p, q = w.split(2, dim=1)
    loss = (a * 1.5).sum() + (b**2).sum() + (p.sin()).sum()
    g = graphscope.capture(loss, warn=False)
    assert_same_structure(g, [loss])
    ga, gb, gp = torch.autograd.grad(loss, [a, b, p], retain_graph=True)
    loss.backward()
    unbind = node_by_op(g, "UnbindBackward0")
    assert len(unbind.outputs) == 3 and [m.shape for m in unbind.outputs] == [(4,)] * 3
    assert {e.output_nr for e in g.out_edges(unbind.id)} == {0, 1}
    assert_stats(unbind.grads[0], ga)
    assert_stats(unbind.grads[1], gb)
    assert unbind.grads[2] is None
    split = node_by_op(g, "SplitBackward0")
    assert_stats(split.grads[0], gp)
    assert split.grads[1] is None
    assert_stats(node_by_op(g, "AccumulateGrad").grad, w.grad)
    assert graphscope.active_hook_count() == 0


def test_lstm_multi_output_node():
    """The LSTM layer node has several outputs; each one's gradient equals autograd.grad, the
    node's own gradient combines them, and every parameter norm equals p.grad.norm()."""
    model, twin = twins(lambda: nn.LSTM(3, 5))
    x = torch.randn(4, 2, 3)
    out, (h, c) = model(x)
    loss = out.pow(2).mean() + h.sum() + c.abs().sum()
    g = graphscope.capture(loss, model=model, warn=False)
    assert_same_structure(g, [loss])
    (rnn,) = [n for n in g.nodes if len(n.outputs) > 1]
    assert rnn.op == out.grad_fn.name()
    g_out, g_h, g_c = torch.autograd.grad(loss, [out, h, c], retain_graph=True)
    loss.backward()
    o2, (h2, c2) = twin(x)
    (o2.pow(2).mean() + h2.sum() + c2.abs().sum()).backward()
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 4
    assert len(rnn.grads) == len(rnn.outputs)
    assert_stats(rnn.grads[0], g_out)
    assert_stats(rnn.grads[1], g_h[0])
    assert_stats(rnn.grads[2], g_c[0])
    present = [s for s in rnn.grads if s is not None]
    assert rnn.grad.norm == pytest.approx(sum(s.norm**2 for s in present) ** 0.5)
    assert graphscope.active_hook_count() == 0


class WithExtras(torch.autograd.Function):
    """Returns a tensor, an int and None."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * 2, 7, None

    @staticmethod
    def backward(ctx, g, _int, _none):
        return g * 2


class Gate(torch.autograd.Function):
    """x * w whose backward sends no gradient (None) to w."""

    @staticmethod
    def forward(ctx, x, w):
        ctx.save_for_backward(w)
        return x * w

    @staticmethod
    def backward(ctx, g):
        (w,) = ctx.saved_tensors
        return g * w, ctx._forward_cls.grad_for_w(w)

    @staticmethod
    def grad_for_w(w):
        return None


class ZeroGate(Gate):
    """Gate whose backward sends an all-zero gradient to w instead."""

    @staticmethod
    def grad_for_w(w):
        return torch.zeros_like(w)


class OnceCube(torch.autograd.Function):
    """x ** 3 with a once_differentiable backward."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**3

    @staticmethod
    @once_differentiable
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x * x * g


class Three(torch.autograd.Function):
    """Three outputs from one input: 2x, 3x, 4x."""

    @staticmethod
    def forward(ctx, x):
        return x * 2, x * 3, x * 4

    @staticmethod
    def backward(ctx, a, b, c):
        out = torch.zeros_like(a)
        for k, g in ((2, a), (3, b), (4, c)):
            if g is not None:
                out = out + k * g
        return out


class GatedNet(nn.Module):
    def __init__(self, fn: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.w = nn.Parameter(torch.randn(4))
        self.fn = fn

    def forward(self, x):
        return self.fn.apply(torch.tanh(self.fc(x)), self.w).pow(2).mean()


def test_custom_function_with_non_tensor_and_none_outputs():
    """A Function returning (tensor, int, None) is one node labelled by its class, with its saved
    tensor, captured and recorded like any op."""
    x = torch.linspace(-1, 1, 6).requires_grad_()
    out, k, none = WithExtras.apply(x)
    assert k == 7 and none is None
    loss = (out * out).sum()
    g = graphscope.capture(loss, warn=False)
    assert_same_structure(g, [loss])
    node = node_by_op(g, "WithExtrasBackward")
    assert node.label == "WithExtras"
    assert [m.shape for m in node.saved] == [(6,)]
    (expected,) = torch.autograd.grad((out * out).sum(), out, retain_graph=True)
    loss.backward()
    assert_stats(node.grads[0], expected)
    assert_stats(node.grad, expected)
    assert torch.equal(x.grad, expected * 2)
    assert graphscope.active_hook_count() == 0


def test_none_gradient_is_no_gradient_not_zero():
    """A backward that returns None for w: w has no gradient (None), is not dead or vanishing;
    returning zeros instead is recorded as an all-zero gradient."""
    x = torch.randn(3, 4)
    model, twin = twins(lambda: GatedNet(Gate))
    loss = model(x)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    twin(x).backward()
    assert_grads_identical(model, twin)
    assert model.w.grad is None
    w = g.find("w")
    assert w.grad is None
    assert all(s is None for s in w.grads)
    (edge,) = [e for e in g.edges if e.src == w.id]
    assert edge.grad is None
    assert not [f for f in g.findings if f.node == w.id or f.param == "w"]
    assert_param_norms(g, model)

    zero_model = twins(lambda: GatedNet(ZeroGate))[0]
    zloss = zero_model(x)
    zg = graphscope.capture(zloss, model=zero_model, warn=False)
    zloss.backward()
    zw = zg.find("w")
    assert zw.grad is not None and zw.grad.zero_frac == 1.0 and zw.grad.norm == 0.0
    assert [f.kind for f in zg.findings if f.param == "w"] == ["dead"]
    assert graphscope.active_hook_count() == 0


def test_once_differentiable():
    """A once_differentiable backward records torch's gradients and changes none."""
    x = torch.linspace(-2, 2, 5).requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    y = OnceCube.apply(x)
    loss = (y * torch.arange(5.0)).sum()
    g = graphscope.capture(loss, warn=False)
    assert_same_structure(g, [loss])
    loss.backward()
    (OnceCube.apply(x2) * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, x2.grad)
    assert_stats(node_by_op(g, "OnceCubeBackward").grad, torch.arange(5.0))
    assert_stats(node_by_op(g, "AccumulateGrad").grad, x.grad)
    assert graphscope.active_hook_count() == 0


def test_multi_output_parallel_edges_and_per_output_grads():
    """Two outputs of one Function feed one mul: two parallel edges (output_nr 0 and 1); the
    unused third output has no gradient; per-output stats equal autograd.grad."""
    x = torch.linspace(-1, 1, 4).requires_grad_()
    a, b, c = Three.apply(x)
    loss = (a * b).sum()
    g = graphscope.capture(loss, warn=False)
    assert_same_structure(g, [loss])
    three = node_by_op(g, "ThreeBackward")
    mul = node_by_op(g, "MulBackward0")
    parallel = [e for e in g.edges if e.src == three.id and e.dst == mul.id]
    assert sorted((e.output_nr, e.input_nr) for e in parallel) == [(0, 0), (1, 1)]
    assert g.nx.number_of_edges(three.id, mul.id) == 2
    ga, gb = torch.autograd.grad(loss, [a, b], retain_graph=True)
    loss.backward()
    assert len(three.grads) == 3
    assert_stats(three.grads[0], ga)
    assert_stats(three.grads[1], gb)
    assert three.grads[2] is None  # unused output: no gradient, not zeros
    assert_stats(three.grad, torch.cat([ga, gb]))
    assert_stats(mul.grad, torch.ones(4))
    assert torch.equal(x.grad, 2 * ga + 3 * gb)
    assert graphscope.active_hook_count() == 0


# -- in-place ops, views and autocast ------------------------------------------------------------


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


def test_bfloat16_autocast_with_cast_nodes():
    """Under CPU bfloat16 autocast the cast nodes are captured and fp32 parameter gradients are
    recorded exactly and left bit-identical."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    loss = nn.functional.mse_loss(out.float(), y)
    g = graphscope.capture(loss, model=model, warn=False)
    assert "ToCopyBackward0" in {n.op for n in g.nodes}
    assert "bfloat16" in {n.dtype for n in g.nodes}
    assert_same_structure(g, [loss])
    loss.backward()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out2 = twin(x)
    nn.functional.mse_loss(out2.float(), y).backward()
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 6
    assert graphscope.active_hook_count() == 0


# -- the user's state ----------------------------------------------------------------------------


class Noisy(nn.Module):
    """Dropout and batch norm: a model whose forward uses the RNG and whose mode matters."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.bn(self.drop(torch.relu(self.fc(x)))))


def test_outputs_rng_mode_and_metadata_unchanged():
    """Capture and backward leave the loss value, the RNG state, every module's train/eval mode
    and the user's grad_fn metadata exactly as they were."""
    model = twins(Noisy)[0]
    model.train()
    model.bn.eval()  # a mixed-mode model, as in fine-tuning
    modes = [m.training for m in model.modules()]
    x, y = mlp_batch()
    loss = nn.functional.mse_loss(model(x), y)
    value, fn = loss.detach().clone(), loss.grad_fn
    loss.grad_fn.metadata["user"] = "mine"
    rng = torch.get_rng_state()
    g = graphscope.capture(loss, model=model, warn=False)
    assert torch.equal(torch.get_rng_state(), rng)
    loss.backward()
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(loss.detach(), value) and loss.grad_fn is fn
    assert loss.grad_fn.metadata["user"] == "mine"
    assert g.passes == 1
    assert graphscope.graph_of(loss) is g


def test_graph_of_does_not_keep_the_graph_alive():
    """The link from a live tensor to its capture is weak: dropping the Graph frees it."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    loss = nn.functional.mse_loss(model(x), y)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward(retain_graph=True)
    g.close()
    assert graphscope.graph_of(loss) is g
    graph_ref = weakref.ref(g)
    del g
    gc.collect()
    assert graph_ref() is None
    assert graphscope.graph_of(loss) is None


# -- random models (issue 5.13) -------------------------------------------------------------------

LAYERS = 4
_src = st.integers(0, 63)  # an index into the pool of tensors made so far (taken modulo its size)
OPS = st.one_of(
    st.tuples(st.just("linear"), st.integers(0, LAYERS - 1), _src),
    st.tuples(st.just("act"), st.sampled_from(["relu", "tanh", "sigmoid"]), _src),
    st.tuples(st.just("add"), _src, _src),
    st.tuples(st.just("mul"), _src, _src),  # mul(i, i) is x * x: two parallel edges
    st.tuples(st.just("unbind"), _src, st.permutations(range(4))),
    st.tuples(st.just("cat"), _src, _src, st.integers(0, 1)),
    st.tuples(st.just("detach"), _src),
)
PROGRAMS = st.lists(OPS, min_size=1, max_size=8)


class Program(nn.Module):
    """Runs a list of ops over a growing pool of (3, 4) tensors; some layers may be frozen."""

    def __init__(self, frozen: list[bool]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(LAYERS))
        for layer, f in zip(self.layers, frozen):
            layer.requires_grad_(not f)

    def forward(self, x: torch.Tensor, ops: list[tuple]) -> torch.Tensor:
        pool = [x, self.layers[0](x)]

        def at(i: int) -> torch.Tensor:
            return pool[i % len(pool)]

        for op in ops:
            kind = op[0]
            if kind == "linear":
                out = self.layers[op[1]](at(op[2]))
            elif kind == "act":
                out = getattr(torch, op[1])(at(op[2]))
            elif kind == "add":
                out = at(op[1]) + at(op[2])
            elif kind == "mul":
                out = at(op[1]) * at(op[2])
            elif kind == "unbind":  # a multi-output node, one output used twice, one dropped
                parts = at(op[1]).unbind(1)
                p = op[2]
                out = torch.stack([parts[p[0]], parts[p[1]], parts[p[2]], parts[p[0]]], 1)
            elif kind == "cat":  # cat then split: a multi-output split node
                out = torch.cat([at(op[1]), at(op[2])], 1).split(4, 1)[op[3]]
            else:
                out = at(op[1]).detach()
            pool.append(out)
        return pool[-1].pow(2).mean() + pool[-2].tanh().sum()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=PROGRAMS, frozen=st.lists(st.booleans(), min_size=LAYERS, max_size=LAYERS), seed=st.integers(0, 2**16))
def test_random_models(ops, frozen, seed):
    """On a random model: outputs and gradients bit-identical with and without a capture; node
    and edge multisets equal the independent walk; each parameter exactly one of reached /
    unreachable / frozen / opaque, consistent with torch; recorded norms equal p.grad.norm()."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Program(frozen)
        x = torch.randn(3, 4)
    twin = copy.deepcopy(model)
    loss = model(x, ops)
    assume(loss.grad_fn is not None)
    plain = twin(x, ops)
    assert torch.equal(loss, plain)

    g = graphscope.capture(loss, model=model, warn=False)
    oracle = assert_same_structure(g, [loss])
    loss.backward()
    plain.backward()
    assert graphscope.active_hook_count() == 0
    assert torch.equal(loss, plain)
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.equal(p.grad, q.grad), name

    names = [name for name, _ in model.named_parameters()]
    assert sorted(i.name for i in g.params) == sorted(names)
    for info in g.params:
        p = model.get_parameter(info.name)
        assert info.status in ("reached", "unreachable", "frozen", "opaque")
        if id(p) in oracle.leaf_ids:
            assert info.status == "reached", info
            node = g.nodes[info.node]
            assert info.name in node.names and node.kind == "param"
            if p.grad is None:
                assert node.grad is None, info
            else:
                assert node.grad is not None, info
                assert_norm(node.grad.norm, p.grad)
        elif not p.requires_grad:
            assert info.status == "frozen", info
        else:
            assert info.status == "unreachable", info
            assert p.grad is None
    assert {f.param for f in g.findings if f.kind == "unreachable_param"} == {
        i.name for i in g.params if i.status == "unreachable"
    }


def test_oracle_sees_what_torch_sees():
    """Self-check of the oracle: x * x gives one leaf, one mul and two edges."""
    x = torch.randn(2, requires_grad=True)
    s = structure([(x * x).sum()])
    assert s.ops == {"SumBackward0": 1, "MulBackward0": 1, "AccumulateGrad": 1}
    assert len(s.edges) == 3


def test_compiled_model_parameters_are_named_as_written():
    """capture(loss, model=torch.compile(m)): names are m's own, without the wrapper's _orig_mod."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    compiled = torch.compile(m, backend="eager")
    loss = compiled(torch.randn(2, 3)).sum()
    with graphscope.capture(loss, model=compiled, warn=False) as g:
        loss.backward()
    assert [p.name for p in g.params] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(p.status == "reached" for p in g.params)
