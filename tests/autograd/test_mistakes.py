"""Learner mistakes are explained where they happen, in a teacher's words."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import graphscope
from graphscope.errors import CaptureError, ModeWarning, explain
from graphscope.export.dot import to_dot


def _notes(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", ()))


def test_non_scalar_backward_explains_gradient_argument():
    """backward() on a vector inside `with capture(...)` gets a note on reducing or gradient=."""
    x = torch.ones(3, requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError) as info:
        with graphscope.capture(y):
            y.backward()
    notes = _notes(info.value)
    assert "gradient=" in notes and "vector-Jacobian" in notes and "out.sum().backward()" in notes


def test_second_backward_explains_retain_graph():
    """A second backward through a freed graph is told why, and about retain_graph=True."""
    w = torch.tensor(2.0, requires_grad=True)
    loss = torch.sigmoid(w) * 3
    with pytest.raises(RuntimeError) as info:
        with graphscope.capture(loss):
            loss.backward()
            loss.backward()
    assert "freed the values" in _notes(info.value) and "retain_graph=True" in _notes(info.value)


def test_capture_under_no_grad_says_grad_mode_is_off_and_train_mode_is_on():
    """Capturing an evaluation under no_grad says why there is no graph, and that a model with
    dropout still in train mode is being evaluated in train mode."""
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))
    with torch.no_grad():
        out = model(torch.ones(1, 2)).sum()
        with pytest.raises(CaptureError, match="grad mode is off") as info:
            graphscope.capture(out, model=model)
    assert "still in train mode" in str(info.value) and "model.eval()" in str(info.value)


def test_capture_of_a_constant_says_to_set_requires_grad():
    """A tensor computed from tensors without requires_grad: how to make autograd record it."""
    x = torch.tensor([2.0])
    with pytest.raises(CaptureError, match="requires_grad=True") as info:
        graphscope.capture(x * 3)
    assert "autograd records operations only on tensors that require grad" in str(info.value)


def test_backward_of_a_constant_is_explained():
    """torch's 'does not require grad' error maps to the requires_grad lesson."""
    with pytest.raises(RuntimeError) as info:
        (torch.tensor([2.0]) * 3).sum().backward()
    assert "requires_grad=True" in explain(info.value)


def test_grad_of_a_non_leaf_points_to_retain_grad_and_the_capture():
    """Reading y.grad of a non-leaf: the warning's lesson names retain_grad() and node.grad."""
    x = torch.tensor(1.0, requires_grad=True)
    y = x * 2
    graph = graphscope.capture(y)
    y.backward()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert y.grad is None
    lesson = explain(caught[0].message)
    assert "retain_grad()" in lesson and "node.grad" in lesson
    assert graph.nodes[graph.roots[0]].grad_value.tolist() == 1.0  # the capture has it


def test_in_place_op_on_a_leaf_is_explained():
    """w.add_(1) on a leaf that requires grad: why autograd refuses and how to update weights."""
    w = torch.tensor(1.0, requires_grad=True)
    with pytest.raises(RuntimeError) as info:
        w.add_(1)
    assert "torch.no_grad()" in explain(info.value) and "optimizer.step()" in explain(info.value)


def test_training_a_model_in_eval_mode_warns_and_the_picture_says_so():
    """A capture of a model with dropout/batch norm left in eval mode records each module's mode
    and warns that training sees a different network."""
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.2), nn.Linear(4, 1))
    model.eval()
    loss = model(torch.randn(5, 3)).pow(2).mean()
    with pytest.warns(ModeWarning, match=r"model.train\(\)"):
        graph = graphscope.capture(loss, model=model)
    assert graph.meta["modes"] == {"1": "eval", "2": "eval"} and graph.meta["training"] is False
    assert "eval mode while you train" in to_dot(graph)
    loss.backward()
    (f,) = [f for f in graph.findings if f.kind == "eval_mode"]  # in the findings panel too
    assert f.severity == graphscope.Severity.INFO and "model.train()" in f.message
    assert "1, 2 in eval" in f.message
    model[1].eval()  # a batch norm frozen on purpose: said, more gently
    model[2].train()
    loss = model(torch.randn(5, 3)).pow(2).mean()
    graph = graphscope.capture(loss, model=model, warn=False)
    (f,) = [f for f in graph.findings if f.kind == "eval_mode"]
    assert f.message.startswith("1 in eval mode while the rest trains")
    model.train()
    loss = model(torch.randn(5, 3)).pow(2).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ModeWarning)
        graph = graphscope.capture(loss, model=model)
    assert "mode_note" not in graph.meta
    assert not [f for f in graph.findings if f.kind == "eval_mode"]


def test_forgotten_zero_grad_is_a_finding_that_names_zero_grad():
    """Two backwards without zero_grad: the accumulated-gradient finding says to call it."""
    model = nn.Linear(2, 1)
    for _ in range(2):
        loss = model(torch.ones(3, 2)).sum()
        graph = graphscope.capture(loss, model=model, warn=False)
        loss.backward()
    assert any("zero_grad()" in f.hint for f in graph.findings if f.kind == "accumulated_grad")
