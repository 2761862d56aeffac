"""The findings list, worst first, each line coloured by severity."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from graphscope.model import Finding
from graphscope.tui.widgets.graph_tree import SEVERITY_STYLE


def _prompt(f: Finding) -> Text:
    text = Text(f"{str(f.severity).upper():7} ", style=SEVERITY_STYLE[f.severity])
    text.append(f.message)
    return text


class FindingsList(OptionList):
    """Lists ``findings`` (sorted worst first). Posts ``Chosen`` on enter or click."""

    class Chosen(Message):
        """The user chose ``finding`` (to jump to its node)."""

        def __init__(self, finding: Finding) -> None:
            self.finding = finding
            super().__init__()

    def __init__(self, findings: list[Finding], **kw) -> None:
        self.findings = sorted(findings, key=lambda f: -f.severity)
        options = [Option(_prompt(f), id=str(i)) for i, f in enumerate(self.findings)]
        if not options:  # one line saying so, not an empty box (the screen's CSS shrinks it)
            options = [Option(Text("the diagnosis flagged nothing here",
                                   style="dim italic"), id="none", disabled=True)]
        super().__init__(*options, **kw)
        # The key that focuses the list, in its title, as lazygit numbers its panels (no brackets: they are markup).
        self.border_title = f"findings ({len(self.findings)}) · key f" if self.findings else "no findings"
        self.set_class(not self.findings, "-empty")

    @on(OptionList.OptionSelected)
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option_index < len(self.findings):
            self.post_message(self.Chosen(self.findings[event.option_index]))
