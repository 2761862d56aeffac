"""Gradient flow: each layer's gradient RMS, in forward order, on a log scale.

A layer is a module: the parameters that ``health.layer_key`` groups for the depth rule
(``fc1.weight`` and ``fc1.bias`` are layer ``fc1``; a stacked RNN has one per layer). A line plot
(textual-plot) of log10(RMS) joins the layers' weights (● a module's largest non-bias gradient);
its biases are marked ◆ beside them, so a bias that is tiny by construction neither zigzags the
line nor hides. The vanishing and exploding limits of the capture's ``Health`` (loss scale
included) are drawn across it, so a sigmoid stack visibly fades toward the input. The x axis
names the layers where the names fit, numbers them otherwise; below the plot, a numbered legend
lists each layer's parameters with the band the findings use, and says which layers it leaves
out on a deep model. The parameters are ``health.forward_params``: the same list, in the same
order, the diagnosis judges.

Every parameter with a gradient is drawn, whatever its numbers: NaN/Inf, RMS values far outside
the limits (1e300, 1e-300) and all-zero gradients are clipped to the plot's edges with their own
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
from textual_plot.axis_formatter import AxisFormatter, NumericAxisFormatter

from graphscope import formatting
from graphscope.health import Band, Health, forward_params, layer_key
from graphscope.model import GradStats, Graph
from graphscope.tui.widgets.heatmap import fit_tail

MAX_LEGEND = 40
"""Layers the legend names at most; the rest are counted, and the CSV export has them all."""

ON_SCALE, BIAS, ABOVE, BELOW, NONFINITE = "●", "◆", "▲", "▼", "×"
"""How a parameter is marked: a layer's weights on the scale, its biases on the scale, clipped
to the top or the bottom, or NaN/Inf (at the top)."""

MARK_LABELS = {
    NONFINITE: "NaN or Inf, at the top",
    ABOVE: "above the scale, at the top",
    BELOW: "zero or below the scale, at the bottom",
}
BIAS_SHIFT = 0.25
"""A bias is drawn this fraction of a layer right of its layer's weights, so an equal one is
not hidden under the weights' mark."""
SPAN = 24
"""Decades shown beyond the vanishing and exploding limits; values further out are clipped, so
one 1e300 layer does not squash every other layer into a single row."""
_EDGE = 0.02
"""Clipped marks sit this fraction of the window inside its edges (a mark exactly on the top
limit falls outside the plot's canvas)."""


def _power_label(t: float) -> str:
    """A log10 tick as people write the number: ``1e-6``, ``2e-1``, ``5e+0``."""
    e = math.floor(t + 1e-9)
    m = 10 ** (t - e)
    if abs(m - round(m)) > 1e-6:  # a tick between the round ones (a window under a decade)
        return f"{10 ** t:.2g}"
    m, e = (1, e + 1) if round(m) == 10 else (round(m), e)
    return f"{m}e{e:+d}"


class _PowerOfTen(NumericAxisFormatter):
    """Ticks on log10 values, labelled as powers of ten (``1e-06``); at most ``rows`` of them
    (about one every other row of the canvas: more land on the same row, and only some show,
    unevenly spaced, on a short plot)."""

    rows: int = 8

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        if not (math.isfinite(min_) and math.isfinite(max_)):
            return []  # nothing sensible to label; the plot still draws
        max_ticks = min(max_ticks, self.rows)
        lo, hi = math.ceil(min_), math.floor(max_)
        step = max(1, math.ceil((hi - lo + 1) / max(max_ticks, 1)))
        decades = [float(t) for t in range(lo, hi + 1, step)]
        if len(decades) >= 2 or max_ticks < 2:
            return decades
        # Less than two decades (a loss between 0.4 and 0.8): 1, 2 and 5 of each, so the axis
        # still has numbers to read (it had one tick, or none).
        for mantissas in ((1, 2, 5), (1, 2, 3, 5, 7)):
            ticks = [math.log10(m) + e for e in range(lo - 1, hi + 1) for m in mantissas
                     if min_ <= math.log10(m) + e <= max_]
            if len(ticks) >= 2:  # uneven (1 and 2 are nearer than 2 and 5): half as many
                return ticks[:: math.ceil(len(ticks) / max(max_ticks // 2, 2))]
        return ticks or decades or super().get_ticks(min_, max_, max_ticks)

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        labels = [_power_label(t) for t in ticks]
        # One width for all: the plot writes each label over the axis column without clearing
        # it, so a short label under a long one kept its stray first digit ("11e-7").
        width = max(map(len, labels), default=0)
        return [label.rjust(width) for label in labels]


class _LayerNames(AxisFormatter):
    """Layer ticks (1-based, forward order) labelled with the names ``x_ticks`` chose."""

    def __init__(self, labels: dict[int, str]) -> None:
        self.labels = labels

    def get_ticks(self, min_: float, max_: float, max_ticks: int = 8) -> list[float]:
        return [float(t) for t in self.labels if min_ <= t <= max_]

    def get_labels_for_ticks(self, ticks: Sequence[float]) -> list[str]:
        return [self.labels.get(round(t), "") for t in ticks]


def x_ticks(names: Sequence[str], width: int) -> dict[int, str]:
    """The x axis's labels for ``names`` (in forward order) on a ``width``-column canvas: the
    names where every one fits its layer's share of the width (whole, or without the prefix
    all share), layer numbers otherwise (every few layers when even those do not fit)."""
    n = len(names)
    if not n:
        return {}
    room = width / n - 1  # one column between neighbouring labels
    parts = [name.split(".") for name in names]
    common = 0
    while n > 1 and all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    for labels in (list(names), [".".join(p[common:]) for p in parts]):
        if max(map(len, labels)) <= room:
            return {i: label for i, label in enumerate(labels, 1)}
    # A number and two columns: ticks land on whole columns, so neighbours can be a column nearer.
    step = max(1, math.ceil((len(str(n)) + 2) / max(width / n, 1e-9)))
    return {i: str(i) for i in range(1, n + 1, step)}


def log_rms(stats: GradStats | None) -> float | None:
    """log10 of the RMS, or None when there is no finite, non-zero gradient to place."""
    if stats is None or not stats.finite or not math.isfinite(stats.rms) or stats.rms <= 0:
        return None
    return math.log10(stats.rms)


@dataclass(frozen=True, slots=True)
class Param:
    """One parameter of a layer: its name, gradient statistics, band, and whether it is a bias."""

    name: str
    stats: GradStats | None
    band: Band
    bias: bool = False


def _worst(params: Sequence[Param]) -> Param | None:
    """The parameter that stands for ``params`` on the plot: a NaN/Inf one, else the largest
    RMS (as the depth rule takes a layer's largest); None when none has a gradient."""
    have = [p for p in params if p.stats is not None]
    for p in have:
        if not p.stats.finite or math.isnan(p.stats.rms):
            return p
    return max(have, key=lambda p: p.stats.rms, default=None)


@dataclass(frozen=True, slots=True)
class Layer:
    """One layer (module) as plotted: its name and its parameters, in forward order."""

    name: str
    params: tuple[Param, ...]

    @classmethod
    def of(cls, name: str, stats: GradStats | None, band: Band, *, bias: bool = False) -> Layer:
        """A layer of one parameter, named like it."""
        return cls(name, (Param(name, stats, band, bias),))

    @property
    def weights(self) -> Param | None:
        """What the weights' line shows for this layer (see ``_worst``)."""
        return _worst([p for p in self.params if not p.bias])

    @property
    def bias(self) -> Param | None:
        """What the bias mark shows for this layer (see ``_worst``)."""
        return _worst([p for p in self.params if p.bias])


def _is_bias(name: str) -> bool:
    return "bias" in name.rpartition(".")[2]  # bias, in_proj_bias, bias_hh_l0


def layers_of(graph: Graph, health: Health) -> list[Layer]:
    """The parameters the diagnosis judges, in forward order, grouped into the depth rule's
    layers (``health.layer_key``), each parameter with its band."""
    grouped: dict[str, list[Param]] = {}
    for n in forward_params(graph):
        name = n.title
        grouped.setdefault(layer_key(n), []).append(
            Param(name, n.grad, health.band(n), _is_bias(n.name or name)))
    return [Layer(key, tuple(params)) for key, params in grouped.items()]


def flow_csv(layers: Sequence[Layer]) -> str:
    """The plotted layers as CSV (what ``e`` on the flow tab writes): one row per parameter, in
    forward order, with its layer's number, its gradient RMS, norm and band."""
    out = io.StringIO()
    rows = csv.writer(out, lineterminator="\n")
    rows.writerow(["layer", "parameter", "rms", "norm", "band"])
    for i, layer in enumerate(layers, 1):
        for p in layer.params:
            s = p.stats
            rows.writerow([i, p.name, "" if s is None else repr(s.rms),
                           "" if s is None else repr(s.norm), p.band.value])
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class Point:
    """One layer's weights or bias as drawn: the layer's number (1-based, forward order),
    height (log10 RMS, or the window's edge when clipped), mark, colour, and whether it is the
    bias (drawn ``BIAS_SHIFT`` right of the number)."""

    layer: int
    y: float
    mark: str
    colour: str
    bias: bool = False

    @property
    def x(self) -> float:
        return self.layer + (BIAS_SHIFT if self.bias else 0.0)


@dataclass(frozen=True, slots=True)
class Picture:
    """Everything the plot draws: the points (each layer's weights, then its bias), the y
    window ``[lo, hi]`` (log10 RMS), the relative-vanishing level (None without a finite
    gradient) and the clipping range ``cap``."""

    points: tuple[Point, ...]
    lo: float
    hi: float
    relative: float | None
    cap: tuple[float, float]


def mark(param: Param, cap: tuple[float, float]) -> str:
    """A parameter's mark, with log10 RMS values outside ``cap`` clipped."""
    stats = param.stats
    if stats is None:
        return BIAS if param.bias else ON_SCALE
    if not stats.finite or math.isnan(stats.rms):
        return NONFINITE
    y = log_rms(stats)
    if y is None:
        return ABOVE if stats.rms > 0 else BELOW  # an overflowed (inf) RMS, or an all-zero one
    if y > cap[1]:
        return ABOVE
    if y < cap[0]:
        return BELOW
    return BIAS if param.bias else ON_SCALE


def _colour(param: Param, y: float | None, mark_: str, h: Health) -> str:
    """The tree's colour; healthy layers shaded by their decade so the plot reads like the tree."""
    if mark_ == NONFINITE:
        return formatting.BAND_COLOURS[Band.NONFINITE]
    if param.band is Band.HEALTHY and y is not None:
        return formatting.rms_colour(10.0 ** round(y), h)
    return formatting.BAND_COLOURS[param.band]


def _text_colour(param: Param, h: Health) -> str:
    if param.band is Band.HEALTHY and param.stats is not None:
        return formatting.rms_colour(param.stats.rms, h)
    return formatting.BAND_COLOURS[param.band]


def picture(layers: Sequence[Layer], health: Health) -> Picture:
    """Place each layer's weights and bias on the log-RMS plot, clipping what cannot be drawn.

    The window covers the finite points (and the relative-vanishing level) with a decade to
    spare, but no more than ``SPAN`` decades beyond the limits; with no finite point it is the
    limits themselves. NaN/Inf values and RMS values above the window sit at its top, zero and
    tiny ones at its bottom, each with its own mark. Parameters without a gradient are left out.
    """
    limits = math.log10(health.vanishing_rms), math.log10(health.exploding_rms)
    cap = limits[0] - SPAN, limits[1] + SPAN
    drawn = [(i, p) for i, layer in enumerate(layers, 1)
             for p in (layer.weights, layer.bias) if p is not None]
    ys = [log_rms(p.stats) for _, p in drawn]
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
    for (i, p), y in zip(drawn, ys):
        m = mark(p, cap)
        at = y if m in (ON_SCALE, BIAS) else bottom if m == BELOW else top
        points.append(Point(i, at, m, _colour(p, y, m, health), p.bias))
    return Picture(tuple(points), lo, hi, relative, cap)


class GradientFlow(Vertical):
    """The per-layer gradient plot and its legend; ``layers`` in forward order (``layers_of``)."""

    def __init__(self, layers: list[Layer], *, health: Health, **kw) -> None:
        super().__init__(**kw)
        self._layers = layers
        self._health = health
        self._plotted = False
        self._legend_width = 0
        self._tick_width = 0
        self._y_ticks = _PowerOfTen()

    def compose(self):
        if not self._layers:
            yield Static(Text("No parameter gradients in this capture.", style="dim"))
            return
        yield PlotWidget(id="flow-plot", allow_pan_and_zoom=True)
        with VerticalScroll(id="flow-legend"):
            yield Static(id="flow-names")

    def _shown(self) -> list[tuple[int, Layer]]:
        """The layers the legend names: all of them up to ``MAX_LEGEND``; past it the first and
        last few, the faintest and strongest, and the clipped and NaN/Inf ones (the likely
        reason to look)."""
        shown = list(enumerate(self._layers, 1))
        if len(shown) <= MAX_LEGEND:
            return shown
        cap = picture(self._layers, self._health).cap
        top = {i: _worst(layer.params) for i, layer in shown}
        ranked = sorted((i for i, p in top.items() if p is not None and log_rms(p.stats) is not None),
                        key=lambda i: log_rms(top[i].stats))
        odd = [i for i, layer in shown
               if any(mark(p, cap) not in (ON_SCALE, BIAS) for p in layer.params if p.stats is not None)]
        keep = {i for i, _ in shown[:5] + shown[-5:]} | set(ranked[:3] + ranked[-3:]) | set(odd[:MAX_LEGEND // 2])
        return [r for r in shown if r[0] in keep]

    def _legend(self) -> Group | Table:
        table = Table.grid(padding=(0, 1))
        h = self._health
        cap = picture(self._layers, h).cap
        shown = self._shown()
        # Names cut at their start, where a layer's parameters agree ("encoder.layers.0.…" was
        # both the weight and the bias at 80x24): the room left of the number, mark, RMS, band.
        # (a number, the mark, an RMS of 8, a band of 9, 4 gaps, the legend's scrollbar of 2)
        names = max(12, (self.size.width or 80) - len(str(len(self._layers))) - 1 - 8 - 9 - 4 - 2)
        previous = 0
        present: set[str] = set()
        for i, layer in shown:
            if i > previous + 1:
                gap = i - previous - 1
                table.add_row(Text("…", style="dim"), "",
                              Text(f"{gap} {'layer' if gap == 1 else 'layers'}", style="dim"))
            previous = i
            for k, p in enumerate(layer.params):
                m = mark(p, cap)
                present.add(m)
                stats = p.stats
                # The tree's colour for the numbers; the plot's colour (by decade) only for the mark.
                colour = formatting.BAND_COLOURS[Band.NONFINITE] if m == NONFINITE else _text_colour(p, h)
                rms = "-" if stats is None else formatting.fmt_num(stats.rms)
                table.add_row(Text(str(i) if k == 0 else "", style="dim"), Text(m, style=colour),
                              fit_tail(p.name, names), Text(rms, style=colour),
                              Text(str(p.band), style="dim"))
        scaled = f" (x{h.scale:g} loss scale)" if h.scale != 1.0 else ""
        # What the plot's dotted lines are (they had no key): the limits the bands use.
        limits = (f"dotted lines: vanishing ≤ {formatting.fmt_num(h.vanishing_rms)} or "
                  f"< {h.thresholds.vanishing_ratio:g} × the largest; exploding ≥ "
                  f"{formatting.fmt_num(h.exploding_rms)}{scaled}")
        table.add_row("", "", Text(limits, style="dim italic"))
        # The key to the marks and what is left out go first, where they are seen without scrolling.
        key = Text()
        key.append(ON_SCALE, style="bold").append(" weights (a layer's largest)", style="italic")
        if BIAS in present or any(layer.bias is not None for _, layer in shown):
            key.append("   ").append(BIAS, style="bold").append(" bias", style="italic")
        for m, label in MARK_LABELS.items():
            if m in present:
                key.append("   ").append(m, style="bold").append(f" {label}", style="italic")
        lines: list = [key]
        hidden = len(self._layers) - len(shown)
        if hidden:
            lines.append(Text(
                f"… {hidden} of {len(self._layers)} layers not shown: listed are the first and last "
                "5, the faintest and strongest 3, and the clipped or NaN/Inf ones (e exports all "
                "as CSV)", style="dim italic"))
        return Group(*lines, table)

    def on_show(self) -> None:
        # Plotted the first time the tab is shown: a deep model's thousands of layers cost
        # nothing at start-up.
        if not self._layers or self._plotted:
            return
        self._plotted = True
        self._legend_width = self.size.width
        self.query_one("#flow-names", Static).update(self._legend())
        plot = self.query_one(PlotWidget)
        h = self._health
        pic = picture(self._layers, h)
        plot.margin_top = 1  # the y label's row only: at 80x24 every row of data counts
        plot.set_xlabel("layer (module, forward order)")
        plot.set_ylabel("gradient RMS")
        self._y_ticks = _PowerOfTen()
        plot.set_y_formatter(self._y_ticks)
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
        weights = [p for p in pic.points if p.mark == ON_SCALE]
        if weights:
            plot.plot([p.x for p in weights], [p.y for p in weights], line_style="white",
                      hires_mode=HiResMode.BRAILLE, label="weights")
        # One scatter series per (mark, colour): few series on deep models; the first series of
        # each mark carries its legend label.
        series: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        for p in pic.points:
            xs, ys = series.setdefault((p.mark, p.colour), ([], []))
            xs.append(p.x)
            ys.append(p.y)
        labelled: set[str] = set()
        # Biases first: where a narrow plot puts a bias in its weights' cell, the weights show.
        for (m, colour), (xs, ys) in sorted(series.items(), key=lambda kv: kv[0][0] != BIAS):
            label = (MARK_LABELS.get(m) or ("biases" if m == BIAS else None)) if m not in labelled else None
            labelled.add(m)
            plot.scatter(xs, ys, marker=m, marker_style=colour, label=label)
        plot.set_ylimits(pic.lo, pic.hi)
        plot.set_xlimits(x0, x1 + (BIAS_SHIFT if any(p.bias for p in pic.points) else 0.0))
        self._set_x_ticks()

    def on_resize(self) -> None:
        if self._plotted:
            self._set_x_ticks()
            if self.size.width != self._legend_width:
                self._legend_width = self.size.width
                self.query_one("#flow-names", Static).update(self._legend())

    def _set_x_ticks(self) -> None:
        """Name the layers on the x axis where the names fit the plot's width, and give the y
        axis as many ticks as its rows hold."""
        plot = self.query_one(PlotWidget)
        # Rows of data: the plot less its margins and the scale's frame (a row above and below).
        rows = max(2, (plot.size.height - plot.margin_top - plot.margin_bottom - 2 + 2) // 2)
        if rows != self._y_ticks.rows:
            self._y_ticks.rows = rows
            plot.set_y_formatter(self._y_ticks)
        # The canvas is right of the y axis's margin; the scale's frame takes a column each side.
        width = max((plot.size.width or self.size.width) - plot.margin_left - 2, 1)
        if width == self._tick_width:
            return
        self._tick_width = width
        labels = x_ticks([layer.name for layer in self._layers], width)
        plot.set_x_formatter(_LayerNames(labels))
        plot.set_xticks(list(map(float, labels)))
