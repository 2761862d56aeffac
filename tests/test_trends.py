"""graphscope.trends on run stores written by RunWriter (no torch): divergence found early and
only when real, GradScaler skips, update ratios judged by what they do, accumulation named."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from graphscope.model import Severity
from graphscope.runs import RunParam, RunWriter, StepRecord, open_run
from graphscope.trends import analyze

LAYERS = ("fc0", "fc1", "head")


def _params() -> list[RunParam]:
    out = []
    for layer in LAYERS:
        for kind, shape in (("weight", (8, 4)), ("bias", (8,))):
            out.append(RunParam(len(out), f"{layer}.{kind}", layer, shape, math.prod(shape),
                                group=0))
    return out


def _write(folder: Path, losses, norms, *, scales=None, accumulating=None, updates=None,
           meta=None, lrs=None) -> Path:
    """A run whose step k (from 1) has loss ``losses[k-1]`` and per-parameter gradient norms
    ``norms[k-1]`` (one row of 6; NaN rows are non-finite gradients)."""
    ps = _params()
    w = RunWriter(folder, ps, meta={"model": "Test", **(meta or {})})
    for i, (loss, row) in enumerate(zip(losses, norms)):
        row = np.asarray(row, dtype=float)
        bad = ~np.isfinite(row)
        w.add_step(StepRecord(
            step=i + 1, time=1000.0 + i, loss=float(loss),
            grad_norm=float(np.sqrt((row ** 2).sum())), norms=row, absmax=row / 2,
            zero_frac=np.zeros(len(ps)), nonfinite=int(bad.sum()),
            nonfinite_params={int(j): 1 for j in np.flatnonzero(bad)},
            accumulating=0 if accumulating is None else accumulating[i],
            lr=[0.1 if lrs is None else lrs[i]],
            loss_scale=None if scales is None else scales[i]))
    for step, ratios in (updates or {}).items():
        w.add_updates(step, np.full(len(ps), ratios))
    w.close()
    return folder


def _healthy(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy converging run: loss falling with 30% batch noise, gradient norms with 50%."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    loss = 2.0 * np.exp(-t / 80) + 0.1
    loss = loss * rng.lognormal(0, 0.3, n)
    norms = np.outer(np.exp(-t / 200), np.linspace(1, 2, 6)) * rng.lognormal(0, 0.5, (n, 6))
    return loss, norms


def _found(run_path: Path, kind: str):
    with open_run(run_path) as run:
        return [f for f in analyze(run) if f.kind == kind]


def _warnings(run_path: Path):
    with open_run(run_path) as run:
        return [f for f in analyze(run) if f.severity >= Severity.WARNING]


def test_a_fast_divergence_is_found_two_steps_after_it_starts(tmp_path):
    """Gradient norm x20 a step with the loss rising: found 2 steps in, before the NaN."""
    loss, norms = _healthy(30)
    for k in range(20, 26):
        loss[k], norms[k] = loss[19] * 10 ** (k - 19), norms[19] * 20 ** (k - 19)
    loss[26:], norms[26:] = math.inf, math.nan
    (div,) = _found(_write(tmp_path / "r", loss, norms), "divergence")
    assert div.step == 21 and div.found_at == 22 and div.severity == Severity.WARNING
    assert "5 steps before the values became non-finite (step 27)" in div.message


def test_a_sustained_divergence_needs_four_growing_steps(tmp_path):
    """Gradient norm x2 a step (too slow for the fast rule): found once 4 growing steps make 10x."""
    loss, norms = _healthy(40)
    for k in range(20, 40):
        loss[k], norms[k] = loss[19] * 1.5 ** (k - 19), norms[19] * 2.0 ** (k - 19)
    (div,) = _found(_write(tmp_path / "r", loss, norms), "divergence")
    assert div.step == 21 and div.found_at == 24


def test_a_loss_that_blows_up_and_stays_finite_is_a_divergence(tmp_path):
    """Loss and gradient norm 1e6x their first step's from step 2 on (Adam at a huge lr): a
    divergence found after 5 such steps, with no NaN at all."""
    loss, norms = _healthy(20)
    loss[1:] *= 1e6
    norms[1:] *= 1e6
    (div,) = _found(_write(tmp_path / "r", loss, norms), "divergence")
    assert div.step == 2 and div.found_at == 6 and "stayed" in div.message


def test_divergence_names_the_parameters_whose_gradient_grew_most(tmp_path):
    """The finding's parameters are the fastest-growing gradients over the divergence."""
    loss, norms = _healthy(30)
    for k in range(20, 30):
        loss[k] = loss[19] * 10 ** (k - 19)
        norms[k] = norms[19] * np.array([1, 1, 1, 1, 50, 1]) ** (k - 19) * 1.01
    (div,) = _found(_write(tmp_path / "r", loss, norms), "divergence")
    assert div.params[0] == "head.weight"


def test_healthy_noisy_runs_and_one_spike_get_no_warning(tmp_path):
    """300 steps of noisy converging training, with one 30x spike: a spike (info), no warning."""
    for seed in range(5):
        loss, norms = _healthy(300, seed)
        norms[150] *= 30
        loss[150] *= 3
        path = _write(tmp_path / f"r{seed}", loss, norms)
        assert not _warnings(path), seed
        assert [f.severity for f in _found(path, "spike")] == [Severity.INFO]


def test_gradscaler_skipped_steps_are_info_and_endless_skips_an_error(tmp_path):
    """Overflowing scaled gradients with a finite loss while the scale halves are skipped steps
    (info); overflowing on 20 steps in a row is non-finite at any scale (an error)."""
    loss, norms = _healthy(30)
    scales = [65536.0 / 2 ** min(k, 4) for k in range(30)]
    norms[:4] = math.nan
    path = _write(tmp_path / "skips", loss * scales, norms, scales=scales)
    assert not _warnings(path)
    assert [f.severity for f in _found(path, "skipped_steps")] == [Severity.INFO]
    norms[:20] = math.nan
    (bad,) = _found(_write(tmp_path / "endless", loss * scales, norms, scales=scales), "nonfinite")
    assert bad.severity == Severity.ERROR and bad.step == 17


def test_a_large_update_ratio_warns_only_when_it_does_harm(tmp_path):
    """Ratio 0.2 with a falling loss is info; with a loss that does not fall, or a ratio of 2
    (the update outweighs the weight), a warning."""
    loss, norms = _healthy(30)
    updates = {1: 0.2, 11: 0.2, 21: 0.2}
    (f,) = _found(_write(tmp_path / "fell", loss, norms, updates=updates), "update_ratio")
    assert f.severity == Severity.INFO
    flat = np.full(30, 2.0)
    (f,) = _found(_write(tmp_path / "flat", flat, norms, updates=updates), "update_ratio")
    assert f.severity == Severity.WARNING
    (f,) = _found(_write(tmp_path / "huge", loss, norms, updates={1: 2.0}), "update_ratio")
    assert f.severity == Severity.WARNING


def test_accumulation_over_every_parameter_names_them(tmp_path):
    """.grad carried over steps by every parameter with a gradient: the finding names them all."""
    loss, norms = _healthy(12)
    (f,) = _found(_write(tmp_path / "r", loss, norms, accumulating=[0] + [6] * 11), "accumulating")
    assert f.step == 2 and f.found_at == 4 and len(f.params) == 6


def _zigzag(n: int, start: int, rise: float, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A noisy converging run whose loss, from step ``start + 1``, rises ``rise`` x a step
    (its gradient norm sqrt(rise) x) while every other step falls back to a quarter (half):
    SGD with momentum at too high a learning rate, overshooting back and forth."""
    loss, norms = _healthy(n, seed)
    for k in range(start, n):
        up = rise ** (k - start + 1)
        low = k % 2 == 1
        loss[k] = loss[start - 1] * up * (0.25 if low else 1.0)
        norms[k] = norms[start - 1] * math.sqrt(up) * (0.5 if low else 1.0)
    return loss, norms


def test_a_divergence_rising_in_a_zigzag_is_found_before_the_nan(tmp_path):
    """Loss and gradient norm rising 1.5x a step but falling every other step (no two growing
    steps in a row, so no geometric stretch): found from medians over 6 steps, several steps
    before the values become non-finite, from the step the rise began."""
    loss, norms = _zigzag(60, 30, 1.5)
    loss[50:], norms[50:] = math.inf, math.nan
    up = (np.diff(loss[29:50]) > 0) & (np.diff(norms[29:50, 0]) > 0)
    assert not (up[1:] & up[:-1]).any()  # the rise has no run of growing steps
    (div,) = _found(_write(tmp_path / "r", loss, norms), "divergence")
    assert div.severity == Severity.WARNING
    assert 30 <= div.step <= 34 and div.found_at <= 51 - 5
    assert "swinging up and down" in div.message and "non-finite (step 51)" in div.message


def test_a_zigzag_divergence_names_momentum_and_the_growing_learning_rate(tmp_path):
    """With the optimizer's momentum in the run's meta, the hint gives the effective learning
    rate lr / (1 - momentum), and the schedule's growth when the learning rate had risen."""
    loss, norms = _zigzag(50, 30, 1.5)
    lrs = [0.01 * 1.05 ** k for k in range(50)]
    path = _write(tmp_path / "r", loss, norms, meta={"optimizer": {"name": "SGD", "momentum": [0.9]}},
                  lrs=lrs)
    (div,) = _found(path, "divergence")
    assert "momentum 0.9" in div.hint and "lr / (1 - momentum) = 10x" in div.hint
    assert f"lr {lrs[div.step - 1]:.3g}" in div.hint
    assert "the learning rate grew 0.01 ->" in div.hint


def test_a_healthy_zigzag_and_a_loss_bump_are_not_a_divergence(tmp_path):
    """Momentum's back-and-forth on a falling loss (3x swings), and a loss that rises 3x over
    its start for a while with a flat gradient norm, get no warning."""
    for seed in range(5):
        loss, norms = _healthy(200, seed)
        swing = np.where(np.arange(200) % 2 == 1, 3.0, 1.0)
        path = _write(tmp_path / f"zig{seed}", loss * swing, norms * np.sqrt(swing)[:, None])
        assert not _warnings(path), seed
        loss, norms = _healthy(200, seed)
        loss[20:60] *= 3 * np.exp(np.arange(40) / 80)
        norms[20:60] *= 2
        assert not _warnings(_write(tmp_path / f"bump{seed}", loss, norms)), seed
