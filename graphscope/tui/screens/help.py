"""The key reference, and how to read the tree."""

from __future__ import annotations

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
    ("/", "search ops and parameter names; enter again jumps to the next match"),
    ("f", "the findings list: ↑ ↓ to pick, enter to jump to its node; f or esc: back"),
    ("n  N", "next / previous finding, through every node it names"),
    ("tab  shift+tab", "move between the tree, the tabs and the findings list"),
    ("g", "group the tree backward from the loss, or by module"),
    ("1 2 3", "tabs: node details, neighbours, gradient flow"),
    ("e", "export what the tab shows, next to the capture, never over a file: the graph or "
          "the neighbourhood as SVG, the gradient flow as CSV"),
    ("?", "this help"),
    ("q", "quit"),
]

READING = (
    "Reading the tree: going down a list walks the backward pass along its main path, from "
    "the loss toward the inputs. An op's other inputs (weights, biases, skip branches) are "
    "nested under it. A tensor used in several places is expanded once; its other uses show "
    "a ↪ line, and enter jumps to it. ● is the gradient RMS, coloured blue (vanishing) through "
    "green and orange to red (exploding); magenta means NaN or Inf; ⚠ marks a finding."
)


class HelpScreen(ModalScreen[None]):
    """Keys and reading guide; any of escape, q or ? closes it."""

    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close")]

    def compose(self):
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in KEYS:
            table.add_row(key, what)
        with VerticalScroll(id="help"):
            yield Static(Text("graphscope inspector", style="bold"))
            yield Static(table)
            yield Static(Text(READING, style="italic"), id="help-reading")
