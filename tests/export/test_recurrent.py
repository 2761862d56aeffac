"""LSTM steps found from a captured graph's shape and drawn per time step, checked against torch."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import graphscope
from graphscope.export.dot import CELL_COLOUR, FUSED_RNN_OPS, to_dot
from graphscope.export.options import RenderOptions
from graphscope.export.recurrent import find_lstm_steps
from graphscope.formatting import fmt_num
from graphscope.model import Graph
from tests import graphs
from tests.export.dotfile import parse

STEPS = 4
HIDDEN = 5


def _rms(t: torch.Tensor) -> float:
    return float(t.detach().double().pow(2).mean().sqrt())


class CellNet(nn.Module):
    """An nn.LSTMCell run over the sequence step by step, its last h fed to a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(3, HIDDEN)
        self.head = nn.Linear(HIDDEN, 1)
        self.cells: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = torch.zeros(x.shape[1], HIDDEN)
        self.cells = []
        for t in range(x.shape[0]):
            h, c = self.cell(x[t], (h, c))
            c.retain_grad()  # the oracle: torch's dL/dc_t
            self.cells.append(c)
        return self.head(h).pow(2).mean()


def _cell_capture() -> tuple[Graph, CellNet, torch.Tensor]:
    torch.manual_seed(0)
    model = CellNet()
    x = torch.randn(STEPS, 2, 3)
    with graphscope.record(model):
        loss = model(x)
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    return graph, model, x


def _clusters(text: str) -> dict[str, tuple[str, set[str]]]:
    """``cluster name -> (label, DOT node names inside)`` for the step frames."""
    found: dict[str, tuple[str, set[str]]] = {}
    current = None
    for line in text.splitlines():
        if m := re.match(r"\s*subgraph (cluster_step\d+) \{", line):
            current = m[1]
            found[current] = ("", set())
        elif current and (m := re.match(r'\s*label="((?:[^"\\]|\\.)*)";', line)):
            found[current] = (m[1].replace("\\n", "\n"), found[current][1])
        elif current and (m := re.match(r"\s*(n\d+) \[", line)):
            found[current][1].add(m[1])
        elif current and line.strip() == "}":
            current = None
    return found


def test_lstm_cell_on_the_cpu_is_ops_not_one_fused_node() -> None:
    """On the CPU autograd records nn.LSTMCell as addmm/split/sigmoid/tanh/mul/add, so its gates
    can be found (the premise of this module; CUDA fuses it into one node)."""
    graph, _, _ = _cell_capture()
    ops = {n.op for n in graph.nodes}
    assert {"AddmmBackward0", "UnsafeSplitBackward0", "SigmoidBackward0", "TanhBackward0",
            "MulBackward0", "AddBackward0"} <= ops
    assert not ops & FUSED_RNN_OPS


def test_each_step_of_an_lstm_cell_is_found_in_order() -> None:
    """Four calls of the cell are four steps of one chain, each reading the previous c_t."""
    graph, _, _ = _cell_capture()
    steps = find_lstm_steps(graph)
    assert [(s.chain, s.index) for s in steps] == [(0, t) for t in range(1, STEPS + 1)]
    assert steps[0].prev_cell is None  # c_0 is zeros, a constant: no node
    for before, step in zip(steps, steps[1:]):
        assert step.prev_cell == before.cell
    assert all(s.module == "cell" for s in steps)
    members = [set(s.members) for s in steps]
    assert all(not (a & b) for i, a in enumerate(members) for b in members[i + 1:])


def test_gate_roles_follow_torchs_chunk_order() -> None:
    """Found from the shape alone, the gates are torch's chunks i, f, g, o (outputs 0-3 of the
    split of the gate vector), at every step."""
    graph, _, _ = _cell_capture()
    for step in find_lstm_steps(graph):
        chunk = {}
        for role, nid in (("i", step.input_gate), ("f", step.forget_gate), ("g", step.candidate),
                          ("o", step.output_gate)):
            (edge,) = graph.in_edges(nid)
            assert graph.nodes[edge.src].op == "UnsafeSplitBackward0"
            chunk[role] = edge.output_nr
        assert chunk == {"i": 0, "f": 1, "g": 2, "o": 3}
        assert graph.nodes[step.candidate].op == "TanhBackward0"
        assert graph.nodes[step.cell].op == "AddBackward0"


def test_cell_state_gradient_is_torchs() -> None:
    """Each step's gradient at c_t is torch's c_t.grad; the part sent back along the cell state
    is f_t * dL/dc_t, with f_t recomputed from the cell's weights."""
    graph, model, x = _cell_capture()
    steps = find_lstm_steps(graph)
    cell = model.cell
    h = c = torch.zeros(2, HIDDEN)
    with torch.no_grad():
        for t, (step, c_t) in enumerate(zip(steps, model.cells)):
            assert step.cell_grad is not None and c_t.grad is not None
            assert step.cell_grad.rms == pytest.approx(_rms(c_t.grad), rel=1e-6)
            gates = x[t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
            i, f, g, o = gates.chunk(4, dim=1)
            if t:
                assert step.carried_grad is not None
                assert step.carried_grad.rms == pytest.approx(_rms(torch.sigmoid(f) * c_t.grad), rel=1e-5)
            else:
                assert step.carried_grad is None
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            assert torch.allclose(c, c_t)


def test_picture_frames_each_step_with_its_gradients() -> None:
    """One frame per step, 'step 3 (LSTMCell cell)', holding that step's gates, its cell update
    and h_t; its label gives torch's RMS of dL/dc_t."""
    graph, model, _ = _cell_capture()
    steps = find_lstm_steps(graph)
    text = to_dot(graph)
    clusters = _clusters(text)
    assert len(clusters) == STEPS
    by_title = {label.splitlines()[0]: names for label, names in clusters.values()}
    assert sorted(by_title) == [f"step {t} (LSTMCell cell)" for t in range(1, STEPS + 1)]
    for step, c_t in zip(steps, model.cells):
        label, names = next(v for v in clusters.values() if v[0].startswith(f"step {step.index} "))
        assert names == {f"n{m}" for m in step.members}
        assert f"grad rms at c{step.index} {fmt_num(_rms(c_t.grad))}" in label
        assert ("along the cell state" in label) == (step.index > 1)
        assert f"into the gates {fmt_num(step.gate_grad.rms)}" in label  # type: ignore[union-attr]
    assert "4 LSTM time steps found" in text


def test_gates_are_labelled_by_role() -> None:
    """Gate nodes read 'input gate i σ', 'forget gate f σ', 'candidate g tanh', 'output gate o σ';
    the cell update and h_t read as the equations they compute."""
    graph, _, _ = _cell_capture()
    dot = parse(to_dot(graph))
    step = find_lstm_steps(graph)[2]

    def label(nid: int | None) -> str:
        return dot.nodes[f"n{nid}"]["label"].split("\n")[0]

    assert label(step.input_gate) == "input gate i σ"
    assert label(step.forget_gate) == "forget gate f σ"
    assert label(step.candidate) == "candidate g tanh"
    assert label(step.output_gate) == "output gate o σ"
    assert label(step.forget_mul) == "f * c2"
    assert label(step.input_mul) == "i * g"
    assert dot.nodes[f"n{step.cell}"]["label"].startswith("cell state c3\n= f*c2 + i*g")
    assert label(step.hidden) == "h3 = o * tanh(c3)"
    assert "LSTM step 3 (LSTMCell cell): forget gate f σ" in dot.nodes[f"n{step.forget_gate}"]["tooltip"]


def test_cell_state_edges_are_drawn_apart() -> None:
    """c_{t-1} -> f*c and f*c -> c_t are thick brown, the carry labelled with the state it
    carries; no other edge is."""
    graph, _, _ = _cell_capture()
    steps = find_lstm_steps(graph)
    dot = parse(to_dot(graph))
    path = {(f"n{s.forget_mul}", f"n{s.cell}") for s in steps}
    path |= {(f"n{s.prev_cell}", f"n{s.forget_mul}") for s in steps if s.prev_cell is not None}
    assert len(path) == 2 * STEPS - 1
    for src, dst, attrs in dot.edges:
        on_path = (src, dst) in path
        assert (attrs.get("color") == CELL_COLOUR and attrs.get("penwidth") == "3") == on_path, (src, dst)
    carry = dot.between(f"n{steps[1].prev_cell}", f"n{steps[1].forget_mul}")[0]
    assert carry["label"].startswith("c1")
    assert "cell state path of step 2 (LSTMCell cell): c1 -> f*c1 -> c2" in carry["tooltip"]
    assert any(n.get("label") == "thick brown edge: LSTM cell state" for n in dot.nodes.values())


class HandCell(nn.Module):
    """An LSTM cell written by hand, its chunks in another order (o, g, f, i) than torch's, the
    forget product written c * f, and c_0 an input that requires grad."""

    def __init__(self) -> None:
        super().__init__()
        self.gates = nn.Linear(3 + HIDDEN, 4 * HIDDEN)
        self.pre: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(x.shape[1], HIDDEN)
        self.pre = []
        for t in range(x.shape[0]):
            pre = self.gates(torch.cat([x[t], h], dim=1))
            pre.retain_grad()
            self.pre.append(pre)
            o, g, f, i = pre.chunk(4, dim=1)
            c = c * torch.sigmoid(f) + torch.tanh(g) * torch.sigmoid(i)
            h = torch.sigmoid(o) * torch.tanh(c)
        return h.sum()


def test_hand_written_cell_is_found_by_its_shape() -> None:
    """A hand-written cell with other chunk order and operand order gets the right roles (by the
    wiring, not by position), c_0 as its first step's c_{t-1}, and torch's gate gradient."""
    torch.manual_seed(1)
    model = HandCell()
    x = torch.randn(3, 2, 3)
    c0 = torch.randn(2, HIDDEN, requires_grad=True)
    loss = model(x, c0)
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    steps = find_lstm_steps(graph)
    assert [s.index for s in steps] == [1, 2, 3]
    assert graph.nodes[steps[0].prev_cell].var_name == "c0"  # type: ignore[index]
    for step, pre in zip(steps, model.pre):
        chunk = {role: graph.in_edges(nid)[0].output_nr for role, nid in (
            ("o", step.output_gate), ("g", step.candidate), ("f", step.forget_gate), ("i", step.input_gate))}
        assert chunk == {"o": 0, "g": 1, "f": 2, "i": 3}
        assert step.gate_grad is not None and pre.grad is not None
        assert step.gate_grad.rms == pytest.approx(_rms(pre.grad), rel=1e-6)
        assert step.carried_grad is not None  # every step, the first one into c0
    assert steps[0].carried_grad.rms == pytest.approx(_rms(c0.grad), rel=1e-6)  # type: ignore[union-attr, arg-type]
    assert len(_clusters(to_dot(graph))) == 3


def test_saved_capture_finds_the_same_steps() -> None:
    """Recognition is plain data: a capture saved and loaded (no torch) gives the same steps."""
    graph, _, _ = _cell_capture()
    loaded = Graph.from_dict(graph.to_dict())
    assert find_lstm_steps(loaded) == find_lstm_steps(graph)
    assert [s.index for s in find_lstm_steps(loaded)] == [1, 2, 3, 4]


def test_no_false_grouping() -> None:
    """Graphs without an LSTM cell get no steps and no frames: an MLP, a GRU cell written by hand
    (sigmoid gates, tanh, mul and add, but no cell state), nn.GRUCell, and a gated unit that
    computes one LSTM-like update a*y + b*tanh(u) with no output gate after it."""
    torch.manual_seed(2)
    mlp = nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1))
    x = torch.randn(2, 3)
    captures = [graphscope.capture(mlp(x).sum(), model=mlp, warn=False)]
    w = nn.Linear(3 + HIDDEN, 3 * HIDDEN)
    h = torch.zeros(2, HIDDEN)
    for _ in range(3):  # GRU: h = (1 - z) * n + z * h
        r, z, n = w(torch.cat([x, h], dim=1)).chunk(3, dim=1)
        r, z = torch.sigmoid(r), torch.sigmoid(z)
        h = (1 - z) * torch.tanh(n * r) + z * h
    captures.append(graphscope.capture(h.sum(), warn=False))
    gru = nn.GRUCell(3, HIDDEN)
    hg = torch.zeros(2, HIDDEN)
    for _ in range(3):
        hg = gru(x, hg)
    captures.append(graphscope.capture(hg.sum(), warn=False))
    u = torch.randn(2, HIDDEN, requires_grad=True)
    gated = torch.sigmoid(u) * u.exp() + torch.sigmoid(2 * u) * torch.tanh(u)
    captures.append(graphscope.capture(torch.tanh(gated).sum(), warn=False))
    for graph in [*captures, graphs.mlp(), graphs.sigmoid_mlp()]:
        assert find_lstm_steps(graph) == []
        text = to_dot(graph)
        assert "cluster_step" not in text and "LSTM" not in text and CELL_COLOUR not in text


def test_steps_grouped_away_are_named_in_the_caption() -> None:
    """When the node budget groups the steps' ops away, no frame is drawn and the caption says
    the steps are there and how to see them."""
    graph, _, _ = _cell_capture()
    text = to_dot(graph, options=RenderOptions(max_nodes=12))
    assert "cluster_step" not in text
    assert "4 LSTM time steps found, grouped away here: raise max_nodes" in text


def test_a_step_cut_by_the_budget_gets_no_frame() -> None:
    """A step the node budget cut into pieces (some of its ops merged into chains) gets no frame
    of a few stray nodes; those drawn alone keep their role labels."""
    torch.manual_seed(0)
    model = CellNet()
    loss = model(torch.randn(STEPS, 2, 3))
    graph = graphscope.capture(loss, warn=False)  # no record(): no modules to group by
    loss.backward()
    text = to_dot(graph, options=RenderOptions(max_nodes=60))
    dot = parse(text)
    alone = [m for s in find_lstm_steps(graph) for m in (s.hidden, s.output_gate) if f"n{m}" in dot.nodes]
    assert alone  # parts of steps are drawn, one box each
    assert "cluster_step" not in text
    assert "4 LSTM time steps found, grouped away here" in text
    assert any(dot.nodes[f"n{m}"]["label"].startswith(("h", "output gate o σ")) for m in alone)
