"""Your names for your tensors: leaves and the loss named from the calling code, never wrongly."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphscope
from graphscope.errors import CaptureTypeError
from graphscope.export.dot import to_dot

SCRIPT = """
import torch, graphscope
x = torch.tensor(3.0, requires_grad=True)
w = torch.tensor(2.0, requires_grad=True)
b = torch.tensor(1.0, requires_grad=True)
y = w * x + b
loss = (y - 10.0) ** 2
graph = graphscope.capture(loss)
"""


def _names(graph) -> dict[str, str]:
    return {n.var_name: n.label for n in graph.nodes if n.var_name}


def test_a_scripts_leaves_and_loss_get_its_variable_names():
    """At module level, x, w, b name the leaves, y its add and loss the root."""
    scope: dict = {}
    exec(compile(SCRIPT, "<script>", "exec"), scope)
    graph = scope["graph"]
    assert _names(graph) == {"x": "x", "w": "w", "b": "b", "y": "add", "loss": "pow"}
    assert graph.nodes[graph.roots[0]].var_name == "loss"
    assert "loss = pow" in to_dot(graph)


def test_names_are_found_inside_a_function():
    """Inside a function the locals name the tensors (a leaf's label becomes its name)."""
    inputs = torch.ones(3, requires_grad=True)
    total = (inputs * 2).sum()
    graph = graphscope.capture(total)
    leaf = next(n for n in graph.nodes if n.kind == "leaf")
    assert (leaf.label, leaf.var_name) == ("inputs", "inputs")
    assert graph.nodes[graph.roots[0]].var_name == "total"


def test_a_tensor_held_by_two_names_is_left_unnamed():
    """Ambiguous means unnamed: b and alias hold one tensor, so neither name is used."""
    w = torch.tensor(2.0, requires_grad=True)
    b = torch.tensor(1.0, requires_grad=True)
    alias = b  # noqa: F841
    out = w + b
    graph = graphscope.capture(out)
    labels = sorted(n.label for n in graph.nodes if n.kind == "leaf")
    assert labels == ["leaf", "w"]


def test_a_rebound_name_names_only_the_tensor_it_now_holds():
    """x = x * 2 leaves the original leaf unnamed; the name goes to the mul it now holds."""
    x = torch.tensor(1.0, requires_grad=True)
    x = x * 2
    graph = graphscope.capture(x + 1)
    leaf = next(n for n in graph.nodes if n.kind == "leaf")
    assert leaf.var_name == "" and leaf.label == "leaf"
    assert next(n for n in graph.nodes if n.label == "mul").var_name == "x"


def test_explicit_names_win_and_parameters_keep_their_model_names():
    """names= names a leaf the frame cannot see; model= parameters keep 'weight', 'bias'."""
    model = nn.Linear(2, 1)
    hidden = [torch.randn(4, 2, requires_grad=True)]  # in a list: not a plain variable
    loss = model(hidden[0]).sum()
    graph = graphscope.capture(loss, model=model, names={"x": hidden[0]})
    assert sorted(n.title for n in graph.nodes if n.kind != "op") == ["bias", "weight", "x"]
    with pytest.raises(CaptureTypeError, match="names= maps your names"):
        graphscope.capture(loss, names=["x"])  # type: ignore[arg-type]
