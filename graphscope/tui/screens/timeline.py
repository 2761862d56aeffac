"""The timeline of a recorded run: loss and gradient-norm curves, the layers x steps heatmap with
its marks, and the numbers of the step under the cursor.

It composes the widgets and routes their messages: the heatmap owns the cursor and says when it
moved; the screen shows that step in the curves, the summary and the table. ``enter`` opens the
step's full capture in the graph inspector (``MainScreen``; escape comes back); ``m`` marks a
step to compare the cursor's with, layer by layer. With ``follow`` the run is read again every
second while training writes it.
"""

from __future__ import annotations

from textual import on
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Header, Input

from graphscope.diagnostics import rediagnose
from graphscope.errors import RunError
from graphscope.health import Thresholds
from graphscope.tui.history import History
from graphscope.tui.screens.main import MainScreen, headline
from graphscope.tui.widgets.curves import Curves
from graphscope.tui.widgets.heatmap import Heatmap
from graphscope.tui.widgets.step_table import StepSummary, StepTable, summary

POLL_S = 1.0
"""How often ``follow`` reads the run again."""


class CaptureScreen(MainScreen):
    """The graph inspector on a run's full capture, pushed over the timeline: escape returns
    (after closing the search box, when it is open)."""

    BINDINGS = [Binding("escape", "close_search", "Timeline")]

    def __init__(self, graph, *, stem: str, step: int, source: str = "run") -> None:
        super().__init__(graph, stem=stem)
        self.step = step
        # The header names the step shown, not the run's totals the timeline showed.
        self.sub_title = headline(graph, f"{source} step {step:,}")

    def action_close_search(self) -> None:
        if self.query_one("#search", Input).has_class("-shown"):
            super().action_close_search()
        else:
            self.dismiss()


TIMELINE_KEYS = [
    ("← →", "the previous / next step (a click on the heatmap moves there too)"),
    ("page up  page down", "a tenth of the run back / forward"),
    ("home  end", "the first / last step"),
    ("n  N", "next / previous step where a finding starts (● marks)"),
    ("c  C", "next / previous full capture (◆ marks)"),
    ("enter", "open the step's full capture in the graph inspector (esc comes back)"),
    ("m", "mark this step; move on and the table compares the two (m or esc: unmark)"),
    ("↑ ↓", "scroll the table of parameters"),
    ("r  R", "next / previous rank of a multi-process run"),
    ("?", "this help"),
    ("q", "quit"),
]

TIMELINE_READING = (
    "Reading the timeline: the curves are the loss and the total gradient norm per step, on a "
    "log scale (their colours are those of their names in the summary line). Below them each "
    "layer's gradient RMS per step, two layers a row (upper/lower half of each cell, named "
    "'upper/lower' on the left), coloured blue (vanishing) through green and orange to red "
    "(exploding); magenta means NaN or Inf. ▲ is the step shown below, △ the marked one."
)


class TimelineScreen(Screen[None]):
    """Every step of one rank of a run.

    Args:
        history: The run as the timeline reads it.
        stem: A name for files exported from the captures' views.
        follow: Read the run again every second (training still writing it).
        thresholds: Judge the captures with these instead of their own.
    """

    HELP_KEYS = TIMELINE_KEYS
    HELP_READING = TIMELINE_READING

    BINDINGS = [
        Binding("n", "finding(1)", "Finding", key_display="n/N"),
        Binding("N", "finding(-1)", "Previous finding", show=False),
        Binding("c", "capture(1)", "Capture", key_display="c/C"),
        Binding("C", "capture(-1)", "Previous capture", show=False),
        Binding("enter", "open", "Open graph"),
        Binding("m", "mark", "Mark/compare"),
        Binding("r", "rank(1)", "Rank", key_display="r/R"),
        Binding("R", "rank(-1)", "Previous rank", show=False),
        Binding("escape", "unmark", "Unmark", show=False),
        Binding("up", "row(-1)", "Rows", show=False),
        Binding("down", "row(1)", "Rows", show=False),
    ]

    def __init__(self, history: History, *, stem: str = "run", follow: bool = False,
                 thresholds: Thresholds | None = None, step: int | None = None) -> None:
        super().__init__()
        self.history = history
        self._start = step
        self.stem = stem
        self.follow = follow
        self.thresholds = thresholds

    def compose(self):
        h = self.history
        yield Header()
        yield Curves(h, id="tl-curves")
        with VerticalScroll(id="tl-heat"):
            yield Heatmap(h, id="heatmap")
        yield StepSummary(id="tl-summary")
        yield StepTable(id="tl-table", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        heat = self.query_one(Heatmap)
        # Open on the first finding (the reason to look), else on the last step.
        steps = self.history.marker_steps()
        if self._start is not None:
            heat.cursor = self.history.nearest(self._start)
        else:
            heat.cursor = steps[0] if steps else self.history.last
        heat.focus()
        if self.follow:
            self.set_interval(POLL_S, self.poll)

    # -- routing ---------------------------------------------------------------------------------

    @on(Heatmap.Moved)
    def _moved(self, event: Heatmap.Moved) -> None:
        self.show(event.step)

    def show(self, step: int) -> None:
        """Show ``step`` (the cursor's) in the curves, the summary and the table."""
        h = self.history
        mark = self.query_one(Heatmap).mark
        self.query_one(Curves).draw(step, mark)
        numbers = h.at(step)
        here = [m for m in h.markers if m.step == step]
        self.query_one(StepSummary).update(summary(step, numbers, h.captures.get(step), here, mark=mark))
        table = self.query_one(StepTable)
        row = table.cursor_row
        if mark is not None and mark != step:
            table.show_compare(mark, step, h.compare(mark, step), h.health_at(mark), h.health_at(step))
        else:
            table.show_step(numbers, h.health_at(step))
        if table.row_count:
            table.move_cursor(row=min(row, table.row_count - 1))

    # -- actions ---------------------------------------------------------------------------------

    def _jump(self, steps: list[int], direction: int) -> None:
        heat = self.query_one(Heatmap)
        ahead = [s for s in steps if s > heat.cursor] if direction > 0 else \
            [s for s in steps if s < heat.cursor][::-1]
        if ahead:
            heat.cursor = ahead[0]
        else:
            self.notify("no more findings" if steps else "no findings in this run", timeout=2)

    def action_finding(self, direction: int) -> None:
        self._jump(self.history.marker_steps(), direction)

    def action_capture(self, direction: int) -> None:
        self._jump(self.history.marker_steps(captures=True), direction)

    def action_open(self) -> None:
        step = self.query_one(Heatmap).cursor
        if step not in self.history.captures:
            near = self.history.marker_steps(captures=True)
            self.notify(f"step {step} has no full capture"
                        + ("; c/C jump to the captured steps" if near else "; this run kept none"),
                        severity="warning", timeout=3)
            return
        try:
            graph = self.history.run.capture(step, self.history.rank)
        except RunError as e:
            self.notify(str(e), severity="error")
            return
        graph = rediagnose(graph, thresholds=self.thresholds)
        self.app.push_screen(CaptureScreen(graph, stem=f"{self.stem}-step{step}", step=step,
                                           source=getattr(self.app, "source", "run")))

    def action_mark(self) -> None:
        heat = self.query_one(Heatmap)
        heat.mark = None if heat.mark == heat.cursor else heat.cursor
        self.show(heat.cursor)

    def action_unmark(self) -> None:
        heat = self.query_one(Heatmap)
        if heat.mark is not None:
            heat.mark = None
            self.show(heat.cursor)

    def action_rank(self, by: int) -> None:
        """Show another rank of a multi-process run, at the same step."""
        h = self.history
        if len(h.ranks) < 2:
            self.notify("this run has one rank", timeout=2)
            return
        other = History(h.run, rank=h.other_rank(by), thresholds=h.thresholds)
        self.app.sub_title = other.headline(getattr(self.app, "source", "run"))
        screen = TimelineScreen(other, stem=self.stem, follow=self.follow,
                                thresholds=self.thresholds, step=self.query_one(Heatmap).cursor)
        # The first timeline is the app's default screen, which cannot be switched away: the
        # other ranks' go on top of it, one at a time.
        if len(self.app.screen_stack) > 1:
            self.app.switch_screen(screen)
        else:
            self.app.push_screen(screen)

    def action_row(self, by: int) -> None:
        table = self.query_one(StepTable)
        if by > 0:
            table.action_cursor_down()
        else:
            table.action_cursor_up()

    # -- follow ----------------------------------------------------------------------------------

    def poll(self) -> None:
        """Read what training committed since; keep the cursor on the last step if it was."""
        h = self.history
        heat = self.query_one(Heatmap)
        at_end = heat.cursor == h.last
        try:
            grew = h.refresh()
        except RunError as e:
            self.notify(str(e), severity="error")
            return
        if not grew:
            return
        heat.data_changed()
        self.app.sub_title = h.headline(getattr(self.app, "source", "run")) + " · following"
        if at_end:
            heat.cursor = h.last
        else:
            self.show(heat.cursor)
