"""watch(..., run=): every step of a real training loop recorded, judged over time, and left
exactly as an unwatched run; the store survives the training process being killed."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import graphscope
from graphscope.errors import RunError
from graphscope.runs import open_run
from graphscope.trends import analyze, first_nonfinite_loss
from tests.models import assert_grads_identical, twins


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))


def _train(model, path, *, steps=30, lr=0.01, zero_grad=True, every=10, seed=0, hook=None, **kw):
    """A plain SGD loop under watch(run=path); returns each step's p.grad norms and losses."""
    torch.manual_seed(seed)
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    norms, losses = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with graphscope.watch(model, optimizer=opt, run=path, every=every, **kw):
            for i in range(steps):
                if hook is not None:
                    hook(i, model)
                loss = ((model(x) - y) ** 2).mean()
                if zero_grad:
                    opt.zero_grad()
                loss.backward()
                norms.append([p.grad.norm().item() for p in model.parameters()])
                losses.append(loss.item())
                opt.step()
    return np.array(norms), np.array(losses)


def test_every_step_is_recorded_exactly_and_training_is_unchanged(tmp_path):
    """Per-parameter norms equal p.grad's at every step; the loss and lr are recorded; the
    gradients and weights end bit-identical to an unwatched run; a healthy run has no warning."""
    watched, plain = twins(_mlp)
    norms, losses = _train(watched, tmp_path / "run")
    torch.manual_seed(0)
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    opt = torch.optim.SGD(plain.parameters(), lr=0.01)
    for _ in range(30):
        loss = ((plain(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert_grads_identical(watched, plain)
    assert all(torch.equal(a, b) for a, b in zip(watched.parameters(), plain.parameters()))
    run = open_run(tmp_path / "run")
    st = run.steps()
    assert st.step.tolist() == list(range(1, 31))
    np.testing.assert_allclose(st.loss, losses, rtol=1e-6)
    assert st.lrs[0] == [0.01]
    ps = run.param_series()
    np.testing.assert_allclose(ps.norm, norms, rtol=1e-5)
    np.testing.assert_allclose(st.grad_norm, np.sqrt((norms ** 2).sum(axis=1)), rtol=1e-5)
    assert [c.step for c in run.captures()] == [1, 11, 21]
    assert not [f for f in analyze(run) if f.severity >= graphscope.Severity.WARNING]


def test_update_ratio_is_the_optimizer_step_after_a_captured_backward(tmp_path):
    """The stored update ratio equals ||lr * grad|| / ||w|| for plain SGD, around captures."""
    model = _mlp()
    seen = {}

    def hook(i, m):
        if i == 1:  # the weights after step 1's update, before step 2's forward
            seen["after"] = [p.detach().clone() for p in m.parameters()]

    first = [p.detach().clone() for p in model.parameters()]
    _train(model, tmp_path / "run", steps=3, hook=hook)
    ratios = open_run(tmp_path / "run").updates()[1]
    want = [(a - b).norm().item() / b.norm().item() for a, b in zip(seen["after"], first)]
    np.testing.assert_allclose(ratios, want, rtol=1e-5)


def test_a_diverging_run_is_found_before_it_is_non_finite(tmp_path):
    """SGD with far too high a learning rate: divergence is reported at least 2 steps before
    the loss is non-finite, that step is an error, and its capture (taken before its backward)
    is kept with the last healthy one before it."""
    norms, losses = _train(_mlp(), tmp_path / "run", lr=3.0, steps=20, every=50)
    run = open_run(tmp_path / "run")
    bad = first_nonfinite_loss(run.steps())
    assert bad is not None and bad == 1 + int(np.flatnonzero(~np.isfinite(losses))[0])
    found = {f.kind: f for f in analyze(run)}
    div = found["divergence"]
    assert div.severity == graphscope.Severity.WARNING
    found_at = int(div.message.split("found at step ")[1].split(",")[0])
    assert found_at <= bad - 2
    assert found["nonfinite"].step <= bad and found["nonfinite"].severity == graphscope.Severity.ERROR
    kept = {c.step: c.reason for c in run.captures()}
    assert kept[1] == "before_anomaly" and kept[bad] == "nonfinite"
    g = run.capture(bad)
    assert any(f.kind == "nonfinite_origin" for f in g.findings)


def test_momentum_sgd_diverging_in_a_zigzag_is_found_well_before_the_nan(tmp_path):
    """SGD with momentum 0.9 at lr=0.3 (3.0 in effect) on a GELU MLP: loss and gradient norm
    rise while swinging up and down, with no run of growing steps until the last blow-up; the
    divergence is found at least 5 steps before the loss is non-finite, and its hint names the
    momentum's effective learning rate."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 1))
    x, y = torch.randn(64, 6), torch.randn(64, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with graphscope.watch(model, optimizer=opt, run=tmp_path / "run", every=50):
            for _ in range(40):
                loss = ((model(x) - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                losses.append(loss.item())
    run = open_run(tmp_path / "run")
    bad = first_nonfinite_loss(run.steps())
    assert bad is not None and bad == 1 + int(np.flatnonzero(~np.isfinite(losses))[0])
    (div,) = [f for f in analyze(run) if f.kind == "divergence"]
    assert div.severity == graphscope.Severity.WARNING and div.found_at <= bad - 5
    assert losses[div.step - 2] < losses[0]  # it began after the loss had fallen
    assert "swinging up and down" in div.message
    assert "momentum 0.9" in div.hint and "lr 0.3: 3 in effect" in div.hint


def test_a_forgotten_zero_grad_is_found_and_accumulation_on_purpose_is_not(tmp_path):
    """.grad carried over optimizer steps is a warning from the step it started; micro-batch
    accumulation (step every 4 backward passes) and a proper loop are not."""
    _train(_mlp(), tmp_path / "forgot", zero_grad=False, steps=12)
    found = [f for f in analyze(open_run(tmp_path / "forgot")) if f.kind == "accumulating"]
    assert len(found) == 1 and found[0].step == 2 and "zero_grad" in found[0].hint
    _train(_mlp(), tmp_path / "proper", steps=12)
    assert not [f for f in analyze(open_run(tmp_path / "proper")) if f.kind == "accumulating"]
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    with graphscope.watch(model, optimizer=opt, run=tmp_path / "micro", warn=False):
        for i in range(16):
            ((model(x) - y) ** 2).mean().backward()
            if i % 4 == 3:
                opt.step()
                opt.zero_grad()
    run = open_run(tmp_path / "micro")
    assert run.steps().accumulating.max() == 0
    assert not [f for f in analyze(run) if f.kind == "accumulating"]


def test_a_layer_that_dies_is_found_at_the_step_it_died(tmp_path):
    """A bad update that drives a ReLU layer's pre-activations negative makes its weight's
    gradient all zeros from that step on: a dying_layer warning starting there."""

    def hook(i, m):
        if i == 20:
            with torch.no_grad():
                m[2].bias.fill_(-100.0)  # every unit of the second ReLU stops firing

    _train(_mlp(), tmp_path / "run", steps=40, hook=hook)
    found = [f for f in analyze(open_run(tmp_path / "run")) if f.kind == "dying_layer"]
    assert [f.step for f in found] == [21]
    assert set(found[0].params) == {"0.weight", "2.weight", "4.weight"}


def test_a_spike_takes_a_capture_of_the_next_step(tmp_path):
    """A gradient-norm spike against the run's own history (one batch 100x too large) is an
    event and an info finding, and the step after it is captured."""
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    x, y = torch.randn(32, 6), torch.randn(32, 1)
    with graphscope.watch(model, optimizer=opt, run=tmp_path / "run", every=100, warn=False):
        for i in range(25):
            loss = ((model(x * (100.0 if i == 15 else 1.0)) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    run = open_run(tmp_path / "run")
    assert [(e.step, e.kind) for e in run.events()] == [(16, "spike")]
    assert {c.step: c.reason for c in run.captures()}[17] == "spike"
    spikes = [f for f in analyze(run) if f.kind == "spike"]
    assert [f.step for f in spikes] == [16] and spikes[0].severity == graphscope.Severity.INFO


def test_tiny_and_huge_finite_gradients_have_exact_norms(tmp_path):
    """A 1e-23 gradient (float32 squares underflow) and a 1e30 one (they overflow) are
    recorded with their true norms, not 0 or Inf."""
    a, b = nn.Parameter(torch.ones(64)), nn.Parameter(torch.ones(64))
    holder = nn.Module()
    holder.a, holder.b = a, b
    with graphscope.watch(holder, run=tmp_path / "run", warn=False):
        ((a * 1e-23).sum() + (b * 1e30).sum()).backward()
    ps = open_run(tmp_path / "run").param_series()
    assert ps.norm[0, 0] == pytest.approx(8e-23, rel=1e-6, abs=0)
    assert ps.norm[0, 1] == pytest.approx(8e30, rel=1e-6, abs=0)
    assert open_run(tmp_path / "run").steps().nonfinite[0] == 0


def test_norms_stay_exact_when_gradients_turn_tiny_huge_or_normal(tmp_path):
    """Over steps, gradients whose scale moves between 1e-25 (float32 squares underflow), 1e25
    (they overflow) and 1 are recorded with their float64 norms every step: the step after a
    tiny or huge one, normed in float64 at once, and the step one turns back to normal."""
    a, b, c = (nn.Parameter(torch.linspace(0.5, 1.5, 64)) for _ in range(3))
    holder = nn.Module()
    holder.a, holder.b, holder.c = a, b, c
    scales = [(1e-25, 1e25, 1.0), (1e-25, 1e25, 1.0), (1.0, 1.0, 1e-25), (1e-25, 1.0, 1e25),
              (1.0, 1e25, 1e-25)]
    want = []
    with graphscope.watch(holder, run=tmp_path / "run", warn=False):
        for sa, sb, sc in scales:
            for p in (a, b, c):
                p.grad = None
            ((a * a).sum() * sa + (b * b).sum() * sb + (c * c).sum() * sc).backward()
            want.append([p.grad.double().norm().item() for p in (a, b, c)])
    got = open_run(tmp_path / "run").param_series().norm
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


def test_raise_on_nonfinite_still_commits_the_step(tmp_path):
    """on_nonfinite='raise' stops the loop, and the failing step and its capture are in the run."""
    model = _mlp()
    with pytest.raises(graphscope.NonFiniteGradientError):
        _train(model, tmp_path / "run", lr=3.0, steps=40, every=50, on_nonfinite="raise")
    run = open_run(tmp_path / "run")
    last = int(run.steps().step[-1])
    assert run.steps().loss_nonfinite[-1] and last in {c.step for c in run.captures()}


def test_bad_run_arguments_are_refused_clearly(tmp_path):
    """run= must be a path and optimizer= an optimizer; a store of another model is refused."""
    with pytest.raises(TypeError, match="run= must be a folder"):
        graphscope.watch(_mlp(), run=3)
    with pytest.raises(TypeError, match="optimizer= must be"):
        graphscope.watch(_mlp(), optimizer="adam")
    _train(_mlp(), tmp_path / "run", steps=2)
    other = nn.Linear(2, 2)
    with pytest.raises(RunError, match="other parameters"):
        with graphscope.watch(other, run=tmp_path / "run"):
            pass
    assert graphscope.active_hook_count() == 0


_CHILD = textwrap.dedent("""
    import sys, torch, graphscope
    from torch import nn
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1))
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    x, y = torch.randn(16, 6), torch.randn(16, 1)
    with graphscope.watch(m, optimizer=opt, run=sys.argv[1], every=7):
        while True:
            loss = ((m(x) - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
""")


def test_a_killed_training_process_leaves_every_committed_step(tmp_path):
    """SIGKILL mid-training: the store opens, its steps are 1..N with nothing torn (each step
    has its numbers), and N is at least what a reader saw committed before the kill."""
    path = tmp_path / "run"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)],
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        seen = 0
        deadline = time.monotonic() + 60
        while seen < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                seen = open_run(path).step_count()
            except RunError:
                pass  # not created yet
        assert seen >= 40, "the child did not record 40 steps in 60 s"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(10)
    run = open_run(path)
    steps = run.steps().step.tolist()
    assert len(steps) >= seen and steps == list(range(1, len(steps) + 1))
    ps = run.param_series()
    assert ps.n.sum() == len(steps) and np.isfinite(ps.norm).all()
    assert all(c.step % 7 == 1 for c in run.captures())
    con = __import__("sqlite3").connect(path / "run.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
