"""The inspector at 80x24 with a demo's lesson banner (and at 200x50): the flow plot has rows
of data, the neighbours picture is whole (scrollable, not cut), the header keeps the counts."""

from __future__ import annotations

import pytest
from textual.widgets import TabbedContent
from textual_plot import PlotWidget

from graphscope.model import LEAF, PARAM, Severity
from graphscope.tui.widgets.graph_tree import GraphTree
from graphscope.tui.widgets.local_graph import LocalGraph
from tests.graphs import Builder, sigmoid_mlp

LESSON = ("Each layer multiplies the gradient by about 0.5 * sqrt(32) = 2.8, so it explodes "
          "toward the input.")


def _with_lesson(graph):
    graph.meta["lesson"] = LESSON
    return graph


def fan_out():
    """loss = add(view(x), view(x), view(x), x): the input x (node 5) has four consumers."""
    b = Builder()
    loss = b.add("SumBackward0", "sum", shapes=((),), root=True, rms=1.0)
    add = b.add("AddBackward0", "add", rms=0.5)
    views = [b.add("ViewBackward0", "view", module=m, rms=0.2) for m in ("q", "k", "v")]
    x = b.add("AccumulateGrad", "x", kind=LEAF, rms=0.4)
    w = b.add("AccumulateGrad", "w", kind=PARAM, names=("w",), rms=0.1)
    b.edge(add, loss)
    for k, v in enumerate(views):
        b.edge(v, add, input_nr=k)
        b.edge(x, v)
    b.edge(x, add, input_nr=3)
    b.edge(w, add, input_nr=4)
    b.finding("exploding", Severity.WARNING, add, "a warning to count")
    return b.graph()


def _data_rows(plot: PlotWidget) -> int:
    """Rows of the plot's canvas inside its frame: where the points are drawn."""
    return plot.size.height - plot.margin_top - plot.margin_bottom - 2


@pytest.mark.parametrize("size, rows", [((80, 24), 4), ((200, 50), 20)])
def test_flow_plot_has_rows_of_data_beside_the_lesson(drive, size, rows):
    """With the lesson banner the flow tab's plot keeps several rows of data (one at 80x24 with
    the old heights), and its y axis has no more ticks than it has rows for."""
    async def steps(pilot):
        assert pilot.app.screen.query("#lesson")
        await pilot.press("3")
        await pilot.pause()
        plot = pilot.app.screen.query_one("#flow-plot", PlotWidget)
        assert _data_rows(plot) >= rows
        ticks = plot._y_formatter.get_ticks(plot._y_min, plot._y_max)
        assert 2 <= len(ticks) <= (_data_rows(plot) + 2) // 2
    drive(_with_lesson(sigmoid_mlp()), steps, size=size)


@pytest.mark.parametrize("size", [(80, 24), (200, 50)])
def test_neighbours_picture_is_whole_and_scrolls(drive, size):
    """The neighbours of a node with four consumers are all in the picture (drawn or '+N
    more'), the pane scrolls over the whole of it, nothing cut at the pane's edge."""
    async def steps(pilot):
        await pilot.press("2")
        pilot.app.screen.query_one(GraphTree).reveal(5)
        await pilot.pause()
        assert pilot.app.screen.query_one(TabbedContent).active == "tab-local"
        local = pilot.app.screen.query_one(LocalGraph)
        assert local.node == 5
        full = local._console_graph.full_viewport
        assert (local.virtual_size.width, local.virtual_size.height) == (full.width, full.height)
        text = "\n".join("".join(seg.text for seg in strip) for strip in local._strip_segments)
        consumers = [k for k in local._graph_nodes if k in (1, 2, 3, 4)]
        more = "more-out" in local._graph_nodes
        assert len(consumers) + more >= 2
        for k in consumers:
            assert local._graph_nodes[k]["text"].plain.split("\n")[0] in text
        if more:
            assert f"+{4 - len(consumers)} more" in text
        # Every box's right border is in the picture: nothing cut off on the right.
        assert max(len(line.rstrip()) for line in text.splitlines()) <= full.width
    drive(_with_lesson(fan_out()), steps, size=size)


def test_header_keeps_the_warning_count_at_80x24(drive):
    """The header's first 80 columns still say how many warnings there are."""
    async def steps(pilot):
        from textual.widgets._header import HeaderTitle

        title = pilot.app.screen.query_one(HeaderTitle)
        shown = title.render()
        plain = getattr(shown, "plain", str(shown))
        visible = plain[: title.size.width]
        assert "1 warning" in visible
    drive(_with_lesson(fan_out()), steps, size=(80, 24))
