"""The model: save/load round trip, networkx view, clear errors for bad files."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

import graphscope
from graphscope.demos import DEMOS
from graphscope.fileformat import FORMAT_VERSION
from graphscope.model import Edge, Graph, GradStats, Node, load


class _SplitHeads(nn.Module):
    """fc's output chunked in two (one op with two outputs), an unused layer and a frozen one."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.head = nn.Linear(3, 1)
        self.unused = nn.Linear(2, 2)
        self.frozen = nn.Linear(1, 1).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.fc(x).chunk(2, dim=1)
        return self.frozen(self.head(torch.tanh(a) * b)).pow(2).mean()


def _split_heads_capture() -> Graph:
    torch.manual_seed(0)
    model = _SplitHeads()
    with graphscope.record(model):  # modules and source lines, as recorded during forward
        loss = model(torch.randn(5, 4))
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    return graph


def test_round_trip_keeps_everything(tmp_path):
    """save/load gives back equal nodes, edges, findings, params and meta, not just equal JSON."""
    graph = _split_heads_capture()
    # Every kind of field the file must carry is present (not at its default) in this capture.
    assert any(e.output_nr == 1 for e in graph.edges)
    assert any(len(n.grads) == 2 for n in graph.nodes)
    assert all(n.source is not None for n in graph.nodes if n.kind == "op")
    assert {n.module for n in graph.nodes} >= {"fc", "head"}
    assert all(n.exec_order is not None for n in graph.nodes)
    assert graph.findings and all(f.hint for f in graph.findings)
    assert {p.status for p in graph.params} == {"reached", "unreachable", "frozen"}
    back = load(graph.save(tmp_path / "g.json"))
    assert back.nodes == graph.nodes
    assert back.edges == graph.edges
    assert back.findings == graph.findings
    assert back.params == graph.params
    assert back.meta == graph.meta
    assert (back.roots, back.passes) == (graph.roots, graph.passes)


def test_round_trip_nan_and_inf(tmp_path):
    """NaN and Inf statistics survive JSON (which has no NaN literal)."""
    graph = DEMOS["nan_hunt"].build()
    text = graph.save(tmp_path / "n.json").read_text()
    def refuse(name):
        raise AssertionError(f"non-standard JSON constant {name}")

    json.loads(text, parse_constant=refuse)  # strict JSON: no NaN/Infinity literals
    back = load(tmp_path / "n.json")
    nan_nodes = [n for n in back.nodes if n.grad is not None and not n.grad.finite]
    assert nan_nodes and math.isnan(nan_nodes[0].grad.norm)


def test_load_needs_no_torch_objects(tmp_path):
    """A loaded graph is the plain model (no hooks to close), findings intact."""
    graph = DEMOS["sigmoid_mlp"].build()
    back = load(graph.save(tmp_path / "s.json"))
    assert type(back) is Graph and not hasattr(back, "close")
    assert back.findings and back.findings[0].kind == "vanishing"


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "not valid JSON"),
        ('{"format": "graphscope.capture", "version": 1, "nodes": [', "truncated"),
        ('{"nodes": []}', "not a graphscope capture"),
        ("[1, 2, 3]", "not a graphscope capture"),
        (json.dumps({"format": "graphscope.capture", "version": 99}), "newer"),
        (
            json.dumps({"format": "graphscope.capture", "version": 1, "nodes": [{"id": 0}],
                        "edges": []}),
            "corrupt",
        ),
        (
            json.dumps({"format": "graphscope.capture", "version": 1,
                        "nodes": [{"id": 0, "op": "X"}], "edges": [{"src": 0, "dst": 5}]}),
            "missing node",
        ),
        (
            json.dumps({"format": "graphscope.capture", "version": 1, "roots": [7], "edges": [],
                        "nodes": [{"id": 0, "op": "X"}, {"id": 1, "op": "Y"}, {"id": 2, "op": "Z"}]}),
            "a root names a missing node",
        ),
        (
            json.dumps({"format": "graphscope.capture", "version": 1, "roots": [0], "edges": [],
                        "nodes": [{"id": 1, "op": "X"}, {"id": 0, "op": "Y"}]}),
            "node ids are not 0..N-1 in order",
        ),
    ],
)
def test_bad_files_get_load_error(tmp_path, content, match):
    """Corrupt, truncated, foreign and newer files raise LoadError naming the problem."""
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(graphscope.LoadError, match=match):
        load(path)


def test_missing_file_and_binary_file(tmp_path):
    """A missing file and a binary file raise LoadError, not OSError or UnicodeDecodeError."""
    with pytest.raises(graphscope.LoadError, match="no such capture file"):
        load(tmp_path / "nope.json")
    path = tmp_path / "blob.json"
    path.write_bytes(b"\x89PNG\x00\xff\xfe")
    with pytest.raises(graphscope.LoadError):
        load(path)


def test_nx_view_keeps_multiplicity_and_attributes():
    """graph.nx is a MultiDiGraph with parallel edges, node attributes and edge shapes."""
    stats = GradStats(1.0, 0.5, 0.1, 0.0, 1.0, 1.0, 0.0, 0, 0, 4)
    g = Graph(
        nodes=[
            Node(0, "MulBackward0", label="mul", grad=stats, is_root=True),
            Node(1, "AccumulateGrad", kind="leaf", label="leaf"),
        ],
        edges=[Edge(1, 0, 0, 0), Edge(1, 0, 0, 1)],
        roots=[0],
    )
    nx = g.nx
    assert nx.number_of_edges(1, 0) == 2
    assert nx.nodes[0]["grad"] is stats and nx.nodes[1]["kind"] == "leaf"
    assert g.producers(0) == [1] and g.consumers(1) == [0]


def test_format_version_is_written(tmp_path):
    """Saved files carry the format name and version."""
    data = json.loads(DEMOS["linear_regression"].build().save(tmp_path / "l.json").read_text())
    assert data["format"] == "graphscope.capture" and data["version"] == FORMAT_VERSION
