"""Custom ``autograd.Function`` (issue 5.3): non-tensor and None outputs, None gradients (no
gradient, which is not zero), once_differentiable, multi-output nodes with parallel edges."""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import once_differentiable

import graphscope

from .models import assert_grads_identical, assert_param_norms, twins
from .oracle import assert_same_structure, assert_stats, node_by_op


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


def test_non_tensor_and_none_outputs():
    """A Function returning (tensor, int, None) is captured and recorded like any op."""
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
