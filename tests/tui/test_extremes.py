"""Extreme gradients (Inf, NaN, 1e300, 0, 1e-300) in every view: drawn, clipped and marked."""

from __future__ import annotations

import math

from rich.console import Console
from textual.widgets import Static
from textual_plot.plot_widget import ScatterPlot

from graphscope.health import Health, Thresholds
from graphscope.tui.widgets import flow
from graphscope.tui.widgets.details import NodeDetails
from graphscope.tui.widgets.flow import GradientFlow
from graphscope.tui.widgets.graph_tree import GraphTree
from graphscope.tui.widgets.local_graph import LocalGraph
from tests.graphs import EXTREMES, extreme_stats, extremes

LAYER = {name: i for i, name in enumerate(EXTREMES, 1)}
"""Layer number (1-based, forward order) of each kind of extreme gradient in ``extremes()``."""


def _text(renderable) -> str:
    console = Console(width=200, record=True)
    console.print(renderable)
    return console.export_text()


_HEALTH = Health(thresholds=Thresholds())


def _layers(pairs) -> list[flow.Layer]:
    return [flow.Layer.of(name, stats, _HEALTH.band(stats)) for name, stats in pairs]


def _param(app, name: str) -> int:
    return next(n.id for n in app.graph.nodes if n.names == (f"{name}.weight",))


SHOWN = {"inf": "inf", "nan": "nan", "huge": "1.00e+300", "zero": "0", "tiny": "1.00e-300",
         "overflowed": "inf", "neg_inf": "inf"}
"""How the tree and the details write each extreme parameter's RMS."""


def test_every_view_survives_extreme_gradients(drive, monkeypatch, tmp_path):
    """Tabs 1, 2 and 3 on every node, findings, search, regrouping and export keep running, and
    the tree and details write each extreme RMS (inf, nan, 1.00e+300, 0, 1.00e-300)."""
    monkeypatch.chdir(tmp_path)

    async def steps(pilot):
        app = pilot.app
        tree = app.screen.query_one(GraphTree)
        await pilot.press("3")
        await pilot.pause()
        for tab in "12":
            await pilot.press(tab)
            for node in range(len(app.graph.nodes)):
                tree.reveal(node)
                await pilot.pause()
                assert app.is_running and tree.current == node
        local = app.screen.query_one(LocalGraph)
        assert local.node == len(app.graph.nodes) - 1
        await pilot.press("1")
        for name, value in SHOWN.items():
            tree.reveal(_param(app, name))
            await pilot.pause()
            assert f"● {value}" in str(tree.cursor_node.label), name
            assert f"rms {value} (" in _text(app.screen.query_one("#details-body", Static).content)
        assert "Inf x16" in _text(app.screen.query_one(NodeDetails).query_one(Static).content)
        await pilot.press("n", "n", "slash", *"nan", "enter", "escape", "g", "e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert app.is_running
        assert not [n for n in app._notifications if n.severity == "error"]
    drive(extremes(), steps)
    assert (tmp_path / "test.svg").read_text().lstrip().startswith("<?xml")


def test_flow_plot_marks_clipped_and_nonfinite_layers(drive):
    """Tab 3: NaN/Inf at the top as ×, 1e300 and overflow at the top as ▲, 0 and 1e-300 at the
    bottom as ▼, each mark explained under the plot; the axis limits stay finite."""
    async def steps(pilot):
        await pilot.press("3")
        await pilot.pause()
        assert pilot.app.is_running
        plot = pilot.app.screen.query_one("#flow-plot")
        lo, hi = plot._y_min, plot._y_max
        assert math.isfinite(lo) and math.isfinite(hi) and lo < hi
        marks: dict[str, dict[int, float]] = {}
        for d in plot._datasets:
            if isinstance(d, ScatterPlot):
                marks.setdefault(d.marker, {}).update(zip(map(int, d.x), map(float, d.y)))
        assert set(marks[flow.NONFINITE]) == {LAYER["inf"], LAYER["nan"], LAYER["neg_inf"]}
        assert set(marks[flow.ABOVE]) == {LAYER["huge"], LAYER["overflowed"]}
        assert set(marks[flow.BELOW]) == {LAYER["zero"], LAYER["tiny"]}
        assert set(marks[flow.ON_SCALE]) == {LAYER["healthy"]}
        for mark in (flow.NONFINITE, flow.ABOVE):
            assert all(hi - 0.1 * (hi - lo) < y < hi for y in marks[mark].values())
        assert all(lo < y < lo + 0.1 * (hi - lo) for y in marks[flow.BELOW].values())
        legend = _text(pilot.app.screen.query_one("#flow-names", Static).content)
        for mark, words in ((flow.NONFINITE, "NaN or Inf"), (flow.ABOVE, "above the scale"),
                            (flow.BELOW, "zero or below")):
            assert any(mark in line and words in line for line in legend.splitlines()), words
        for value in ("inf", "nan", "1.00e+300", "1.00e-300", "nonfinite"):
            assert value in legend
    drive(extremes(), steps, size=(120, 40))


def test_flow_picture_with_only_nonfinite_layers_is_still_drawn():
    """No finite gradient at all: every layer is marked at the top of a finite, default window."""
    layers = _layers([("a", extreme_stats(float("nan"))), ("b", extreme_stats(float("inf"))),
                      ("c", extreme_stats(float("inf"), counted=False))])
    pic = flow.picture(layers, _HEALTH)
    assert [p.layer for p in pic.points] == [1, 2, 3]
    assert [p.mark for p in pic.points] == [flow.NONFINITE, flow.NONFINITE, flow.ABOVE]
    assert math.isfinite(pic.lo) and math.isfinite(pic.hi)
    assert pic.lo < math.log10(Thresholds().vanishing_rms) < math.log10(Thresholds().exploding_rms) < pic.hi
    assert all(pic.lo < p.y < pic.hi for p in pic.points)


def test_flow_picture_clips_far_values_and_keeps_the_scale_readable():
    """1e300 and 1e-300 beside healthy layers: they are clipped to the edges, the window stays
    within a few decades of the limits instead of spanning 600 of them."""
    layers = _layers([("a", extreme_stats(1e-300)), ("b", extreme_stats(0.1)),
                      ("c", extreme_stats(1e300)), ("d", extreme_stats(1e-3))])
    pic = flow.picture(layers, _HEALTH)
    assert [p.mark for p in pic.points] == [flow.BELOW, flow.ON_SCALE, flow.ABOVE, flow.ON_SCALE]
    assert pic.hi - pic.lo < 40
    assert pic.points[1].y == -1.0 and pic.points[3].y == -3.0


def test_axis_ticks_on_an_infinite_range_do_not_raise():
    """The y-axis formatter gives no ticks (rather than OverflowError) for an infinite range."""
    ticks = flow._PowerOfTen().get_ticks(7.39, float("inf"))
    assert all(math.isfinite(t) for t in ticks)
    assert flow._PowerOfTen().get_ticks(float("nan"), 3.0) == []


def test_long_legend_keeps_the_nonfinite_layers():
    """With more layers than the legend names, the NaN/Inf layers are still listed by name."""
    pairs = [(f"layer{i}", extreme_stats(0.1)) for i in range(60)]
    pairs[30] = ("broken", extreme_stats(float("nan")))
    text = _text(GradientFlow(_layers(pairs), health=_HEALTH)._legend())
    assert "broken" in text and "nan" in text
