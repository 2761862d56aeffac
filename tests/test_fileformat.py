"""The capture file (issue 5.14, issue 2.7): a real capture round-trips as strict JSON with every
field kept; a corrupt, truncated or foreign file given to ``load`` gets a clear LoadError naming
the problem, never another exception or a time bomb in the loaded graph."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import random

import pytest
import torch
from torch import nn

import graphscope
from graphscope.demos import DEMOS
from graphscope.diagnostics import diagnose
from graphscope.fileformat import FORMAT_VERSION
from graphscope.model import Graph, load


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


def test_load_needs_no_torch_objects(tmp_path):
    """A loaded graph is the plain model (no hooks to close), findings intact."""
    graph = DEMOS["sigmoid_mlp"].build()
    back = load(graph.save(tmp_path / "s.json"))
    assert type(back) is Graph and not hasattr(back, "close")
    assert back.findings and back.findings[0].kind == "vanishing"


@pytest.mark.parametrize(
    "content, match",
    [
        ("", "is empty"),
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


def test_format_version_is_written(tmp_path):
    """Saved files carry the format name and version."""
    data = json.loads(DEMOS["linear_regression"].build().save(tmp_path / "l.json").read_text())
    assert data["format"] == "graphscope.capture" and data["version"] == FORMAT_VERSION


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A finished capture with NaN gradients, unreachable and frozen parameters, and findings."""
    graph = DEMOS["nan_hunt"].build()
    other = DEMOS["unused_layer"].build()
    path = tmp_path_factory.mktemp("captures") / "nan_hunt.json"
    graph.save(path)
    other_path = path.with_name("unused_layer.json")
    other.save(other_path)
    return graph, path, other_path


def _strict(text: str):
    def reject(token):
        raise ValueError(f"bare {token} is not JSON")

    return json.loads(text, parse_constant=reject)


def _nan_marked(value):
    """``value`` with each NaN float replaced by a marker and each record by its type and fields,
    so records holding NaN statistics compare equal when every field matches."""
    if isinstance(value, float) and math.isnan(value):
        return "<NaN>"
    if dataclasses.is_dataclass(value):
        return (type(value), *(_nan_marked(getattr(value, f.name)) for f in dataclasses.fields(value)))
    if isinstance(value, (list, tuple)):
        return type(value)(_nan_marked(v) for v in value)
    if isinstance(value, dict):
        return {k: _nan_marked(v) for k, v in value.items()}
    return value


def test_round_trip_is_strict_json_and_lossless(saved):
    """A saved capture with NaN gradients is strict JSON (no NaN/Infinity literals) and loads back
    as equal records, its NaN statistics still NaN."""
    graph, path, other_path = saved
    _strict(path.read_text())
    back = graphscope.load(path)
    assert any(n.module for n in graph.nodes) and any(n.source for n in graph.nodes)  # recorded
    for part in ("nodes", "edges", "findings", "params", "meta", "roots", "passes"):
        assert _nan_marked(getattr(back, part)) == _nan_marked(getattr(graph, part)), part
    nan_nodes = [n for n in back.nodes if n.grad is not None and not n.grad.finite]
    assert nan_nodes and math.isnan(nan_nodes[0].grad.norm)
    assert [f.kind for f in back.findings] == [f.kind for f in graph.findings]
    assert back.nx.number_of_edges() == graph.nx.number_of_edges()
    other = graphscope.load(other_path)
    assert {p.status for p in other.params} == {"reached", "unreachable", "frozen"}


def test_nan_loss_is_saved_as_strict_json_and_loads_back(tmp_path):
    """A capture of a NaN loss keeps its root value through a strict-JSON file, still diagnosed."""
    w = torch.ones(3, requires_grad=True)
    loss = (w * torch.tensor([1.0, float("nan"), 2.0])).sum()
    graph = graphscope.capture(loss, warn=False)
    loss.backward()
    path = graph.save(tmp_path / "nan_loss.json")
    _strict(path.read_text())
    back = graphscope.load(path)
    (value,) = back.meta["root_values"]
    assert math.isnan(float(value)) and back.meta == graph.meta
    assert [f.kind for f in diagnose(back)] == [f.kind for f in graph.findings]
    assert "nonfinite_loss" in [f.kind for f in graph.findings]


def _expect_load_error(path) -> str:
    try:
        graphscope.load(path)
    except graphscope.LoadError as exc:
        return str(exc)
    except Exception as exc:  # the point of the test: nothing but LoadError may escape
        pytest.fail(f"load raised {type(exc).__name__}: {exc}")
    return ""


def test_every_truncation_is_a_load_error(saved, tmp_path):
    """A capture cut off at any point (an interrupted save) raises LoadError saying it is truncated."""
    text = saved[1].read_text()
    cuts = sorted({int(len(text) * k / 40) for k in range(40)} | {len(text) - 1})
    path = tmp_path / "cut.json"
    for cut in cuts:
        path.write_text(text[:cut])
        msg = _expect_load_error(path)
        assert msg, f"a capture cut at {cut}/{len(text)} loaded"
        if cut > 0:
            assert "truncated" in msg, (cut, msg)


def test_random_byte_corruption_never_escapes_as_another_error(saved, tmp_path):
    """Flipped bytes either still load or raise LoadError; never any other exception."""
    data = bytearray(saved[2].read_bytes())
    rng = random.Random(5)
    path = tmp_path / "flipped.json"
    for _ in range(200):
        bad = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            bad[rng.randrange(len(bad))] = rng.randrange(256)
        path.write_bytes(bytes(bad))
        try:
            graphscope.load(path)
        except graphscope.LoadError:
            pass


BAD_VALUES = [None, 7, -1, "x", [], {}, [7], [None], {"x": 1}, 1.5, True]


def _fields(value) -> list:
    return list(range(len(value))) if isinstance(value, list) else list(value)


def _paths(doc: dict) -> list[tuple]:
    """Where to plant a wrong value: every top-level field, and every field of the first node,
    edge, parameter, finding, saved tensor and gradient record (a dict or a list)."""
    paths: list[tuple] = [(k,) for k in doc]
    for key in ("nodes", "edges", "params", "findings"):
        if doc[key]:
            paths.append((key, 0))
            paths += [(key, 0, k) for k in _fields(doc[key][0])]
    node = next(n for n in doc["nodes"] if n["grad"] is not None and n["saved"])
    i = doc["nodes"].index(node)
    paths += [("nodes", i, "grad", k) for k in _fields(node["grad"])]
    paths += [("nodes", i, "saved", 0, k) for k in _fields(node["saved"][0])]
    paths += [("nodes", i, "outputs", 0)]
    return paths


def _plant(doc: dict, path: tuple, value) -> dict:
    doc = json.loads(json.dumps(doc))
    target = doc
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = value
    return doc


def test_wrong_types_anywhere_are_load_errors(saved, tmp_path):
    """A foreign file that claims the capture format, with a wrong-typed value in any field,
    loads or raises LoadError: never AttributeError, TypeError or a crash later."""
    doc = json.loads(saved[2].read_text())
    path = tmp_path / "typed.json"
    escaped = []
    for where in _paths(doc):
        for value in BAD_VALUES:
            path.write_text(json.dumps(_plant(doc, where, value)))
            try:
                graph = graphscope.load(path)
                graph.nx  # a loaded graph must be usable, not a time bomb
                graph.summary()
            except graphscope.LoadError:
                pass
            except Exception as exc:
                escaped.append(f"{where} = {value!r}: {type(exc).__name__}: {exc}")
    assert escaped == []


@pytest.mark.parametrize(
    "name, content",
    [
        ("notebook.ipynb", json.dumps({"cells": [], "metadata": {}, "nbformat": 4})),
        ("package.json", json.dumps({"name": "x", "version": "1.0.0"})),
        ("other-tool.json", json.dumps({"format": "torchviz", "version": 1, "nodes": []})),
        ("list.json", "[]"),
        ("number.json", "42"),
        ("bom.json", "\ufeff{}"),
        ("empty.json", ""),
        ("deep.json", "[" * 100_000 + "]" * 100_000),
    ],
    ids=lambda v: v if isinstance(v, str) and v.endswith((".json", ".ipynb")) else "",
)
def test_foreign_files_are_load_errors(tmp_path, name, content):
    """Foreign JSON, empty and pathological files raise LoadError naming the file or the format."""
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    assert _expect_load_error(path)


def test_missing_binary_pickle_and_directory_are_load_errors(tmp_path):
    """A missing file, a binary file, a pickle (never unpickled), a PNG and a directory raise
    LoadError, not OSError, UnicodeDecodeError or an unpickled object."""
    assert "no such capture file" in _expect_load_error(tmp_path / "nope.json")
    blob = tmp_path / "blob.json"
    blob.write_bytes(b"\x89PNG\x00\xff\xfe")
    pickled = tmp_path / "graph.pkl"
    pickled.write_bytes(pickle.dumps({"format": "graphscope.capture"}))
    png = tmp_path / "graph.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    for path in (blob, pickled, png, tmp_path):
        assert _expect_load_error(path)
