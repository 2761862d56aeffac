"""Dtypes and layouts (issue 5.7): complex, float16 without overflow, bfloat16 autocast, GradScaler,
uncoalesced sparse gradients and nested tensors."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import graphscope
from graphscope.demos import DEMOS

from .models import TinyMLP, assert_grads_identical, assert_param_norms, mlp_batch, seeded, twins
from .oracle import assert_norm, assert_same_structure, assert_stats, node_by_op


def test_complex_gradients_summarised_by_magnitude():
    """A complex parameter's recorded norm equals p.grad.norm(); stats describe |grad|."""
    torch.manual_seed(0)
    w = torch.randn(6, dtype=torch.cfloat, requires_grad=True)
    x = torch.randn(6, dtype=torch.cfloat)
    loss = (x * w).abs().pow(2).sum() + (w * w).real.sum()
    g = graphscope.capture(loss, warn=False)
    assert_same_structure(g, [loss])
    loss.backward()
    leaf = node_by_op(g, "AccumulateGrad")
    assert leaf.dtype == "complex64"
    assert_norm(leaf.grad.norm, w.grad)
    assert_stats(leaf.grad, w.grad)
    assert graphscope.active_hook_count() == 0


def test_float16_stats_do_not_overflow():
    """float16 gradients whose squares overflow fp16 still get a finite, exact norm."""
    w = torch.ones(1000, dtype=torch.float16, requires_grad=True)
    loss = (w * 60000.0).float().sum()  # the fp16 product is finite, its fp32 sum too
    g = graphscope.capture(loss, warn=False)
    loss.backward()
    assert torch.isinf(w.grad.norm())  # what a naive fp16 reduction gives
    leaf = node_by_op(g, "AccumulateGrad")
    assert leaf.grad.finite and leaf.grad.inf_count == 0
    assert_norm(leaf.grad.norm, w.grad)
    assert_stats(leaf.grad, w.grad)
    assert not [f for f in g.findings if f.kind.startswith("nonfinite")]


def test_bfloat16_near_max_stats_do_not_overflow():
    """bfloat16 gradients near 1e38 (float32's range, whose squares and sums overflow float32)
    get a finite norm, mean and std equal to float64's."""
    w = torch.ones(1000, dtype=torch.bfloat16, requires_grad=True)
    scale = torch.linspace(0.5, 3.0, 1000)
    loss = (w.double() * scale * 1e38).sum()  # finite in float64; float32 sums would overflow
    g = graphscope.capture(loss, warn=False)
    loss.backward()
    assert torch.isinf(w.grad.float().norm())  # what a float32 reduction gives
    leaf = node_by_op(g, "AccumulateGrad")
    assert leaf.grad.finite and math.isfinite(leaf.grad.mean) and math.isfinite(leaf.grad.std)
    assert_norm(leaf.grad.norm, w.grad)
    assert_stats(leaf.grad, w.grad, rel=1e-6)
    assert not [f for f in g.findings if f.kind.startswith("nonfinite")]


@pytest.mark.parametrize("magnitude", [1e-30, 1e-40])
def test_float32_tiny_gradients_keep_nonzero_norm(magnitude):
    """float32 gradients of 1e-30 (squares underflow) or 1e-40 (subnormal) record a non-zero
    norm and rms equal to float64's, not 0."""
    w = torch.zeros(500, requires_grad=True)
    loss = (w * torch.linspace(-1.0, 2.0, 500) * magnitude).sum()
    g = graphscope.capture(loss, warn=False)
    loss.backward()
    leaf = node_by_op(g, "AccumulateGrad")
    want = w.grad.double()
    assert leaf.grad.norm > 0 and leaf.grad.rms > 0
    assert leaf.grad.norm == pytest.approx(float(want.norm()), rel=1e-6)
    assert leaf.grad.rms == pytest.approx(float(want.square().mean().sqrt()), rel=1e-6)
    assert leaf.grad.std == pytest.approx(float(want.std(correction=0)), rel=1e-6)


@pytest.mark.parametrize("magnitude", [1e200, 1e-200])
def test_float64_extreme_gradients_exact(magnitude):
    """float64 gradients near 1e200 or 1e-200, whose squares leave float64's range, record
    finite, non-zero stats equal to torch's (computed on the scaled-back gradient)."""
    w = torch.zeros(400, dtype=torch.float64, requires_grad=True)
    loss = (w * torch.linspace(-1.0, 2.0, 400, dtype=torch.float64) * magnitude).sum()
    g = graphscope.capture(loss, warn=False)
    loss.backward()
    s = node_by_op(g, "AccumulateGrad").grad
    unit = w.grad / magnitude  # torch's own float64 norm of w.grad is inf or 0
    assert s.finite and 0 < s.norm < math.inf
    assert s.norm == pytest.approx(float(unit.norm()) * magnitude, rel=1e-12)
    assert s.std == pytest.approx(float(unit.std(correction=0)) * magnitude, rel=1e-12)
    assert s.rms == pytest.approx(float(unit.square().mean().sqrt()) * magnitude, rel=1e-12)


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


def test_sparse_embedding_uncoalesced_gradient():
    """An uncoalesced sparse gradient (repeated indices) gets exact stats over the dense
    tensor, and the user's sparse gradient is left exactly as torch made it."""
    model, twin = twins(lambda: nn.Embedding(10, 3, sparse=True))
    idx = torch.tensor([1, 1, 2, 1, 7])
    weights = torch.linspace(-2, 2, 15).reshape(5, 3)
    loss = (model(idx) * weights).sum()
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    (twin(idx) * weights).sum().backward()
    assert model.weight.grad.is_sparse and not model.weight.grad.is_coalesced()
    assert_grads_identical(model, twin)
    node = g.find("weight")
    # torch's own norm of the sparse gradient sums the duplicates first (coalesces).
    assert_norm(node.grad.norm, model.weight.grad)
    assert_stats(node.grad, model.weight.grad)
    assert node.grad.zero_frac == pytest.approx(21 / 30)
    assert graphscope.active_hook_count() == 0


@pytest.mark.parametrize("layout", [torch.jagged, torch.strided], ids=["jagged", "strided"])
def test_nested_tensors_supported_or_clearly_marked(layout):
    """Nested-tensor gradients never crash a capture; each is summarised exactly, or its node
    says plainly that the layout is unsupported (never an unexplained NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: strided nested is a prototype
        nt = torch.nested.nested_tensor(
            [torch.linspace(0, 1, 6).reshape(2, 3), torch.linspace(1, 2, 12).reshape(4, 3)],
            layout=layout,
            requires_grad=True,
        )
    y = (nt * 2).sin()
    loss = y.values().sum() if layout == torch.jagged else torch.nested.to_padded_tensor(y, 0.0).sum()
    g = graphscope.capture(loss, warn=False)
    assert_same_structure(g, [loss])
    loss.backward()
    assert graphscope.active_hook_count() == 0
    assert not g.findings
    leaf = node_by_op(g, "AccumulateGrad")
    values = torch.cat([t.reshape(-1) for t in nt.grad.unbind()])
    for node in g.nodes:
        s = node.grad
        assert s is not None and node.executed, node.op
        exact = s.numel > 0 and s.norm == s.norm  # a real number
        marked = any("nested" in (m.value or "") or "unsupported" in (m.value or "") for m in node.outputs)
        assert exact or marked, f"{node.op}: {s} with outputs {node.outputs}"
    if leaf.grad.numel:
        assert_stats(leaf.grad, values)
