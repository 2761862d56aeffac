"""One step's numbers: a summary line (loss, gradient norm, learning rate, capture, findings) and
a table of every parameter's gradient numbers, or, comparing two steps, of every layer's RMS at
both and their ratio.

RMS values are coloured like everywhere else (``history.band_of`` and ``history.colour``); a
decimated step's numbers are the means of its stored row, and the summary says over which
steps.
"""

from __future__ import annotations

import math
from typing import Sequence

from rich.text import Text
from textual.widgets import DataTable, Static

from graphscope.formatting import fmt_num
from graphscope.health import Health
from graphscope.runs import CaptureInfo
from graphscope.tui.history import LayerRatio, Marker, StepNumbers, band_of, colour, fmt_ratio
from graphscope.tui.widgets.curves import LOSS, NORM
from graphscope.tui.widgets.graph_tree import SEVERITY_STYLE

STEP_COLUMNS = ("parameter", "norm", "RMS", "abs max", "zeros", "update/weight")
COMPARE_COLUMNS = ("layer", "RMS at {a}", "RMS at {b}", "ratio")


def _rms(rms: float, health: Health, present: bool = True) -> Text:
    band = band_of(rms, health, present=present)
    return Text("-" if not present else fmt_num(rms), style=colour(rms, band, health), justify="right")


def _num(x: float) -> Text:
    return Text("-" if math.isnan(x) else fmt_num(x), justify="right")


class StepTable(DataTable):
    """Every parameter's numbers at one step, or every layer compared between two."""

    can_focus = False

    def show_step(self, numbers: StepNumbers | None, health: Health) -> None:
        """The parameters' numbers at a step (nothing when it was not recorded)."""
        self.clear(columns=True)
        self.add_columns(*STEP_COLUMNS)
        if numbers is None:
            return
        for p in numbers.params:
            if not p.present:
                self.add_row(p.name, *(Text("no gradient", style="dim"),), "", "", "", "", key=p.name)
                continue
            self.add_row(p.name, _num(p.norm), _rms(p.rms, health), _num(p.absmax),
                         Text(f"{p.zero_frac:.0%}" if math.isfinite(p.zero_frac) else "-", justify="right"),
                         _num(p.update), key=p.name)

    def show_compare(self, a: int, b: int, ratios: Sequence[LayerRatio], health_a: Health,
                     health_b: Health) -> None:
        """Each layer's RMS at steps ``a`` and ``b`` and the ratio ``b / a``."""
        self.clear(columns=True)
        self.add_columns(*(c.format(a=a, b=b) for c in COMPARE_COLUMNS))
        for r in ratios:
            self.add_row(r.name or "(root)", _rms(r.a, health_a, r.has_a), _rms(r.b, health_b, r.has_b),
                         Text(fmt_ratio(r.ratio), justify="right"), key=r.name)


def summary(step: int, numbers: StepNumbers | None, capture: CaptureInfo | None,
            markers: Sequence[Marker], *, mark: int | None = None) -> Text:
    """The cursor's step in a few lines: its values, its capture, the findings starting there."""
    text = Text()
    text.append(f"step {step}", style="bold")
    if numbers is None:
        text.append("  not recorded", style="dim")
        return text
    # The names in the curves' colours: the summary is the curves' legend.
    loss = "NaN/Inf" if numbers.loss_nonfinite else fmt_num(numbers.loss)
    text.append("  loss ", style=LOSS).append(loss, style="bold red" if numbers.loss_nonfinite else "")
    norm = fmt_num(numbers.grad_norm) if math.isfinite(numbers.grad_norm) else "NaN/Inf"
    text.append("  grad norm ", style=NORM).append(
        norm, style="" if math.isfinite(numbers.grad_norm) else "bold red")
    if math.isfinite(numbers.lr):
        text.append(f"  lr {fmt_num(numbers.lr)}")
    if math.isfinite(numbers.loss_scale):
        text.append(f"  loss scale {fmt_num(numbers.loss_scale)}")
    if numbers.nonfinite:
        text.append(f"  {numbers.nonfinite} NaN/Inf gradient elements", style="bold red")
    if numbers.n > 1:
        text.append(f"  (means over steps {numbers.lo}-{numbers.hi})", style="dim italic")
    if mark is not None:
        text.append(f"  comparing with step {mark}", style="bold")
    if capture is not None:
        text.append("\n◆ full capture", style="cyan")
        text.append(f" ({capture.reason}, {capture.severity}, {capture.findings} findings)", style="dim")
        text.append("  enter: open its graph", style="bold")
    for m in markers:
        text.append("\n● ", style=SEVERITY_STYLE[m.severity])
        text.append(f"{m.kind}: ", style="bold")
        text.append(m.message)
        if m.hint:
            text.append(f"  {m.hint}", style="dim italic")
    return text


class StepSummary(Static):
    """The summary of the cursor's step (see ``summary``)."""
