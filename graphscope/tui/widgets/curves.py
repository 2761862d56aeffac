"""Loss and total gradient norm over a run's steps, on a log axis (textual-plot), with the cursor.

Both curves are log10 of their values, so a divergence (geometric growth) is a straight line
going up. A long run is drawn through its envelope (the minimum and maximum of each bucket of
steps, ``envelope``) so a spike is never averaged away and redrawing on every cursor move stays
cheap. Steps whose loss or gradients were NaN/Inf are marked ``×`` at the top, in the
non-finite colour; values at or below zero cannot be placed on the log axis and are left out.
"""

from __future__ import annotations

import math

import numpy as np
from textual_plot import HiResMode, PlotWidget

from graphscope import formatting
from graphscope.health import Band
from graphscope.tui.history import History
from graphscope.tui.widgets.flow import _PowerOfTen
from graphscope.tui.widgets.heatmap import label_width

LOSS, NORM, CURSOR, MARKED = "#90caf9", "#ffb74d", "white", "grey50"
NONFINITE = "×"
BUCKETS = 400
"""At most this many buckets of steps are drawn; each contributes its minimum and maximum."""


def envelope(x: np.ndarray, y: np.ndarray, buckets: int = BUCKETS) -> tuple[np.ndarray, np.ndarray]:
    """``x, y`` with NaNs dropped, thinned to each bucket's minimum and maximum in step order."""
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) <= 2 * buckets:
        return x, y
    edges = np.linspace(0, len(x), buckets + 1).astype(int)
    xs, ys = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        if a == b:
            continue
        lo, hi = a + int(np.argmin(y[a:b])), a + int(np.argmax(y[a:b]))
        for i in sorted({lo, hi}):
            xs.append(x[i])
            ys.append(y[i])
    return np.array(xs), np.array(ys)


def _log(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(v > 0, np.log10(np.where(v > 0, v, 1.0)), np.nan)


class Curves(PlotWidget):
    """The loss and gradient-norm curves of ``history``; ``draw`` shows the cursor (and mark)."""

    can_focus = False

    def __init__(self, history: History, **kw) -> None:
        super().__init__(allow_pan_and_zoom=False, **kw)
        self.history = history

    def on_mount(self) -> None:
        # Room for the tick labels only: the colours of the curves are named in the summary.
        self.margin_top, self.margin_bottom = 0, 2

    def on_resize(self) -> None:
        # The axis as wide as the heatmap's names: its columns sit under the same steps.
        width = label_width(self.size.width, self.history.layers.names)
        if width != self.margin_left:
            self.margin_left = width
            # The margin's canvas takes its new width at the next layout, blank: the tick labels
            # are drawn again onto it then (at 80x24 the y axis had no numbers at all).
            self.call_after_refresh(self.refresh, layout=True)

    def draw(self, cursor: int, mark: int | None = None) -> None:
        """Plot the curves again with a vertical line at ``cursor`` (and one at ``mark``)."""
        h = self.history
        self.clear()
        steps = h.steps
        if not len(steps):
            return
        x = steps.step.astype(float)
        loss, norm = _log(steps.loss), _log(steps.grad_norm)
        finite = np.concatenate([loss[np.isfinite(loss)], norm[np.isfinite(norm)]])
        lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (-1.0, 1.0)
        pad = max((hi - lo) * 0.08, 0.25)
        lo, hi = lo - pad, hi + pad
        ticks = _PowerOfTen()
        # At most a tick a row: more land on the same row and overwrite each other.
        ticks.rows = max(2, self.size.height - self.margin_top - self.margin_bottom)
        self.set_y_formatter(ticks)
        for y, colour, label in ((loss, LOSS, "loss"), (norm, NORM, "grad norm")):
            ex, ey = envelope(x, y)
            if len(ex):
                self.plot(ex, ey, line_style=colour, hires_mode=HiResMode.BRAILLE, label=label)
        bad = steps.loss_nonfinite | ~np.isfinite(steps.grad_norm)
        if bad.any():
            top = hi - 0.02 * (hi - lo)
            self.scatter(x[bad], np.full(int(bad.sum()), top), marker=NONFINITE,
                         marker_style=formatting.BAND_COLOURS[Band.NONFINITE], label="NaN/Inf")
        if mark is not None:
            self.add_v_line(float(mark), line_style=MARKED)
        self.add_v_line(float(cursor), line_style=CURSOR)
        x0, x1 = float(x[0]), float(x[-1])
        self.set_xlimits(x0 - 0.5, x1 + 0.5 if x1 > x0 else x0 + 0.5)
        self.set_ylimits(lo, hi if math.isfinite(hi) else lo + 1)
