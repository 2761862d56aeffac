"""Gradient flow: each parameter layer's gradient RMS, in forward order, on a log scale.

A line plot (textual-plot) of log10(RMS) per layer, with the vanishing and exploding limits of
the capture's ``Health`` (loss scale included) drawn across it, so a sigmoid stack visibly fades
toward the input. Below the plot, a numbered legend names the layers with the band the findings
use. The layers are ``health.forward_params``: the same list, in the same order, the diagnosis
judges.

Every layer with a gradient is drawn, whatever its numbers: NaN/Inf, RMS values far outside the
limits (1e300, 1e-300) and all-zero gradients are clipped to the plot's edges with their own
marks (``picture`` decides where), and the legend gives their real values.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from typing import Sequence

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static
from textual_plot import HiResMode, PlotWidget
from textual_plot.axis_formatter import NumericAxisFormatter

from graphscope import formatting
from graphscope.health import Band, Health, forward_params
from graphscope.model import GradStats, Graph

MAX_LEGEND = 40

ON_SCALE, ABOVE, BELOW, NONFINITE = "●", "▲", "▼", "×"
"""How a layer is marked: on the scale, clipped to the top or the bottom, or NaN/Inf (at the top)."""

MARK_LABELS = {
    NONFINITE: "NaN or Inf, at the top",
    ABOVE: "above the scale, at the top",
    BELOW: "zero or below the scale, at the bottom",
}
SPAN = 24
"""Decades shown beyond the vanishing and exploding limits; values further out are clipped, so
one 1e300 layer does not squash every other layer into a single row."""
_EDGE = 0.02
"""Clipped marks sit this fraction of the window inside its edges (a mark exactly on the top
limit falls outside the plot's canvas)."""


class _PowerOfTen(NumericAxisFormatter):
    """Ticks on log10 values, labelled as powers of ten (``1e-06``)."""

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        if not (math.isfinite(min_) and math.isfinite(max_)):
            return []  # nothing sensible to label; the plot still draws
        lo, hi = math.ceil(min_), math.floor(max_)
        step = max(1, math.ceil((hi - lo + 1) / max(max_ticks, 1)))
        return [float(t) for t in range(lo, hi + 1, step)] or super().get_ticks(min_, max_, max_ticks)

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        labels = [f"1e{int(round(t)):+d}" if float(t).is_integer() else f"{10**t:.1g}" for t in ticks]
        # One width for all: the plot writes each label over the axis column without clearing
        # it, so a short label under a long one kept its stray first digit ("11e-7").
        width = max(map(len, labels), default=0)
        return [label.rjust(width) for label in labels]


def log_rms(stats: GradStats | None) -> float | None:
    """log10 of the RMS, or None when there is no finite, non-zero gradient to place."""
    if stats is None or not stats.finite or not math.isfinite(stats.rms) or stats.rms <= 0:
        return None
    return math.log10(stats.rms)


@dataclass(frozen=True, slots=True)
class Layer:
    """One parameter as plotted: its name, gradient statistics and band."""

    name: str
    stats: GradStats | None
    band: Band


def layers_of(graph: Graph, health: Health) -> list[Layer]:
    """The parameters the diagnosis judges, in forward order, each with its band."""
    return [Layer(n.title, n.grad, health.band(n)) for n in forward_params(graph)]


def flow_csv(layers: Sequence[Layer]) -> str:
    """The plotted layers as CSV (what ``e`` on the flow tab writes): one row per parameter, in
    forward order, with its gradient RMS, norm and band."""
    out = io.StringIO()
    rows = csv.writer(out, lineterminator="\n")
    rows.writerow(["layer", "parameter", "rms", "norm", "band"])
    for i, layer in enumerate(layers, 1):
        s = layer.stats
        rows.writerow([i, layer.name, "" if s is None else repr(s.rms),
                       "" if s is None else repr(s.norm), layer.band.value])
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Point:
    """One layer as drawn: its number (1-based, forward order), height (log10 RMS, or the
    window's edge when clipped), mark and colour."""

    layer: int
    y: float
    mark: str
    colour: str


@dataclass(frozen=True, slots=True)
class Picture:
    """Everything the plot draws: the points, the y window ``[lo, hi]`` (log10 RMS) and the
    relative-vanishing level (None without a finite gradient)."""

    points: tuple[Point, ...]
    lo: float
    hi: float
    relative: float | None


def _mark(stats: GradStats, y: float | None, cap: tuple[float, float]) -> str:
    if not stats.finite or math.isnan(stats.rms):
        return NONFINITE
    if y is None:
        return ABOVE if stats.rms > 0 else BELOW  # an overflowed (inf) RMS, or an all-zero one
    return ABOVE if y > cap[1] else BELOW if y < cap[0] else ON_SCALE


def _colour(layer: Layer, y: float | None, mark: str, h: Health) -> str:
    """The tree's colour; healthy layers shaded by their decade so the plot reads like the tree."""
    if mark == NONFINITE:
        return formatting.BAND_COLOURS[Band.NONFINITE]
    if layer.band is Band.HEALTHY and y is not None:
        return formatting.rms_colour(10.0 ** round(y), h)
    return formatting.BAND_COLOURS[layer.band]


def _text_colour(layer: Layer, h: Health) -> str:
    if layer.band is Band.HEALTHY and layer.stats is not None:
        return formatting.rms_colour(layer.stats.rms, h)
    return formatting.BAND_COLOURS[layer.band]


def picture(layers: Sequence[Layer], health: Health) -> Picture:
    """Place each layer with a gradient on the log-RMS plot, clipping what cannot be drawn.

    The window covers the finite layers (and the relative-vanishing level) with a decade to
    spare, but no more than ``SPAN`` decades beyond the limits; with no finite layer it is the
    limits themselves. NaN/Inf layers and RMS values above the window sit at its top, zero and
    tiny ones at its bottom, each with its own mark. Layers without a gradient are left out.
    """
    limits = math.log10(health.vanishing_rms), math.log10(health.exploding_rms)
    cap = limits[0] - SPAN, limits[1] + SPAN
    ys = [log_rms(layer.stats) for layer in layers]
    finite = [y for y in ys if y is not None]
    shown = [y for y in finite if cap[0] <= y <= cap[1]]
    relative = max(finite) + math.log10(health.thresholds.vanishing_ratio) if finite else None
    if shown:
        lo = min(min(shown), relative if relative is not None and relative >= cap[0] else math.inf) - 1
        hi = max(shown) + 1
    else:
        lo, hi = limits[0] - 1, limits[1] + 1
    top, bottom = hi - _EDGE * (hi - lo), lo + _EDGE * (hi - lo)
    points = []
    for i, (layer, y) in enumerate(zip(layers, ys), 1):
        if layer.stats is None:
            continue
        mark = _mark(layer.stats, y, cap)
        at = y if mark == ON_SCALE else bottom if mark == BELOW else top
        points.append(Point(i, at, mark, _colour(layer, y, mark, health)))
    return Picture(tuple(points), lo, hi, relative)


class GradientFlow(Vertical):
    """The per-layer gradient plot and its legend; ``layers`` in forward order (``layers_of``)."""

    def __init__(self, layers: list[Layer], *, health: Health, **kw) -> None:
        super().__init__(**kw)
        self._layers = layers
        self._health = health
        self._plotted = False

    def compose(self):
        if not self._layers:
            yield Static(Text("No parameter gradients in this capture.", style="dim"))
            return
        yield PlotWidget(id="flow-plot", allow_pan_and_zoom=True)
        with VerticalScroll(id="flow-legend"):
            yield Static(id="flow-names")

    def _legend(self) -> Group | Table:
        table = Table.grid(padding=(0, 1))
        h = self._health
        marks = {p.layer: p for p in picture(self._layers, h).points}
        shown = list(enumerate(self._layers, 1))
        if len(shown) > MAX_LEGEND:
            # Many layers: name the first and last few, the faintest and strongest, and the
            # clipped and NaN/Inf ones (the likely reason to look).
            ranked = sorted((r for r in shown if log_rms(r[1].stats) is not None),
                            key=lambda r: log_rms(r[1].stats))
            odd = [i for i, p in marks.items() if p.mark != ON_SCALE][:MAX_LEGEND // 2]
            keep = {i for i, _ in shown[:5] + shown[-5:] + ranked[:3] + ranked[-3:]} | set(odd)
            shown = [r for r in shown if r[0] in keep]
        previous = 0
        for i, layer in shown:
            stats = layer.stats
            if i > previous + 1:
                table.add_row(Text("…", style="dim"), "", Text(f"{i - previous - 1} more", style="dim"))
            previous = i
            point = marks.get(i)
            # The tree's colour for the numbers; the plot's colour (by decade) only for the mark.
            colour = (point.colour if point is not None and point.mark == NONFINITE
                      else _text_colour(layer, h))
            rms = "-" if stats is None else formatting.fmt_num(stats.rms)
            table.add_row(Text(str(i), style="dim"), Text(point.mark if point else "●", style=colour),
                          layer.name, Text(rms, style=colour),
                          Text(str(layer.band), style="dim"))
        scaled = f" (x{h.scale:g} loss scale)" if h.scale != 1.0 else ""
        limits = (f"vanishing ≤ {formatting.fmt_num(h.vanishing_rms)} or "
                  f"< {h.thresholds.vanishing_ratio:g} × the largest; exploding ≥ "
                  f"{formatting.fmt_num(h.exploding_rms)}{scaled}")
        table.add_row("", "", Text(limits, style="dim italic"))
        # The key to the clipped marks goes first, where it is seen without scrolling.
        present = {p.mark for p in marks.values()}
        key = Text()
        for mark, label in MARK_LABELS.items():
            if mark in present:
                key.append("   " if key else "").append(mark, style="bold").append(f" {label}", style="italic")
        return Group(key, table) if key else table

    def on_show(self) -> None:
        # Plotted the first time the tab is shown: a deep model's thousands of layers cost
        # nothing at start-up.
        if not self._layers or self._plotted:
            return
        self._plotted = True
        self.query_one("#flow-names", Static).update(self._legend())
        plot = self.query_one(PlotWidget)
        h = self._health
        pic = picture(self._layers, h)
        plot.set_xlabel("layer (forward order)")
        plot.set_ylabel("gradient RMS")
        plot.set_y_formatter(_PowerOfTen())
        n = len(self._layers)
        x0, x1 = 0.5, n + 0.5
        bands = [
            (math.log10(h.vanishing_rms), formatting.BAND_COLOURS[Band.VANISHING], "vanishing"),
            (pic.relative, formatting.BAND_COLOURS[Band.VANISHING], "vanishing (relative)"),
            (math.log10(h.exploding_rms), formatting.BAND_COLOURS[Band.EXPLODING], "exploding"),
        ]
        for y, colour, label in bands:
            if y is not None and pic.lo <= y <= pic.hi:
                plot.plot([x0, x1], [y, y], line_style=colour, hires_mode=HiResMode.BRAILLE, label=label)
        on_scale = [p for p in pic.points if p.mark == ON_SCALE]
        if on_scale:
            plot.plot([p.layer for p in on_scale], [p.y for p in on_scale], line_style="white",
                      hires_mode=HiResMode.BRAILLE, label="layer RMS")
        # One scatter series per (mark, colour): few series on deep models; the first series of
        # each clipped mark carries its legend label.
        series: dict[tuple[str, str], tuple[list[int], list[float]]] = {}
        for p in pic.points:
            xs, ys = series.setdefault((p.mark, p.colour), ([], []))
            xs.append(p.layer)
            ys.append(p.y)
        labelled: set[str] = set()
        for (mark, colour), (xs, ys) in series.items():
            label = MARK_LABELS.get(mark) if mark not in labelled else None
            labelled.add(mark)
            plot.scatter(xs, ys, marker=mark, marker_style=colour, label=label)
        plot.set_ylimits(pic.lo, pic.hi)
        plot.set_xlimits(x0, x1)
        plot.set_xticks(list(range(1, n + 1)) if n <= 12 else None)
