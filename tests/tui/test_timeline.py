"""The run timeline driven with Pilot: the cursor, the numbers shown, captures, comparing two
steps, follow mode; and the heatmap's buckets keeping their worst value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np
import pytest
from textual.pilot import Pilot

from graphscope.formatting import fmt_num
from graphscope.health import Band, Health, Thresholds
from graphscope.runs import RunWriter, open_run
from graphscope.trends import analyze
from graphscope.tui.app import InspectorApp
from graphscope.tui.history import History, columns, fmt_ratio, worst
from graphscope.tui.screens.main import MainScreen
from graphscope.tui.screens.timeline import TimelineScreen
from graphscope.tui.widgets.heatmap import Heatmap
from graphscope.tui.widgets.step_table import StepSummary, StepTable
from tests.tui.runs import diverging_run, params, record


@pytest.fixture(scope="module")
def run_path(tmp_path_factory) -> Path:
    return diverging_run(tmp_path_factory.mktemp("runs") / "diverging")


@pytest.fixture
def timeline(drive) -> Callable[..., InspectorApp]:
    """Run ``steps(pilot)`` against the inspector on the run at ``path``; return the app."""

    def run(path: Path, steps: Callable[[Pilot], Awaitable[None]], *, follow: bool = False) -> InspectorApp:
        with open_run(path) as store:
            return drive(InspectorApp.for_run(store, source="diverging", follow=follow), steps)

    return run


def _cell(table: StepTable, row: str, column: int) -> str:
    return str(table.get_row(row)[column]).strip()


def _heat(pilot: Pilot) -> Heatmap:
    return pilot.app.screen.query_one(Heatmap)


def test_opens_on_the_first_finding_with_its_numbers(run_path, timeline):
    """The timeline opens on the first finding's step and shows that step's stored numbers."""
    with open_run(run_path) as run:
        first = analyze(run)[0].step
        series = run.param_series()

    async def steps(pilot):
        assert isinstance(pilot.app.screen, TimelineScreen)
        assert _heat(pilot).cursor == first
        table = pilot.app.screen.query_one(StepTable)
        row = series.row_of(first)
        for p in params():
            assert _cell(table, p.name, 1) == fmt_num(float(series.norm[row, p.idx]))
            assert _cell(table, p.name, 3) == fmt_num(float(series.absmax[row, p.idx]))
    timeline(run_path, steps)


def test_keys_move_the_cursor_and_the_numbers_follow(run_path, timeline):
    """home/right/end/page keys move the cursor; the table shows the new step's RMS."""
    with open_run(run_path) as run:
        series = run.param_series()

    async def steps(pilot):
        heat = _heat(pilot)
        await pilot.press("home", "right", "right")
        assert heat.cursor == 3
        await pilot.press("left")
        assert heat.cursor == 2
        await pilot.press("pagedown")
        assert heat.cursor == 32
        await pilot.press("end")
        await pilot.pause()
        assert heat.cursor == 300
        await pilot.press("home", *["right"] * 9)
        await pilot.pause()
        assert heat.cursor == 10
        table = pilot.app.screen.query_one(StepTable)
        w = params()[6]  # fc2.weight: RMS is its norm over sqrt(32)
        assert _cell(table, w.name, 2) == fmt_num(float(series.norm[9, w.idx]) / math.sqrt(w.numel))
        assert "step 10" in str(pilot.app.screen.query_one(StepSummary).render())
    timeline(run_path, steps)


def test_n_and_N_jump_between_findings(run_path, timeline):
    """n/N move to the next/previous step a finding over time starts at."""
    with open_run(run_path) as run:
        starts = sorted({f.step for f in analyze(run)})
    assert len(starts) >= 3

    async def steps(pilot):
        heat = _heat(pilot)
        await pilot.press("n")
        assert heat.cursor == starts[1]
        await pilot.press("n")
        assert heat.cursor == starts[2]
        await pilot.press("N")
        assert heat.cursor == starts[1]
    timeline(run_path, steps)


def test_enter_opens_the_steps_capture_and_escape_returns(run_path, timeline):
    """enter on a captured step pushes the graph inspector on that capture; escape comes back."""
    with open_run(run_path) as run:
        expected = run.capture(100).to_dict()

    async def steps(pilot):
        heat = _heat(pilot)
        await pilot.press("home", "c", "c")
        assert heat.cursor == 100
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(pilot.app.screen, MainScreen)
        assert pilot.app.screen.graph.to_dict() == expected
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(pilot.app.screen, TimelineScreen)
        assert _heat(pilot).cursor == 100
    timeline(run_path, steps)


def test_enter_on_a_step_without_capture_stays_on_the_timeline(run_path, timeline):
    """enter where no full capture was kept says so, points to c/C, and stays."""
    async def steps(pilot):
        await pilot.press("home", "enter")
        await pilot.pause()
        assert isinstance(pilot.app.screen, TimelineScreen)
        said = [n.message for n in pilot.app._notifications]
        assert said == ["step 1 has no full capture; c/C jump to the captured steps"]
    timeline(run_path, steps)


def test_mark_and_move_compares_two_steps_layer_by_layer(run_path, timeline):
    """m marks a step; moving on shows each layer's RMS at both and their ratio."""
    with open_run(run_path) as run:
        layers = run.layer_series()

    async def steps(pilot):
        await pilot.press("end", *["left"] * 50)  # step 250
        await pilot.press("m")
        await pilot.press("end", *["left"] * 10)  # step 290
        await pilot.pause()
        table = pilot.app.screen.query_one(StepTable)
        assert [str(c.label) for c in table.columns.values()][1:3] == ["RMS at 250", "RMS at 290"]
        for j, name in enumerate(layers.names):
            a, b = layers.rms[249, j], layers.rms[289, j]
            assert _cell(table, name, 3) == fmt_ratio(b / a)
        await pilot.press("escape")
        await pilot.pause()
        assert [str(c.label) for c in table.columns.values()][0] == "parameter"
    timeline(run_path, steps)


def test_follow_picks_up_steps_written_after_opening(tmp_path, timeline):
    """With follow, a step committed while the timeline is open appears, and the cursor stays
    on the newest step."""
    ps = params()
    writer = RunWriter(tmp_path / "live", ps)
    for step in range(1, 11):
        writer.add_step(record(step, ps, diverge=1000, nan_from=1000))
    writer.flush()

    async def steps(pilot):
        heat = _heat(pilot)
        await pilot.press("end")
        assert heat.cursor == 10
        writer.add_step(record(11, ps, diverge=1000, nan_from=1000))
        writer.flush()
        await pilot.pause(1.6)
        assert heat.history.last == 11
        assert heat.cursor == 11
        assert "step 11" in str(pilot.app.screen.query_one(StepSummary).render())
    try:
        timeline(tmp_path / "live", steps, follow=True)
    finally:
        writer.close()


def test_a_bucket_shows_its_worst_step_not_its_mean(tmp_path):
    """One exploding step among hundreds, decimated into a stored row, still colours its column."""
    ps = params()
    writer = RunWriter(tmp_path / "spike", ps, window=64, bucket=8)
    for step in range(1, 401):
        rec = record(step, ps, diverge=10_000, nan_from=10_000)
        if step == 101:
            rec.norms[6] = 1.3e7  # fc2.weight: its layer RMS 2e6, just past the exploding limit (1e6)
        writer.add_step(rec)
    writer.close()
    with open_run(tmp_path / "spike") as run:
        history = History(run)
        assert history.series.n[history.series.row_of(101)] > 1  # decimated
        cells = history.cells(40)
        fc2 = history.layers.names.index("fc2")
        c = cells.column_of(101)
        assert cells.bands[fc2][c] is Band.EXPLODING
        assert cells.bands[fc2][c + 1] is Band.HEALTHY
        assert {b for row in cells.bands for b in row} == {Band.HEALTHY, Band.EXPLODING}


def test_bucket_judgement_and_columns():
    """A bucket is NaN before exploding before vanishing; columns cover every step once."""
    h = Health(thresholds=Thresholds())
    lo, hi = np.array([1e-9, 1e-3]), np.array([1e-2, 1e7])
    assert worst(lo, hi, True, h)[1] is Band.NONFINITE
    assert worst(lo, hi, False, h) == (1e7, Band.EXPLODING)
    assert worst(lo, np.array([1e-2, 1e-1]), False, h) == (1e-9, Band.VANISHING)
    a, b = columns(1, 1000, 37)
    assert a[0] == 1 and b[-1] == 1000 and (a[1:] == b[:-1] + 1).all()


def test_opens_at_80_columns(run_path, snap_compare):
    """At 80x24: curves, heatmap with marks and cursor, the step's summary and table, keys."""
    with open_run(run_path) as run:
        assert snap_compare(InspectorApp.for_run(run, source="diverging"), terminal_size=(80, 24))


def test_compare_at_80_columns(run_path, snap_compare):
    """At 80x24, two steps compared: the ratio table and both steps marked on the heatmap."""
    with open_run(run_path) as run:
        assert snap_compare(InspectorApp.for_run(run, source="diverging"), terminal_size=(80, 24),
                            press=["end", *["left"] * 100, "m", "end", *["left"] * 10])


def test_a_multi_rank_run_opens_on_the_rank_that_went_wrong_first_and_r_switches(tmp_path, drive):
    """Of a run written by two ranks, the timeline opens on the rank whose NaN came first (the
    header says so); r shows the other rank at the same step, R comes back."""
    ps = params()
    path = tmp_path / "ranks"
    for rank, nan_from in ((0, 60), (1, 40)):
        w = RunWriter(path, ps, rank=rank, meta={"model": "Diverging"})
        for step in range(1, 81):
            rec = record(step, ps, diverge=1000, nan_from=nan_from)
            rec.rank = rank
            w.add_step(rec)
        w.close()
    seen = []

    async def steps(pilot: Pilot) -> None:
        seen.append((pilot.app.screen.history.rank, _heat(pilot).cursor, pilot.app.sub_title))
        await pilot.press("r")
        await pilot.pause()
        seen.append((pilot.app.screen.history.rank, _heat(pilot).cursor, pilot.app.sub_title))
        await pilot.press("R")
        await pilot.pause()
        seen.append((pilot.app.screen.history.rank, _heat(pilot).cursor, pilot.app.sub_title))

    with open_run(path) as store:
        drive(InspectorApp.for_run(store, source="ranks"), steps)
    assert [(r, c) for r, c, _ in seen] == [(1, 40), (0, 40), (1, 40)]
    assert "rank 1 of 2 (went wrong first)" in seen[0][2]
    assert "rank 0 of 2 · rank 1 went wrong first" in seen[1][2]
