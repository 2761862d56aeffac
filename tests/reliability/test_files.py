"""Capture files (issue 5.14, issue 2.7): a real capture round-trips as strict JSON; a corrupt,
truncated or foreign file given to ``load`` or ``graphscope view`` gets a clear LoadError, never
another exception or a traceback."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle
import random

import pytest
import torch

import graphscope
from graphscope.cli import main
from graphscope.demos import DEMOS
from graphscope.diagnostics import diagnose


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
    """A saved capture is strict JSON (NaN/Inf as strings) and loads back as equal records."""
    graph, path, other_path = saved
    _strict(path.read_text())
    back = graphscope.load(path)
    assert any(n.module for n in graph.nodes) and any(n.source for n in graph.nodes)  # recorded
    for part in ("nodes", "edges", "findings", "params", "meta", "roots", "passes"):
        assert _nan_marked(getattr(back, part)) == _nan_marked(getattr(graph, part)), part
    assert any(n.grad is not None and not n.grad.finite for n in back.nodes)
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


def test_binary_pickle_and_directory_are_load_errors(tmp_path):
    """A pickle (never unpickled), a PNG and a directory raise LoadError."""
    pickled = tmp_path / "graph.pkl"
    pickled.write_bytes(pickle.dumps({"format": "graphscope.capture"}))
    png = tmp_path / "graph.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    for path in (pickled, png, tmp_path):
        assert _expect_load_error(path)


@pytest.mark.parametrize("content", ["", '{"format": "graphscope.capture", "version": 1, "nodes": [', "[]"])
def test_view_reports_a_bad_file_in_one_line(tmp_path, capsys, content):
    """`graphscope view` on a corrupt or foreign file exits 2 with a one-line error, no traceback,
    and never opens the inspector."""
    path = tmp_path / "bad.json"
    path.write_text(content)
    code = main(["view", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("graphscope: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_view_reports_a_missing_file(tmp_path, capsys):
    """`graphscope view` on a missing file says so and exits 2."""
    assert main(["view", str(tmp_path / "nope.json")]) == 2
    assert "no such capture file" in capsys.readouterr().err
