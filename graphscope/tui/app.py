"""The inspector app: built from a ``Graph`` (or a run, ``for_run``), holds the global keys,
shows the main screen (or the run's timeline).

The CLI calls ``run()``; tests call ``run_test()``. Everything else lives in the screens and
widgets, which take their data from here.
"""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from graphscope.diagnostics import rediagnose
from graphscope.health import Thresholds
from graphscope.model import Graph
from graphscope.runs import Run
from graphscope.tui.history import History
from graphscope.tui.screens.help import KEYS, READING, HelpScreen
from graphscope.tui.screens.main import MainScreen, headline
from graphscope.tui.screens.timeline import TimelineScreen


class InspectorApp(App[None]):
    """Browse one captured graph (or a recorded run: ``InspectorApp.for_run``).

    Args:
        graph: The capture to show (from ``graphscope.capture`` or ``graphscope.load``);
            ``None`` only through ``for_run``.
        source: Where it came from (a capture's path or a demo name), shown in the header and
            used to name exported files; a capture's exports are written next to it.
        thresholds: Judge the gradients with these instead of the capture's own: the colours,
            bands and findings shown are all recomputed with them.
    """

    CSS_PATH = "inspector.tcss"
    TITLE = "graphscope"
    ENABLE_COMMAND_PALETTE = False
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]
    VERTICAL_BREAKPOINTS = [(0, "-short"), (34, "-tall")]
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help", key_display="?"),
    ]

    def __init__(self, graph: Graph | None, *, source: str = "graph",
                 thresholds: Thresholds | None = None) -> None:
        super().__init__()
        self.graph = rediagnose(graph, thresholds=thresholds) if graph is not None else None
        # A capture file's path: exports go next to it, and the header shows only its name.
        path = Path(source)
        self.folder = path.parent if path.suffix == ".json" and path.parent != Path(".") else None
        self.source = path.name if self.folder is not None else source
        self.thresholds = thresholds
        self.history: History | None = None
        self.follow = False

    @classmethod
    def for_run(cls, run: Run, *, source: str = "run", follow: bool = False,
                thresholds: Thresholds | None = None) -> InspectorApp:
        """The inspector on a recorded run: it opens on its timeline (``TimelineScreen``).

        Args:
            run: A run store opened with ``graphscope.runs.open_run``.
            source: Its name for the header and for exported files.
            follow: Read the run again every second, while training writes it.
            thresholds: Judge the gradients with these instead of the run's own.
        """
        app = cls(None, source=source, thresholds=thresholds)
        app.history = History(run, thresholds=thresholds)
        app.follow = follow
        return app

    @property
    def crash(self) -> BaseException | None:
        """The unhandled exception that ended the app, or None (textual keeps the first)."""
        return self._exception

    def get_default_screen(self) -> MainScreen | TimelineScreen:
        stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in self.source.rsplit(".", 1)[0])
        if self.history is not None:
            return TimelineScreen(self.history, stem=stem or "run", follow=self.follow,
                                  thresholds=self.thresholds)
        return MainScreen(self.graph, stem=stem or "graph", folder=self.folder)

    def on_mount(self) -> None:
        if self.history is not None:
            self.sub_title = self.history.headline(self.source)
            return
        self.sub_title = headline(self.graph, self.source)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            # The keys of the screen it opens over: the timeline's differ from the graph's.
            self.push_screen(HelpScreen(getattr(self.screen, "HELP_KEYS", KEYS),
                                        getattr(self.screen, "HELP_READING", READING)))
