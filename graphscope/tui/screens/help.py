"""The key reference of the screen it is opened over, and how to read that screen.

Each screen names its keys in ``HELP_KEYS`` and its reading guide in ``HELP_READING``; the
help shows the graph inspector's when a screen has none.
"""

from __future__ import annotations

from typing import Sequence

from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = [
    ("↑ ↓  j k", "move in the tree"),
    ("→ ←  l h", "expand / collapse (← again: go to the parent)"),
    ("enter", "expand, follow a ↪ reference, or load more lines"),
    ("/", "search ops, parameter and module names; the box's title counts the matches; "
          "enter jumps to the next"),
    ("f", "the findings list: ↑ ↓ to pick, enter to jump to its node; f or esc: back"),
    ("n  N", "next / previous finding, through every node it names"),
    ("tab  shift+tab", "move between the tree, the tabs and the findings list"),
    ("g", "group the tree backward from the loss, or by module"),
    ("1 2 3", "tabs: node details, neighbours, gradient flow"),
    ("e", "export what the tab shows, next to the capture, never over a file: the graph or "
          "the neighbourhood as SVG, the gradient flow as CSV"),
    ("esc", "close the search box or the findings list, hide the demo's lesson"),
    ("?", "this help"),
    ("q", "quit"),
]

READING = (
    "Reading the tree: going down a list walks the backward pass along its main path, from "
    "the loss toward the inputs. An op's other inputs (weights, biases, skip branches) are "
    "nested under it. A tensor used in several places is expanded once; its other uses show "
    "a ↪ line, and enter jumps to it. ● is the gradient RMS, coloured blue (vanishing) through "
    "green and orange to red (exploding); magenta means NaN or Inf; ⚠ marks a finding; the "
    "module an op ran in ends its line."
)

PAGE_KEYS = [
    ("↑ ↓  j k", "scroll this help"),
    ("esc  q  ?", "close it"),
]


class HelpScreen(ModalScreen[None]):
    """Keys and reading guide; any of escape, q or ? closes it, ↑ ↓ j k page up/down scroll it.

    Args:
        keys: ``(keys, what they do)`` rows of the screen it is opened over.
        reading: How to read that screen.
    """

    BINDINGS = [
        Binding("escape,q,question_mark", "dismiss", "Close"),
        Binding("j", "scroll(1)", "Scroll", show=False),
        Binding("k", "scroll(-1)", "Scroll", show=False),
    ]

    def __init__(self, keys: Sequence[tuple[str, str]] = KEYS, reading: str = READING) -> None:
        super().__init__()
        self.keys = list(keys)
        self.reading = reading

    def compose(self):
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in self.keys:
            table.add_row(key, what)
        with VerticalScroll(id="help") as box:
            # At 80x24 the keys do not fit: the border says how to see the rest.
            box.border_subtitle = "↑ ↓ scroll · esc closes"
            yield Static(Text("graphscope inspector", style="bold"))
            yield Static(table)
            yield Static(Text(self.reading, style="italic"), id="help-reading")

    def on_mount(self) -> None:
        self.query_one("#help", VerticalScroll).focus()

    def action_scroll(self, by: int) -> None:
        box = self.query_one("#help", VerticalScroll)
        box.scroll_relative(y=by, animate=False)
