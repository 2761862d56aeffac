"""Drawing real captures: render() on tensors, and torch graphs drawn faithfully."""

from __future__ import annotations

import torch

import graphscope
from graphscope.drawing import render
from tests.export.dotfile import parse


def _mlp_loss() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Sigmoid(), torch.nn.Linear(4, 1))
    return model, model(torch.randn(5, 3)).pow(2).mean()


def test_render_of_a_tensor_draws_its_latest_capture() -> None:
    """render(loss) after capture and backward draws that capture, gradients and all."""
    model, loss = _mlp_loss()
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    assert render(loss).dot == render(graph).dot
    fills = {a["fillcolor"] for a in parse(render(loss).dot).drawn.values()}
    assert fills != {"#ffffff"}


def test_render_of_an_uncaptured_tensor_draws_structure() -> None:
    """A tensor never captured is drawn from its structure alone: every box plain white."""
    _, loss = _mlp_loss()
    dot = parse(render(loss).dot)
    assert len(dot.drawn) == len(graphscope.capture(loss, warn=False))
    assert {a["fillcolor"] for a in dot.drawn.values()} == {"#ffffff"}
    assert not any("dashed" in a["style"] for a in dot.drawn.values())


def test_square_of_a_parameter_draws_two_edges() -> None:
    """w * w in torch gives two edges from w into mul, told apart by input position."""
    w = torch.nn.Parameter(torch.randn(3))
    loss = (w * w).sum()
    graph = graphscope.capture(loss, warn=False)
    loss.backward()
    mul = next(n for n in graph.nodes if n.op == "MulBackward0")
    leaf = next(n for n in graph.nodes if n.op == "AccumulateGrad")
    labels = sorted(a["label"] for a in parse(render(graph).dot).between(f"n{leaf.id}", f"n{mul.id}"))
    assert labels == ["(3)  in 0", "(3)  in 1"]


def test_parameters_are_drawn_with_their_qualified_names() -> None:
    """With model=, each parameter's box is labelled with its name from named_parameters()."""
    model, loss = _mlp_loss()
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    labels = {a["label"].splitlines()[0] for a in parse(render(graph).dot).drawn.values()}
    assert {name for name, _ in model.named_parameters()} <= labels
