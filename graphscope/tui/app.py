"""The inspector app: built from a ``Graph``, holds the global keys, shows the main screen.

The CLI calls ``run()``; tests call ``run_test()``. Everything else lives in the screens and
widgets, which take their data from here.
"""

from __future__ import annotations

from textual.app import App
from textual.binding import Binding

from graphscope.diagnostics import rediagnose
from graphscope.health import Thresholds
from graphscope.model import Graph, fmt_count
from graphscope.tui.screens.help import HelpScreen
from graphscope.tui.screens.main import MainScreen


class InspectorApp(App[None]):
    """Browse one captured graph.

    Args:
        graph: The capture to show (from ``graphscope.capture`` or ``graphscope.load``).
        source: Where it came from (a file name or a demo name), shown in the header and used
            to name exported files.
        thresholds: Judge the gradients with these instead of the capture's own: the colours,
            bands and findings shown are all recomputed with them.
    """

    CSS_PATH = "inspector.tcss"
    TITLE = "graphscope"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, graph: Graph, *, source: str = "graph",
                 thresholds: Thresholds | None = None) -> None:
        super().__init__()
        self.graph = rediagnose(graph, thresholds=thresholds)
        self.source = source

    @property
    def crash(self) -> BaseException | None:
        """The unhandled exception that ended the app, or None (textual keeps the first)."""
        return self._exception

    def get_default_screen(self) -> MainScreen:
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.source.rsplit(".", 1)[0])
        return MainScreen(self.graph, stem=stem or "graph")

    def on_mount(self) -> None:
        # Findings first: a narrow header cuts the end, and the counts are what matter most.
        g = self.graph
        self.sub_title = (f"{self.source}: {g.severity_counts()} · {fmt_count(len(g), 'node')}, "
                          f"{fmt_count(len(g.param_nodes), 'parameter')}, "
                          f"{fmt_count(g.passes, 'backward pass')}")

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())
