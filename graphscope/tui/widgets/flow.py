"""Gradient flow: each parameter layer's gradient RMS, in forward order, on a log scale.

A line plot (textual-plot) of log10(RMS) per layer, with the vanishing and exploding limits of
``Thresholds`` drawn across it, so a sigmoid stack visibly fades toward the input. Below the plot,
a numbered legend names the layers.
"""

from __future__ import annotations

import math
from typing import Sequence

from rich.table import Table
from rich.text import Text
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static
from textual_plot import HiResMode, PlotWidget
from textual_plot.axis_formatter import NumericAxisFormatter

from graphscope import formatting
from graphscope.diagnostics import Thresholds
from graphscope.model import GradStats

Layer = tuple[str, GradStats | None]
MAX_LEGEND = 40


class _PowerOfTen(NumericAxisFormatter):
    """Ticks on log10 values, labelled as powers of ten (``1e-06``)."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        lo, hi = math.ceil(min_), math.floor(max_)
        step = max(1, math.ceil((hi - lo + 1) / max(max_ticks, 1)))
        return [float(t) for t in range(lo, hi + 1, step)] or super().get_ticks(min_, max_, max_ticks)

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [f"1e{int(round(t)):+d}" if float(t).is_integer() else f"{10**t:.1g}" for t in ticks]


def log_rms(stats: GradStats | None) -> float | None:
    """log10 of the RMS, or None when there is no finite, non-zero gradient to place."""
    if stats is None or not stats.finite or stats.rms <= 0:
        return None
    return math.log10(stats.rms)


def _decade_colour(rms: float, t: Thresholds) -> str:
    """The tree's colour for a healthy gradient of this RMS."""
    return formatting.magnitude_colour(GradStats(rms, 0, 0, 0, 0, 0, 0, 0, 0, 1), t)


class GradientFlow(Vertical):
    """The per-layer gradient plot and its legend; ``layers`` are (name, stats) in forward order."""

    def __init__(self, layers: list[Layer], *, thresholds: Thresholds | None = None, **kw) -> None:
        super().__init__(**kw)
        self._layers = layers
        self._t = thresholds or Thresholds()
        self._plotted = False

    def compose(self):
        if not self._layers:
            yield Static(Text("No parameter gradients in this capture.", style="dim"))
            return
        yield PlotWidget(id="flow-plot", allow_pan_and_zoom=True)
        with VerticalScroll(id="flow-legend"):
            yield Static(id="flow-names")

    def _legend(self) -> Table:
        table = Table.grid(padding=(0, 1))
        shown = list(enumerate(self._layers, 1))
        if len(shown) > MAX_LEGEND:
            # Many layers: name the first and last few, and the faintest and strongest.
            ranked = sorted((r for r in shown if log_rms(r[1][1]) is not None),
                            key=lambda r: log_rms(r[1][1]))
            keep = {i for i, _ in shown[:5] + shown[-5:] + ranked[:3] + ranked[-3:]}
            shown = [r for r in shown if r[0] in keep]
        previous = 0
        for i, (name, stats) in shown:
            if i > previous + 1:
                table.add_row(Text("…", style="dim"), "", Text(f"{i - previous - 1} more", style="dim"))
            previous = i
            colour = formatting.magnitude_colour(stats, self._t)
            rms = "-" if stats is None else formatting.fmt_num(stats.rms)
            table.add_row(Text(str(i), style="dim"), Text("●", style=colour), name,
                          Text(rms, style=colour), Text(formatting.band(stats, self._t), style="dim"))
        limits = (f"vanishing ≤ {formatting.fmt_num(self._t.vanishing_rms)} or "
                  f"< {self._t.vanishing_ratio:g} × the largest; exploding ≥ "
                  f"{formatting.fmt_num(self._t.exploding_rms)}")
        table.add_row("", "", Text(limits, style="dim italic"))
        return table

    def on_show(self) -> None:
        # Plotted the first time the tab is shown: a deep model's thousands of layers cost
        # nothing at start-up.
        if not self._layers or self._plotted:
            return
        self._plotted = True
        self.query_one("#flow-names", Static).update(self._legend())
        plot = self.query_one(PlotWidget)
        xs, ys = [], []
        for i, (_, stats) in enumerate(self._layers, 1):
            y = log_rms(stats)
            if y is not None:
                xs.append(i)
                ys.append(y)
        plot.set_xlabel("layer (forward order)")
        plot.set_ylabel("gradient RMS")
        plot.set_y_formatter(_PowerOfTen())
        n = len(self._layers)
        x0, x1 = 0.5, n + 0.5
        if ys:
            top = max(ys)
            relative = top + math.log10(self._t.vanishing_ratio)
            lo, hi = min(min(ys), relative) - 1, top + 1
            bands = [
                (math.log10(self._t.vanishing_rms), formatting.BAND_COLOURS["vanishing"], "vanishing"),
                (relative, formatting.BAND_COLOURS["vanishing"], "vanishing (relative)"),
                (math.log10(self._t.exploding_rms), formatting.BAND_COLOURS["exploding"], "exploding"),
            ]
            for y, colour, label in bands:
                if lo <= y <= hi:
                    plot.plot([x0, x1], [y, y], line_style=colour, hires_mode=HiResMode.BRAILLE, label=label)
            plot.plot(xs, ys, line_style="white", hires_mode=HiResMode.BRAILLE, label="layer RMS")
            # One scatter series per decade, coloured like the tree: few series on deep models.
            by_colour: dict[str, tuple[list[int], list[float]]] = {}
            for x, y in zip(xs, ys):
                band = formatting.band(self._layers[x - 1][1], self._t)
                colour = (_decade_colour(10.0 ** round(y), self._t) if band == formatting.HEALTHY
                          else formatting.BAND_COLOURS[band])
                by_colour.setdefault(colour, ([], []))[0].append(x)
                by_colour[colour][1].append(y)
            for colour, (cx, cy) in by_colour.items():
                plot.scatter(cx, cy, marker="●", marker_style=colour)
            plot.set_ylimits(lo, hi)
        plot.set_xlimits(x0, x1)
        plot.set_xticks(list(range(1, n + 1)) if n <= 12 else None)
