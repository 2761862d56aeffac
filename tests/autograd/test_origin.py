"""A non-finite forward value traced to its birth (graphscope.autograd.origin): at an op, in the
data or in the parameters, told apart from a NaN born in backward. Torch is the oracle: each
test first shows, with plain torch, where the value really turns non-finite."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import graphscope
from graphscope.autograd.watch import NonFiniteGradientError, watch
from graphscope.demos import DEMOS
from graphscope.model import FindingKind, Graph
from tests.models import TinyMLP, mlp_batch, node_by_op, seeded

capture_module = importlib.import_module("graphscope.autograd.capture")


def _run(loss: torch.Tensor, model: nn.Module | None = None) -> graphscope.Graph:
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    return g


def _origins(g: Graph) -> list[graphscope.Finding]:
    return [f for f in g.findings if f.kind == FindingKind.NONFINITE_ORIGIN]


def _sin_of_log() -> tuple[torch.Tensor, torch.Tensor]:
    """sin(log(r * w - 2)): log of a negative number is NaN; sin passes it on. Returns the loss
    and log's input."""
    w = nn.Parameter(torch.ones(8))
    r = torch.rand(8, generator=torch.Generator().manual_seed(0))
    below = r * w - 2
    return torch.sin(torch.log(below)).sum(), below


class HandLayerNorm(nn.Module):
    """A layer norm written by hand, without an epsilon: (h - mean) / std."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        return (h - h.mean(-1, keepdim=True)) / h.std(-1, keepdim=True)


def test_nan_made_by_log_in_forward_is_blamed_on_log_not_sin():
    """log(negative) is NaN in forward: the origin is log, not sin whose backward shows it."""
    loss, below = _sin_of_log()
    assert torch.isfinite(below).all() and torch.isnan(torch.log(below)).all()  # torch says: log
    g = _run(loss)
    (origin,) = _origins(g)
    assert g.nodes[origin.node].op == "LogBackward0"
    assert "born in the forward pass" in origin.message and "8 NaN of 8 values" in origin.message
    assert "clamp" in origin.hint.lower()
    sin = node_by_op(g, "SinBackward0")
    assert sin.grad is not None and sin.grad.finite  # sin received a finite gradient ...
    assert not all(e.grad.finite for e in g.in_edges(sin.id))  # ... and sent NaN back: consequence
    assert not g.findings_for(sin.id)
    (loss_finding,) = [f for f in g.findings if f.kind == FindingKind.NONFINITE_LOSS]
    assert "born in the forward pass, at log" in loss_finding.message


def test_zero_over_zero_in_a_hand_written_layer_norm_is_blamed_on_the_div():
    """A constant row makes (h - mean) / std 0/0: blamed on the div, not mse_loss."""
    model = seeded(HandLayerNorm)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.fill_(0.5)  # every row of h is 0.5: constant
    x = torch.randn(3, 4)
    h = model.fc(x)
    centred, std = h - h.mean(-1, keepdim=True), h.std(-1, keepdim=True)
    assert (std == 0).all() and (centred == 0).all() and torch.isnan(centred / std).all()
    g = _run(F.mse_loss(model(x), torch.zeros(3, 4)), model)
    (origin,) = _origins(g)
    assert g.nodes[origin.node].op == "DivBackward0"
    assert "its inputs are finite (all zeros)" in origin.message
    assert "denominator" in origin.hint and "epsilon" in origin.hint
    mse = node_by_op(g, "MseLossBackward0")
    assert [f.kind for f in g.findings_for(mse.id)] == [FindingKind.NONFINITE_LOSS]


def test_nan_in_the_input_batch_came_with_the_data():
    """A NaN in the batch is blamed on the data fed to the first layer, with the batch check."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    x[2, 1] = float("nan")
    assert torch.isnan(model.fc1(x)).any()
    g = _run(F.mse_loss(model(x), y), model)
    (origin,) = _origins(g)
    first = g.nodes[origin.node]
    assert first.op == "AddmmBackward0" and first.module == "fc1"
    assert "came in with the data" in origin.message and "'mat1'" in origin.message
    assert "1 NaN of 20 values" in origin.message
    assert "torch.isfinite(x).all()" in origin.hint


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_weights_are_a_divergence(bad):
    """A NaN/Inf weight is the origin, with the divergence hint and never an epsilon."""
    model = seeded(TinyMLP)
    with torch.no_grad():
        model.head.weight[0, 0] = bad
    x, y = mlp_batch()
    assert not torch.isfinite(F.mse_loss(model(x), y))
    g = _run(F.mse_loss(model(x), y), model)
    (origin,) = _origins(g)
    assert origin.param == "head.weight" and g.nodes[origin.node].kind == "param"
    assert "already holds" in origin.message and "before this forward pass" in origin.message
    assert "learning rate" in origin.hint and "clip" in origin.hint
    assert all("epsilon" not in f.hint for f in g.findings if f.kind.startswith("nonfinite"))


def test_huge_weights_that_overflow_are_a_divergence():
    """Weights of 1e30 that overflow the loss are a divergence (never epsilon), both ways."""
    model = seeded(TinyMLP)
    with torch.no_grad():
        model.head.weight.fill_(1e30)
    x, y = mlp_batch()
    out = model(x)
    assert torch.isfinite(out).all() and torch.isinf(F.mse_loss(out, y))  # torch: mse overflows
    g = _run(F.mse_loss(model(x), y), model)
    origin, *backward = _origins(g)
    assert g.nodes[origin.node].op == "MseLossBackward0"
    assert "born in the forward pass" in origin.message
    assert "'head.weight'" in origin.message and "1.00e+30" in origin.message
    assert "diverged" in origin.hint and "learning rate" in origin.hint
    assert [f.message.count("born in the backward pass") for f in backward] == [1] * len(backward)
    assert all("epsilon" not in f.hint and "learning rate" in f.hint for f in backward)


def test_nan_born_in_backward_is_still_blamed_on_sqrt():
    """The where(h > 0, h.sqrt(), 0) trap (finite loss) is still born at sqrt in backward."""
    model, forward = seeded(DEMOS["nan_hunt"].make)
    loss = forward()
    assert torch.isfinite(loss)
    g = _run(loss, model)
    assert "forward_nonfinite" not in g.meta
    (origin,) = _origins(g)
    assert g.nodes[origin.node].op == "SqrtBackward0"
    assert "born in the backward pass" in origin.message and "where" in origin.hint


def test_backward_nan_on_another_branch_is_still_reported():
    """A forward NaN does not hide a NaN born in backward on a branch it never reached."""
    loss, _ = _sin_of_log()
    h = nn.Parameter(torch.tensor([0.0, 4.0]))  # sqrt(0) is finite; its derivative is not
    loss = loss + torch.where(h > 0, h.sqrt(), 0).sum()
    g = _run(loss)
    assert sorted(g.nodes[f.node].op for f in _origins(g)) == ["LogBackward0", "SqrtBackward0"]
    sqrt = next(f for f in _origins(g) if g.nodes[f.node].op == "SqrtBackward0")
    assert "born in the backward pass" in sqrt.message


def test_non_scalar_output_is_traced():
    """A captured non-scalar output holding NaN is traced too."""
    _, below = _sin_of_log()
    out = torch.log(below)
    g = graphscope.capture(out, warn=False)
    out.backward(torch.ones_like(out))
    (origin,) = _origins(g)
    assert g.nodes[origin.node].op == "LogBackward0"


def test_healthy_capture_reads_no_values(monkeypatch):
    """A healthy capture never runs the forward trace; a NaN one runs it once."""
    calls = []
    real = capture_module.trace_nonfinite

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(capture_module, "trace_nonfinite", spy)
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    healthy = _run(F.mse_loss(model(x), y), model)
    assert calls == [] and "forward_nonfinite" not in healthy.meta
    _run(_sin_of_log()[0])
    assert calls == [1]


def test_tensors_packed_by_saved_tensors_hooks_are_not_unpacked():
    """The trace never unpacks a tensor packed by a saved_tensors_hooks unpack hook."""
    unpacked = []

    def unpack(t):
        unpacked.append(1)
        return t

    with torch.autograd.graph.saved_tensors_hooks(lambda t: t, unpack):
        loss, _ = _sin_of_log()
    g = graphscope.capture(loss, warn=False)
    assert unpacked == []
    assert "forward_nonfinite" in g.meta
    g.close()


def test_the_trace_is_strict_json_and_survives_a_round_trip(tmp_path):
    """The trace is strict JSON in the file, and a loaded capture words the same findings."""
    g = _run(_sin_of_log()[0])
    path = g.save(tmp_path / "nan.json")

    def no_constant(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    json.loads(path.read_text(), parse_constant=no_constant)
    loaded = graphscope.load(path)
    assert loaded.meta["forward_nonfinite"] == g.meta["forward_nonfinite"]
    assert graphscope.diagnose(loaded) == g.findings


class LogNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(torch.log(self.fc(x)))  # the log line


def test_watch_raise_leads_with_the_forward_origin():
    """on_nonfinite='raise' leads with the forward origin, then says the loss itself is NaN."""
    model = seeded(LogNet)
    with torch.no_grad():
        model.fc.weight.copy_(torch.eye(3))
        model.fc.bias.fill_(-5.0)  # log of a negative number for inputs in [0, 1)
    x = torch.rand(4, 3)
    with pytest.raises(NonFiniteGradientError) as info:
        with watch(model, on_nonfinite="raise", warn=False):
            model(x).sum().backward()
    err = info.value
    assert err.graph.nodes[err.finding.node].op == "LogBackward0"
    first, *rest = str(err).splitlines()
    line = next(i for i, text in enumerate(open(__file__, encoding="utf-8"), 1)
                if text.rstrip().endswith("# the log line"))
    assert first.startswith("step 1: NaN/Inf born in the forward pass at log (LogBackward0)")
    assert f"test_origin.py:{line} in LogNet.forward" in first
    assert any(line.strip().startswith("The loss itself is nan") for line in rest)


def test_every_non_finite_weight_is_one_divergence_finding():
    """Several weights already NaN are one finding that names each of them."""
    model = seeded(TinyMLP)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(float("nan"))
    x, y = mlp_batch()
    g = _run(F.mse_loss(model(x), y), model)
    (origin,) = _origins(g)
    names = [n for n, _ in model.named_parameters()]
    assert origin.param in names
    assert all(f"'{n}'" in origin.message for n in names)
    assert "diverged" in origin.hint


class _ParameterFreeNorm(nn.Module):
    """(x - mean) / std with no epsilon and no parameter: on a batch that needs no grad, its
    ops are outside the autograd graph."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)  # the norm line


class _NormThenMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = _ParameterFreeNorm()
        self.mlp = TinyMLP()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.norm(x))


def _norm_line() -> int:
    return next(i for i, text in enumerate(open(__file__, encoding="utf-8"), 1)
                if text.rstrip().endswith("# the norm line"))


def _watched_origin(x: torch.Tensor) -> tuple[graphscope.Finding, graphscope.Graph]:
    model = seeded(_NormThenMLP)
    with watch(model, on_nonfinite="ignore", warn=False) as w:
        F.mse_loss(model(x), torch.zeros(x.shape[0], 1)).backward()
    g = w.graphs[-1]
    (origin,) = _origins(g)
    return origin, g


def test_nan_made_outside_the_graph_is_traced_to_its_op_under_watch():
    """A constant row through a parameter-free norm on a batch that needs no grad: 0/0 happens
    outside the autograd graph, where a capture alone sees only NaN data entering fc1; the
    forward recording of watch saw the div make it, with its module and line."""
    x = torch.randn(5, 4)
    x[1] = 0.7  # a constant row: std 0, x - mean 0
    origin, g = _watched_origin(x)
    assert g.nodes[origin.node].module == "mlp.fc1"  # where it enters the graph
    assert origin.message.startswith("NaN/Inf born in the forward pass at div in module norm")
    assert f"test_origin.py:{_norm_line()} in _ParameterFreeNorm.forward" in origin.message
    assert "outside the autograd graph" in origin.message and "'mat1'" in origin.message
    assert "denominator" in origin.hint
    loss = [f for f in g.findings if f.kind == FindingKind.NONFINITE_LOSS][0]
    assert "at div in module norm" in loss.message
    # A capture without the recording still says only what it can see.
    model = seeded(_NormThenMLP)
    (plain,) = _origins(_run(F.mse_loss(model(x), torch.zeros(5, 1)), model))
    assert "came in with the data" in plain.message and "module norm" not in plain.message


def test_nan_already_in_the_batch_is_data_even_after_ops_outside_the_graph():
    """A NaN in the batch itself, normalised outside the graph before fc1: it came in with the
    data, through the norm's first op (sub), not born there."""
    x = torch.randn(5, 4)
    x[2, 3] = float("nan")
    origin, _ = _watched_origin(x)
    assert origin.message.startswith("NaN/Inf came in with the data and went through ")
    assert "in module norm" in origin.message and "torch.isfinite(x).all()" in origin.hint
    assert "born" not in origin.message
