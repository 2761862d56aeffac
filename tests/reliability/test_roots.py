"""Degenerate roots (issue 5.1, issue 2.6): every bad input gets a clear graphscope error that
names the cause; every odd-but-valid root (non-scalar, several outputs, a dict) is captured."""

from __future__ import annotations

import pytest
import torch

import graphscope

from .models import TinyMLP, mlp_batch, seeded
from .oracle import assert_norm, assert_same_structure, assert_stats


def _capture_error(outputs, **kw) -> str:
    with pytest.raises(graphscope.CaptureError) as info:
        graphscope.capture(outputs, **kw)
    assert isinstance(info.value, ValueError)
    assert graphscope.active_hook_count() == 0
    return str(info.value)


def test_leaf_loss_is_a_clear_error():
    """A leaf passed as the loss says it is a leaf and what to capture instead."""
    w = torch.randn(3, requires_grad=True)
    msg = _capture_error(w)
    assert "leaf" in msg and "(3,)" in msg


def test_nothing_requires_grad_is_a_clear_error():
    """A loss computed from tensors that do not require grad says so and names requires_grad."""
    loss = (torch.randn(3) * 2).sum()
    msg = _capture_error(loss)
    assert "requires_grad" in msg or "requires grad" in msg


def test_no_grad_and_inference_mode_get_distinct_messages():
    """Built under no_grad and under inference_mode: two different messages, each naming its mode."""
    w = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        a = (w * 2).sum()
    with torch.inference_mode():
        b = (w * 2).sum()
    msg_a, msg_b = _capture_error(a), _capture_error(b)
    assert "no_grad" in msg_a
    assert "inference_mode" in msg_b
    assert msg_a != msg_b


def test_capture_inside_no_grad_names_grad_mode():
    """A forward built while grad mode is off, captured there, says grad mode is off."""
    w = torch.randn(3, requires_grad=True)
    with torch.no_grad():
        msg = _capture_error((w * 2).sum())
    assert "no_grad" in msg and "grad mode" in msg


@pytest.mark.parametrize("bad", [3.0, "loss", None, object(), [1, 2], {"a": 1}, []])
def test_not_a_tensor_is_a_type_error(bad):
    """Anything that holds no tensor raises CaptureTypeError (a TypeError) naming what it got."""
    with pytest.raises(graphscope.CaptureTypeError) as info:
        graphscope.capture(bad)
    assert isinstance(info.value, TypeError)
    assert type(bad).__name__ in str(info.value)
    assert graphscope.active_hook_count() == 0


def test_model_that_is_not_a_module_is_a_type_error():
    """model= given something other than an nn.Module raises CaptureTypeError."""
    loss = (torch.randn(3, requires_grad=True) * 2).sum()
    with pytest.raises(graphscope.CaptureTypeError, match="nn.Module"):
        graphscope.capture(loss, model={"w": torch.zeros(1)})
    assert graphscope.active_hook_count() == 0


def test_one_bad_tensor_in_a_list_is_named():
    """In a list of outputs, the error names which entry has no graph."""
    ok = (torch.randn(2, requires_grad=True) * 2).sum()
    msg = _capture_error([ok, torch.randn(2)])
    assert "outputs[1]" in msg


def test_non_scalar_output_captured_and_recorded():
    """A non-scalar output is captured (structure = torch's) and its gradient recorded exactly."""
    model = seeded(TinyMLP)
    x, _ = mlp_batch()
    out = model(x)  # (5, 1)
    g = graphscope.capture(out, model=model, warn=False)
    assert_same_structure(g, [out])
    seed = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    out.backward(seed)
    assert graphscope.active_hook_count() == 0
    root = g.nodes[g.roots[0]]
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
    assert len(g.roots) == 2
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


def test_root_grad_equals_the_gradient_passed_to_backward():
    """The root's recorded gradient is the `gradient=` tensor given to backward."""
    x = torch.randn(4, requires_grad=True)
    out = x.exp()
    g = graphscope.capture(out, warn=False)
    seed = torch.tensor([1.0, -2.0, 0.0, 3.5])
    out.backward(seed)
    assert_stats(g.nodes[g.roots[0]].grad, seed)
    assert_norm(g.nodes[g.roots[0]].grad.norm, seed)
