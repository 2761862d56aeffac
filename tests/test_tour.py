"""The tour in examples/tour/: every lesson runs in seconds and draws its picture."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from graphscope.demos import DEMOS

TOUR = Path(__file__).resolve().parents[1] / "examples" / "tour"
SCRIPTS = sorted(p.name for p in TOUR.glob("*.py"))


def test_the_tour_has_ten_numbered_lessons():
    """Ten scripts, numbered 01..10, in the order the notions are taught."""
    assert [s[:2] for s in SCRIPTS] == [f"{i:02d}" for i in range(1, 11)]


@pytest.mark.parametrize("script", SCRIPTS)
def test_tour_script_runs_in_seconds_and_writes_its_picture(script: str, tmp_path: Path):
    """Each lesson exits 0 within 60 s, says what to look at and writes valid SVG."""
    proc = subprocess.run([sys.executable, str(TOUR / script), str(tmp_path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Look at:" in proc.stdout
    pictures = list(tmp_path.glob(f"{script[:2]}_*.svg"))
    assert pictures, f"{script} drew nothing"
    for svg in pictures:
        ET.parse(svg)


def test_chain_rule_picture_shows_values_and_gradients(tmp_path: Path):
    """Lesson 03 draws every node micrograd style: w's data -3 and grad 2 (= x)."""
    subprocess.run([sys.executable, str(TOUR / "03_chain_rule.py"), str(tmp_path)],
                   check=True, capture_output=True, timeout=60)
    svg = (tmp_path / "03_chain_rule.svg").read_text()
    assert "data &#45;3.0 | grad 2.0" in svg or "data -3.0 | grad 2.0" in svg


def test_fused_lstm_picture_says_what_it_hides(tmp_path: Path):
    """Lesson 09's nn.LSTM picture says its fused node hides the gates and how to see them."""
    subprocess.run([sys.executable, str(TOUR / "09_lstm.py"), str(tmp_path)],
                   check=True, capture_output=True, timeout=60)
    assert "nn.LSTMCell" in (tmp_path / "09_lstm_fused.svg").read_text()


def test_tour_demo_opens_with_its_lesson_and_the_learners_names():
    """graphscope demo tour-03 builds y = w*x + b named x, w, b, y, its lesson in the graph."""
    graph = DEMOS["tour-03"].build()
    assert graph.meta["lesson"] == DEMOS["tour-03"].lesson
    assert {n.title for n in graph.nodes if n.kind == "leaf"} == {"x", "w", "b"}
    w = next(n for n in graph.nodes if n.title == "w")
    assert (w.value.tolist(), w.grad_value.tolist()) == (-3.0, 2.0)


def test_the_other_tour_demos_match_torch():
    """tour-01, -02 and -05 build their lessons with the learner's names and gradients equal to
    torch's: a.grad = c = 4, x.grad = 2x, and the regression's parameter gradients."""
    import torch

    g1 = DEMOS["tour-01"].build()
    a = next(n for n in g1.nodes if n.var_name == "a")
    assert a.grad_value.data == (4.0,) and a.value.data == (3.0,)
    assert not any(n.var_name == "c" for n in g1.nodes)  # the constant is not in the graph
    g2 = DEMOS["tour-02"].build()
    x = next(n for n in g2.nodes if n.var_name == "x")
    assert x.grad_value.data == (2.0, 4.0, 6.0)
    g5 = DEMOS["tour-05"].build()
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, 2, generator=gen).requires_grad_()
    b = torch.randn(1, generator=gen).requires_grad_()
    xs = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    loss = torch.nn.functional.mse_loss(xs @ w.T + b, torch.tensor([[1.0], [2.0], [3.0]]))
    gw, gb = torch.autograd.grad(loss, [w, b])
    assert g5.find("weight").grad.norm == pytest.approx(gw.norm().item(), rel=1e-6)
    assert g5.find("bias").grad.norm == pytest.approx(gb.norm().item(), rel=1e-6)
    for name in ("tour-01", "tour-02", "tour-05"):
        assert DEMOS[name].build().meta["lesson"] == DEMOS[name].lesson


def test_tour_demos_04_and_06_to_10_match_torch():
    """tour-04 and -06..-10 carry their lessons, and their gradients equal torch's for the same
    tensors: four sigmoids' dz, the accumulated .grad, dropout's mul, the MLP, the LSTMCell loop
    and attention's input x."""
    import torch
    from torch import nn

    for name in ("tour-04", "tour-06", "tour-07", "tour-08", "tour-09", "tour-10"):
        assert DEMOS[name].build().meta["lesson"] == DEMOS[name].lesson
    z = torch.tensor([-2.0, 0.0, 2.0], requires_grad=True)
    h = z
    for _ in range(4):
        h = torch.sigmoid(h)
    (dz,) = torch.autograd.grad(h.sum(), z)
    got = next(n for n in DEMOS["tour-04"].build().nodes if n.var_name == "z").grad_value.data
    assert got == pytest.approx(dz.tolist(), rel=1e-6)
    assert sum(n.label == "sigmoid" for n in DEMOS["tour-04"].build().nodes) == 4
    g6 = DEMOS["tour-06"].build()
    assert any("earlier backward" in f.message for f in g6.findings)
    assert "mul" in {n.label for n in DEMOS["tour-07"].build().nodes}
    torch.manual_seed(3)
    mlp = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1))
    x, t = torch.randn(8, 3), torch.randn(8, 1)
    grads = torch.autograd.grad(nn.functional.mse_loss(mlp(x), t), list(mlp.parameters()))
    g8 = DEMOS["tour-08"].build()
    for (pname, _), g in zip(mlp.named_parameters(), grads):
        assert g8.find(pname).grad.norm == pytest.approx(g.norm().item(), rel=1e-5)
    g9 = DEMOS["tour-09"].build()
    assert sum(n.label == "sigmoid" for n in g9.nodes) == 3 * 3
    torch.manual_seed(0)
    cell, head = nn.LSTMCell(2, 3), nn.Linear(3, 1)
    xs = torch.randn(3, 1, 2)
    hh = c = xs.new_zeros(1, 3)
    for step in xs:
        hh, c = cell(step, (hh, c))
    (gw,) = torch.autograd.grad(head(hh).pow(2).sum(), [cell.weight_hh])
    assert g9.find("cell.weight_hh").grad.norm == pytest.approx(gw.norm().item(), rel=1e-5)
    torch.manual_seed(0)
    q, k, v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
    xa = torch.randn(3, 4).requires_grad_()
    out = torch.softmax(q(xa) @ k(xa).T / 2.0, dim=-1) @ v(xa)
    (gx,) = torch.autograd.grad(out.pow(2).mean(), xa)
    g10 = DEMOS["tour-10"].build()
    node = next(n for n in g10.nodes if n.var_name == "x")
    assert len(g10.consumers(node.id)) == 3
    assert node.grad.norm == pytest.approx(gx.norm().item(), rel=1e-5)
