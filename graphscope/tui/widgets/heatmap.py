"""The layers x steps heatmap of gradient RMS, with the finding and capture marks and the cursor.

Each text row shows two layers with half blocks (``▀``: the upper layer in the foreground, the
lower in the background), one column per bucket of steps when the run has more steps than
columns; a bucket shows its worst value, never its mean (``history.worst``), in the product's
band colours. Below the layers, one row of marks (``●`` a finding starts, coloured by its
severity; ``◆`` a full capture) and one row with the cursor (``▲``), the marked step (``△``)
and the first and last steps.

The widget owns the cursor: it moves it with its keys (and clicks) and posts ``Moved``.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from graphscope.tui.history import Cells, History
from graphscope.tui.widgets.graph_tree import SEVERITY_STYLE

FINDING, CAPTURE, CURSOR, MARKED = "●", "◆", "▲", "△"
CAPTURE_STYLE = {"ok": "cyan", "info": "cyan", "warning": "yellow", "error": "bold red"}
_PAGE = 10
"""page up/down moves a tenth of the run."""


class Heatmap(Widget, can_focus=True):
    """Gradient RMS per layer over the run's steps; ``cursor`` is the step shown below it."""

    DEFAULT_CSS = """
    Heatmap {
        height: auto;
    }
    """

    BINDINGS = [
        Binding("left", "move(-1)", "Step", key_display="←→"),
        Binding("right", "move(1)", "Step", show=False),
        Binding("pageup", "page(-1)", "Page", show=False),
        Binding("pagedown", "page(1)", "Page", show=False),
        Binding("home", "ends(0)", "First", show=False),
        Binding("end", "ends(1)", "Last", show=False),
    ]

    cursor: reactive[int] = reactive(0, always_update=True)
    mark: reactive[int | None] = reactive(None)

    class Moved(Message):
        """The cursor moved to ``step``."""

        def __init__(self, step: int) -> None:
            super().__init__()
            self.step = step

    def __init__(self, history: History, **kw) -> None:
        super().__init__(**kw)
        self.history = history
        self._cells: tuple[tuple[int, int], Cells] | None = None

    # -- geometry ----------------------------------------------------------------------------------

    def _label_width(self) -> int:
        return label_width(self.size.width, self.history.layers.names)

    def cells(self) -> Cells:
        """The cells at the widget's width (cached until the width or the run changes)."""
        width = max(self.size.width - self._label_width(), 1)
        key = (width, self.history.last)
        if self._cells is None or self._cells[0] != key:
            self._cells = (key, self.history.cells(width))
        return self._cells[1]

    def data_changed(self) -> None:
        """The history grew (``--follow``): redraw it."""
        self._cells = None
        self.refresh(layout=True)

    # -- drawing -----------------------------------------------------------------------------------

    def _label(self, upper: str, lower: str | None, width: int) -> Text:
        """``upper/lower`` right-aligned in ``width - 1`` characters, each name's end kept."""
        room = width - 1
        text = upper if lower is None else f"{upper}/{lower}"
        if len(text) > room and lower is not None:
            half = (room - 1) // 2
            text = f"{fit_tail(upper, half)}/{fit_tail(lower, room - 1 - half)}"
        return Text(fit_tail(text, room).rjust(room) + " ", style="dim")

    def render(self) -> Text:
        h = self.history
        if not len(h.steps):
            return Text("No steps recorded yet.", style="dim")
        if not h.layers.names:
            return Text("No parameters recorded.", style="dim")
        cells = self.cells()
        lw = self._label_width()
        names = h.layers.names
        out = Text(no_wrap=True, overflow="crop")
        for j in range(0, len(names), 2):
            lower = names[j + 1] if j + 1 < len(names) else None
            out.append_text(self._label(names[j], lower, lw))
            for c in range(len(cells.lo)):
                top = cells.colours[j][c]
                bottom = cells.colours[j + 1][c] if lower is not None else None
                out.append("▀", style=Style(color=top, bgcolor=bottom))
            out.append("\n")
        out.append_text(Text("marks".rjust(lw - 1) + " ", style="dim"))
        out.append_text(self._marks(cells))
        out.append("\n")
        out.append_text(Text("step".rjust(lw - 1) + " ", style="dim"))
        out.append_text(self._axis(cells))
        return out

    def _marks(self, cells: Cells) -> Text:
        row: list[tuple[str, str]] = [(" ", "")] * len(cells.lo)
        for step, info in self.history.captures.items():
            row[cells.column_of(step)] = (CAPTURE, CAPTURE_STYLE.get(info.severity, "cyan"))
        worst: dict[int, object] = {}
        for m in self.history.markers:
            c = cells.column_of(m.step)
            if c not in worst or m.severity > worst[c]:
                worst[c] = m.severity
                row[c] = (FINDING, SEVERITY_STYLE[m.severity])
        return _text(row)

    def _axis(self, cells: Cells) -> Text:
        n = len(cells.lo)
        row = [(" ", "")] * n
        first, last = str(self.history.first), str(self.history.last)
        for i, ch in enumerate(first[:n]):
            row[i] = (ch, "dim")
        if n > len(first) + len(last) + 1:
            for i, ch in enumerate(last):
                row[n - len(last) + i] = (ch, "dim")
        if self.mark is not None:
            row[cells.column_of(self.mark)] = (MARKED, "bold")
        row[cells.column_of(self.cursor)] = (CURSOR, "bold reverse")
        return _text(row)

    # -- the cursor --------------------------------------------------------------------------------

    def watch_cursor(self, step: int) -> None:
        self.refresh()
        self.post_message(self.Moved(step))

    def watch_mark(self) -> None:
        self.refresh()

    def action_move(self, by: int) -> None:
        self.cursor = self.history.moved(self.cursor, by)

    def action_page(self, by: int) -> None:
        self.cursor = self.history.moved(self.cursor, by * max(1, len(self.history.steps) // _PAGE))

    def action_ends(self, end: int) -> None:
        self.cursor = self.history.last if end else self.history.first

    def on_click(self, event: events.Click) -> None:
        cells = self.cells()
        c = event.x - self._label_width()
        if 0 <= c < len(cells.lo):
            self.cursor = self.history.nearest(int(cells.lo[c]))


def label_width(width: int, names: list[str]) -> int:
    """The width of the layer names left of the cells (and of the curves' axis, so that a
    column of the heatmap sits under the same steps as the curves above it)."""
    longest = max((len(n) for n in names), default=4)
    return max(8, min(2 * longest + 1, width // 5, 40))


def fit_tail(text: str, width: int) -> str:
    """The end of ``text`` in ``width`` characters (``…`` where cut): names differ at the end."""
    return text if len(text) <= width else "…" + text[len(text) - width + 1:] if width > 1 else text[:width]


def _text(cells: list[tuple[str, str]]) -> Text:
    text = Text()
    for ch, style in cells:
        text.append(ch, style=style)
    return text
