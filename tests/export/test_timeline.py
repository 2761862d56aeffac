"""The timeline picture's heatmap values: the worst of a decimated stretch, each step's loss
scale divided out, a NaN gradient told from none; and the picture itself written by suffix."""

from __future__ import annotations

import math

import numpy as np
import pytest

from graphscope.export.timeline import draw_timeline, heat_grid
from graphscope.runs import NO_GRAD, RunParam, RunWriter, StepRecord, open_run

PARAMS = [RunParam(0, "a.weight", "a", (10, 10), 100), RunParam(1, "b.weight", "b", (10, 10), 100)]


def _run(path, steps, *, scale=None, window=4096, bucket=32):
    w = RunWriter(path, PARAMS, window=window, bucket=bucket)
    for s, norms in steps:
        n = np.asarray(norms, dtype=float)
        w.add_step(StepRecord(s, 1e9 + s, 1.0, math.nan if np.isnan(n).any() else float(np.sqrt((n[n >= 0] ** 2).sum())),
                              n, n, np.zeros(2), loss_scale=scale,
                              nonfinite_params={i: 1 for i in range(2) if math.isnan(n[i])}))
    w.close()
    return open_run(path)


def test_a_loss_scale_is_divided_out_of_each_step(tmp_path):
    """With a GradScaler scale of 2**16, a scaled RMS of 1e7 (beyond the 1e6 limit) is drawn as
    its true 152.6, the colour a healthy gradient gets."""
    run = _run(tmp_path / "run", [(1, [1e8, 1e8])], scale=65536.0)
    names, grid, present = heat_grid(run.layer_series(), run.steps())
    assert names == ["a", "b"]
    assert grid[0, 0] == pytest.approx(1e8 / 10 / 65536.0)


def test_a_decimated_stretch_shows_its_spike_and_nan_is_not_absence(tmp_path):
    """A one-step spike inside a decimated stretch is the stretch's value; a NaN gradient is
    present (drawn non-finite) where a missing one is not."""
    steps = [(s, [1.0, 1.0]) for s in range(1, 41)]
    steps[4] = (5, [1000.0, 1.0])
    steps.append((41, [math.nan, NO_GRAD]))
    run = _run(tmp_path / "run", steps, window=8, bucket=8)
    names, grid, present = heat_grid(run.layer_series(), run.steps())
    assert grid[0, 0] == pytest.approx(1000.0 / 10)  # the first stretch holds step 5
    assert present[-1].tolist() == [True, False] and math.isnan(grid[-1, 0])
    out = draw_timeline(run, tmp_path / "t.svg")
    assert "<svg" in out.read_text()[:500]
    with pytest.raises(ValueError, match=".svg, .png or .pdf"):
        draw_timeline(run, tmp_path / "t.gif")
