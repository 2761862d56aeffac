"""Values on small graphs: a capture keeps the actual numbers of tensors up to ``values=`` elements."""

from __future__ import annotations

import json

import pytest
import torch

import graphscope
from graphscope.export.dot import to_dot
from graphscope.model import Graph, Values, load
from graphscope.tui.widgets.details import describe


def _chain() -> tuple[torch.Tensor, ...]:
    w = torch.tensor(2.0, requires_grad=True)
    x = torch.tensor(-1.5, requires_grad=True)
    b = torch.tensor(0.5, requires_grad=True)
    y = w * x + b
    return w, x, b, y


def _leaf(graph: Graph, value: float):
    return next(n for n in graph.nodes if n.kind == "leaf" and n.value.data == (value,))


def test_chain_rule_values_and_gradients_equal_torch_autograd_grad():
    """On y = w * x + b, each leaf's data and recorded gradient are torch's numbers exactly."""
    w, x, b, y = _chain()
    expected = torch.autograd.grad(y, (w, x, b), retain_graph=True)
    graph = graphscope.capture(y, values=16)
    y.backward()
    for leaf, grad in zip((w, x, b), expected):
        node = _leaf(graph, leaf.item())
        assert node.grad_value == Values((), (grad.item(),))
    root = graph.nodes[graph.roots[0]]
    assert root.value == Values((), (y.item(),)) and root.grad_value == Values((), (1.0,))
    assert [t.grad.item() for t in (w, x, b)] == [g.item() for g in expected]


def test_vector_values_keep_shape_and_match_the_leaf_grad():
    """A (2, 3) leaf keeps its data and gradient as nested values equal to .grad."""
    torch.manual_seed(0)
    a = torch.randn(2, 3, requires_grad=True)
    loss = torch.sigmoid(a * 3).sum()
    graph = graphscope.capture(loss)
    loss.backward()
    leaf = next(n for n in graph.nodes if n.kind == "leaf")
    assert leaf.value.tolist() == a.detach().double().tolist()
    assert leaf.grad_value.tolist() == a.grad.double().tolist()
    sig = next(n for n in graph.nodes if n.label == "sigmoid")
    assert sig.value.tolist() == torch.sigmoid(a * 3).detach().double().tolist()


def test_a_recorded_forward_gives_the_value_of_ops_that_saved_nothing():
    """add and sum save nothing for backward, so a capture alone cannot show their forward
    value; under graphscope.record each op's small output is kept as it was made (also when an
    in-place op changes the tensor afterwards), equal to torch's forward values."""
    w = torch.tensor([2.0, -1.0], requires_grad=True)
    b = torch.tensor(0.5, requires_grad=True)
    x = torch.tensor([1.0, 3.0])
    plain = graphscope.capture((w * x).sum() + b, warn=False)
    assert next(n for n in plain.nodes if n.label == "sum").value is None
    with graphscope.record():
        s = (w * x).sum()
        y = s + b
        z = y * 1.0
        z.mul_(4.0)  # in place: z's node holds the value made by mul, before the mul_
        loss = (z - 1.0) ** 2
    graph = graphscope.capture(loss, warn=False)
    value = {n.label: n.value for n in graph.nodes if n.kind == "op" and n.label != "mul"}
    assert value["sum"] == Values((), (s.item(),)) and value["add"] == Values((), (y.item(),))
    assert value["pow"] == Values((), (loss.item(),))
    muls = sorted(n.value.data for n in graph.nodes if n.label == "mul")
    assert muls == sorted([(y.item(),), (4 * y.item(),), tuple((w * x).tolist())])


def test_big_tensors_keep_statistics_only():
    """Tensors over the limit get no values, so memory stays bounded; values=0 keeps none."""
    big = torch.randn(17, requires_grad=True)
    loss = (big * 2).sum()
    graph = graphscope.capture(loss, values=16)
    loss.backward()
    leaf = next(n for n in graph.nodes if n.kind == "leaf")
    assert leaf.value is None and leaf.grad_value is None and leaf.grad is not None
    small = torch.ones(3, requires_grad=True)
    loss = small.sum()
    graph = graphscope.capture(loss, values=0)
    loss.backward()
    assert all(n.value is None and n.grad_value is None for n in graph.nodes)


def test_capture_with_values_leaves_gradients_bit_identical():
    """Keeping values copies what it reads: .grad is bitwise what a plain backward gives."""
    def run(with_capture: bool) -> torch.Tensor:
        torch.manual_seed(1)
        p = torch.randn(4, requires_grad=True)
        loss = (torch.tanh(p) * p).sum()
        if with_capture:
            graphscope.capture(loss)
        loss.backward()
        return p.grad
    assert torch.equal(run(True), run(False))


def test_values_survive_save_and_load_and_old_files_still_load(tmp_path):
    """Values round-trip through the capture file; a file without them loads with None."""
    w, x, b, y = _chain()
    graph = graphscope.capture(y)
    y.backward()
    path = graph.save(tmp_path / "g.json")
    back = load(path)
    assert [(n.value, n.grad_value) for n in back.nodes] == [(n.value, n.grad_value) for n in graph.nodes]
    data = json.loads(path.read_text())
    for n in data["nodes"]:
        n.pop("value", None)
        n.pop("grad_value", None)
    old = Graph.from_dict(data)
    assert all(n.value is None and n.grad_value is None for n in old.nodes)


def test_values_show_in_picture_details_and_nx():
    """The picture says 'data 2.0 | grad -1.5', the details list both, graph.nx carries them."""
    w, x, b, y = _chain()
    graph = graphscope.capture(y)
    y.backward()
    assert "data 2.0 | grad -1.5" in to_dot(graph)
    node = _leaf(graph, 2.0)
    text = "".join(str(seg) for seg in describe(graph, node.id).renderables[1].columns[1]._cells)
    assert "2.0" in text and "-1.5" in text
    assert graph.nx.nodes[node.id]["value"] == 2.0 and graph.nx.nodes[node.id]["grad_value"] == -1.5


@pytest.mark.parametrize("value, text", [(2.0, "2.0"), (-3.0, "-3.0"), (0.123456, "0.1235"),
                                         (1e-8, "1e-08"), (float("nan"), "nan")])
def test_values_are_written_the_way_micrograd_prints_them(value, text):
    """Short, hand-checkable numbers: 2.0, -3.0, 0.1235, 1e-08, nan."""
    assert str(Values((), (value,))) == text
