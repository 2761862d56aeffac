"""What the timeline shows of a run, as plain data: steps, per-layer RMS, markers, one step's
numbers, two steps compared, and the heatmap's cells.

``History`` reads one rank of a run store once (``graphscope.runs``) and ``refresh()`` reads
what training committed since (``since=``), so ``--follow`` costs one query a second. The
judgement of a gradient is ``graphscope.health``'s and its colour ``graphscope.formatting``'s,
as everywhere else in the product. The findings over time are ``graphscope.trends``'.

No textual imports: the screen and widgets (``tui.screens.timeline``, ``tui.widgets.heatmap``)
draw what this module computes, and tests can check it without an app.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from graphscope import formatting
from graphscope.health import Band, Health, Thresholds
from graphscope.model import GradStats, Severity, fmt_count
from graphscope.runs import CaptureInfo, ParamSeries, Run, RunParam, Steps
from graphscope.runs.reader import layer_series
from graphscope.trends import run_thresholds

EVENT_SEVERITY = {"nonfinite": Severity.ERROR, "spike": Severity.WARNING}
"""How bad the recorder's own events are, where trends' findings are not available."""


@dataclass(frozen=True)
class Marker:
    """A finding over time, placed at the step it started at."""

    step: int
    last_step: int | None
    severity: Severity
    kind: str
    message: str
    hint: str = ""


@dataclass(frozen=True)
class ParamNumbers:
    """One parameter's gradient numbers at one step (a decimated row's means)."""

    name: str
    norm: float
    rms: float
    absmax: float
    zero_frac: float
    update: float  # update-to-weight ratio, NaN where not measured
    present: bool


@dataclass(frozen=True)
class StepNumbers:
    """Everything recorded about one step: the per-step values and every parameter's numbers.

    ``lo``/``hi``/``n`` are the stored row the parameter numbers come from: ``n > 1`` for an
    old, decimated stretch of steps, whose numbers are means over it.
    """

    step: int
    loss: float
    loss_nonfinite: bool
    grad_norm: float
    lr: float
    loss_scale: float
    nonfinite: int
    lo: int
    hi: int
    n: int
    params: tuple[ParamNumbers, ...]


@dataclass(frozen=True)
class LayerRatio:
    """One layer's gradient RMS at two steps and their ratio (``b / a``); ``has_a``/``has_b``
    say whether it got a gradient there (NaN with one is a NaN/Inf gradient)."""

    name: str
    a: float
    b: float
    has_a: bool = True
    has_b: bool = True

    @property
    def ratio(self) -> float:
        if not (math.isfinite(self.a) and math.isfinite(self.b)):
            return math.nan
        if self.a == 0:
            return math.inf if self.b > 0 else math.nan
        return self.b / self.a


@dataclass(frozen=True)
class Cells:
    """The heatmap: ``colours[layer][column]`` over columns of steps ``[lo[c], hi[c]]``, each
    the worst gradient RMS of its steps (``values``; NaN where none) in its ``bands``."""

    lo: np.ndarray
    hi: np.ndarray
    values: np.ndarray
    bands: list[list[Band]]
    colours: list[list[str]]

    def column_of(self, step: int) -> int:
        """The column holding ``step`` (clipped to the first and last)."""
        return int(min(max(np.searchsorted(self.hi, step), 0), len(self.hi) - 1)) if len(self.hi) else 0


def columns(first: int, last: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Split steps ``first..last`` into ``width`` columns of (nearly) equal spans, so the
    heatmap lines up with the curves' step axis. With fewer steps than columns a step spans
    several columns. Returns each column's first and last step."""
    total = last - first + 1
    if total <= 0 or width <= 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    c = np.arange(width + 1, dtype=np.int64)
    if total >= width:
        edges = first + (c * total) // width
        return edges[:-1], edges[1:] - 1
    at = first + (c[:-1] * total) // width
    return at, at.copy()


def worst(lo_rms: np.ndarray, hi_rms: np.ndarray, nonfinite: bool, health: Health) -> tuple[float, Band]:
    """The worst RMS among a bucket's rows, from their minima and maxima, and its band.

    NaN/Inf anywhere wins, then the largest value if it is exploding, then the smallest if it
    is vanishing; in the healthy band, whichever extreme lies further from the middle of it. A
    bucket is never its mean: one exploding step among a hundred shows.
    """
    if nonfinite:
        return math.nan, Band.NONFINITE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN (no gradient) bucket
        mn, mx = float(np.nanmin(lo_rms)), float(np.nanmax(hi_rms))
    if math.isnan(mn) or math.isnan(mx):
        return math.nan, Band.NONE
    if band_of(mx, health) is Band.EXPLODING:
        return mx, Band.EXPLODING
    if band_of(mn, health) is Band.VANISHING:
        return mn, Band.VANISHING
    far = abs(health.position(mx) - 0.5) >= abs(health.position(mn) - 0.5)
    return (mx if far else mn), Band.HEALTHY


def band_of(rms: float, health: Health, *, present: bool = True) -> Band:
    """The band of a recorded RMS under ``health``'s absolute (loss-scaled) limits: the rule
    ``Health.band`` applies to a gradient's statistics, here without the rest of them."""
    if not present:
        return Band.NONE
    nonfinite = not math.isfinite(rms)
    return health.band(GradStats(norm=0.0 if nonfinite else rms, mean=0.0, std=0.0, min=0.0,
                                 max=0.0, abs_max=0.0, zero_frac=0.0, nan_count=int(nonfinite),
                                 inf_count=0, numel=1))


def colour(value: float, band: Band, health: Health) -> str:
    """The product's colour for a value in a band (the healthy band shaded by its RMS)."""
    if band is Band.HEALTHY:
        return formatting.rms_colour(value, health)
    return formatting.BAND_COLOURS[band]


class History:
    """One rank of a run, as the timeline shows it.

    Args:
        run: An open run store (``graphscope.runs.open_run``).
        rank: The process whose steps to show; ``None``: the rank that went wrong first in a
            multi-process run (``graphscope.ranks.first_rank``), else the lowest.
        thresholds: Judge the gradients with these instead of the run's own.
    """

    def __init__(self, run: Run, *, rank: int | None = None, thresholds: Thresholds | None = None) -> None:
        self.run = run
        self.thresholds = thresholds or run_thresholds(run)
        self.ranks: list[int] = run.ranks() or [0]
        self.first_wrong: int | None = None
        if len(self.ranks) > 1:
            from graphscope.ranks import analyze_ranks, first_rank

            self.first_wrong = first_rank(analyze_ranks(run, thresholds=self.thresholds))
        if rank is None:
            rank = self.first_wrong if self.first_wrong is not None else self.ranks[0]
        self.rank = rank
        self.params: list[RunParam] = run.params(rank)
        self.steps: Steps = run.steps(rank)
        self.series: ParamSeries = run.param_series(rank)
        self._healths: dict[float, Health] = {}
        self._derive()

    # -- reading ---------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the steps committed since the last read; whether there were any."""
        last = int(self.steps.step[-1]) if len(self.steps) else 0
        new = self.run.steps(self.rank, since=last)
        if not len(new):
            return False
        self.steps = _concat_steps(self.steps, new)
        known = int(self.series.hi[-1]) if len(self.series) else 0
        more = self.run.param_series(self.rank, since=known)
        if not self.params:
            self.params = self.run.params(self.rank)
        # The rows read before stay (they are exact where the writer has since decimated them);
        # a new row overlapping them (never, with the writer's window) replaces them.
        keep = self.series.hi < (more.lo[0] if len(more) else known + 1)
        self.series = _concat_series(self.series, keep, more)
        self._derive()
        return True

    def _derive(self) -> None:
        self.layers = layer_series(self.params, self.series)
        index = {n: i for i, n in enumerate(self.layers.names)}
        member = np.zeros((len(self.params), len(self.layers.names)), dtype=bool)
        for p in self.params:
            member[p.idx, index[p.module]] = True
        # A layer with no gradient at a row is NaN in the series, and so is one whose gradient
        # was NaN: presence tells them apart.
        self.layer_present = (self.series.present.astype(int) @ member.astype(int)) > 0 \
            if len(self.series) else np.zeros((0, len(self.layers.names)), dtype=bool)
        self.captures: dict[int, CaptureInfo] = {c.step: c for c in self.run.captures(self.rank)}
        self.updates: dict[int, np.ndarray] = self.run.updates(self.rank)
        self.nonfinite: dict[int, dict[int, int]] = self.run.nonfinite(self.rank)
        self.markers: list[Marker] = findings_of(self.run, rank=self.rank, thresholds=self.thresholds)

    def headline(self, source: str) -> str:
        """One line for the header: the worst finding first (a narrow header cuts the end)."""
        worst = severity_of(self.markers)
        counts = {sev: sum(m.severity is sev for m in self.markers) for sev in Severity}
        found = ", ".join(fmt_count(n, str(sev)) for sev, n in sorted(counts.items(), reverse=True) if n)
        where = ""
        if len(self.ranks) > 1:
            where = f" · rank {self.rank} of {len(self.ranks)}" + (
                "" if self.first_wrong is None else
                " (went wrong first)" if self.first_wrong == self.rank else
                f" · rank {self.first_wrong} went wrong first")
        return (f"{source}: {found or 'no findings'} · {fmt_count(len(self.steps), 'step')}, "
                f"{fmt_count(len(self.captures), 'capture')}"
                + ("" if worst is None else f" · worst from step {self._first_worst(worst)}") + where)

    def other_rank(self, by: int) -> int:
        """The recorded rank ``by`` places from this one (wrapping around)."""
        i = self.ranks.index(self.rank) if self.rank in self.ranks else 0
        return self.ranks[(i + by) % len(self.ranks)]

    def _first_worst(self, severity: Severity) -> int:
        return min(m.step for m in self.markers if m.severity is severity)

    # -- judging ---------------------------------------------------------------------------------

    def health(self, loss_scale: float = math.nan) -> Health:
        """The judgement at a loss scale (1 without one): the limits move with it."""
        scale = loss_scale if math.isfinite(loss_scale) and loss_scale > 0 else 1.0
        if scale not in self._healths:
            self._healths[scale] = Health(thresholds=self.thresholds, scale=scale)
        return self._healths[scale]

    def health_at(self, step: int) -> Health:
        i = self.index_of(step)
        return self.health(float(self.steps.loss_scale[i]) if i is not None else math.nan)

    # -- steps -------------------------------------------------------------------------------------

    @property
    def first(self) -> int:
        return int(self.steps.step[0]) if len(self.steps) else 0

    @property
    def last(self) -> int:
        return int(self.steps.step[-1]) if len(self.steps) else 0

    def index_of(self, step: int) -> int | None:
        i = int(np.searchsorted(self.steps.step, step))
        return i if i < len(self.steps) and self.steps.step[i] == step else None

    def nearest(self, step: int) -> int:
        """The recorded step nearest ``step`` (the first for an empty run)."""
        if not len(self.steps):
            return 0
        i = int(np.clip(np.searchsorted(self.steps.step, step), 0, len(self.steps) - 1))
        if i > 0 and abs(int(self.steps.step[i - 1]) - step) <= abs(int(self.steps.step[i]) - step):
            i -= 1
        return int(self.steps.step[i])

    def moved(self, step: int, by: int) -> int:
        """The recorded step ``by`` steps (in the run's order) from ``step``, clipped."""
        if not len(self.steps):
            return 0
        i = int(np.searchsorted(self.steps.step, self.nearest(step)))
        return int(self.steps.step[int(np.clip(i + by, 0, len(self.steps) - 1))])

    def marker_steps(self, *, captures: bool = False) -> list[int]:
        """The steps findings start at (or, with ``captures``, the captured steps), ascending."""
        return sorted(self.captures) if captures else sorted({m.step for m in self.markers})

    def at(self, step: int) -> StepNumbers | None:
        """The numbers of ``step``, or ``None`` when it was not recorded."""
        i = self.index_of(step)
        row = self.series.row_of(step)
        if i is None or row is None:
            return None
        s, p = self.steps, self.series
        ratios = self.updates.get(step)
        params = []
        for q in self.params:
            norm = float(p.norm[row, q.idx])
            params.append(ParamNumbers(
                q.name, norm, norm / math.sqrt(max(q.numel, 1)), float(p.absmax[row, q.idx]),
                float(p.zero_frac[row, q.idx]),
                float(ratios[q.idx]) if ratios is not None and q.idx < len(ratios) else math.nan,
                bool(p.present[row, q.idx])))
        return StepNumbers(
            step, float(s.loss[i]), bool(s.loss_nonfinite[i]), float(s.grad_norm[i]),
            float(s.lr[i]), float(s.loss_scale[i]), int(s.nonfinite[i]),
            int(p.lo[row]), int(p.hi[row]), int(p.n[row]), tuple(params))

    def compare(self, a: int, b: int) -> list[LayerRatio]:
        """Every layer's gradient RMS at steps ``a`` and ``b`` (NaN where not recorded)."""
        ra, rb = self.series.row_of(a), self.series.row_of(b)

        def rms(row: int | None, j: int) -> float:
            return math.nan if row is None else float(self.layers.rms[row, j])

        def has(row: int | None, j: int) -> bool:
            return row is not None and bool(self.layer_present[row, j])

        return [LayerRatio(name, rms(ra, j), rms(rb, j), has(ra, j), has(rb, j))
                for j, name in enumerate(self.layers.names)]

    def cells(self, width: int) -> Cells:
        """The heatmap at ``width`` columns: each layer's worst RMS per column of steps."""
        lo, hi = columns(self.first, self.last, width if len(self.steps) else 0)
        layers = self.layers
        k, n = len(layers.names), len(lo)
        values = np.full((k, n), np.nan)
        bands = [[Band.NONE] * n for _ in range(k)]
        colours = [[formatting.BAND_COLOURS[Band.NONE]] * n for _ in range(k)]
        for c in range(n):
            a = int(np.searchsorted(layers.hi, lo[c], side="left"))
            b = int(np.searchsorted(layers.lo, hi[c], side="right"))
            if a >= b:
                continue
            s0 = int(np.searchsorted(self.steps.step, lo[c], side="left"))
            s1 = int(np.searchsorted(self.steps.step, hi[c], side="right"))
            scales = self.steps.loss_scale[s0:s1]
            health = self.health(float(np.nanmax(scales)) if np.isfinite(scales).any() else math.nan)
            present = self.layer_present[a:b]
            bad = present & ~np.isfinite(layers.rms[a:b])
            for j in range(k):
                if not present[:, j].any():
                    continue
                v, band = worst(layers.rms_min[a:b, j], layers.rms_max[a:b, j], bool(bad[:, j].any()), health)
                values[j, c], bands[j][c], colours[j][c] = v, band, colour(v, band, health)
        return Cells(lo, hi, values, bands, colours)


def findings_of(run: Run, *, rank: int = 0, thresholds: Thresholds | None = None) -> list[Marker]:
    """The run's findings over time (``graphscope.trends``), by the step they started at; of a
    multi-process run, this rank's and the cross-rank ones about it (``graphscope.ranks``)."""
    from graphscope.ranks import analyze_ranks

    return [Marker(f.step, f.last_step, f.severity, f.kind, f.message, f.hint)
            for f in analyze_ranks(run, ranks=[rank], thresholds=thresholds)]


def _concat_steps(a: Steps, b: Steps) -> Steps:
    return Steps(**{f: (a.lrs + b.lrs if f == "lrs" else np.concatenate([getattr(a, f), getattr(b, f)]))
                    for f in Steps.__dataclass_fields__})


def _concat_series(a: ParamSeries, keep: np.ndarray, b: ParamSeries) -> ParamSeries:
    return ParamSeries(**{f: np.concatenate([getattr(a, f)[keep], getattr(b, f)])
                          for f in ParamSeries.__dataclass_fields__})


def fmt_ratio(x: float) -> str:
    """A ratio for people: ``x3.2``, ``x1.2e+04``, ``-`` when there is none."""
    return "-" if math.isnan(x) else f"x{formatting.fmt_num(x)}"


def severity_of(markers: Sequence[Marker]) -> Severity | None:
    """The worst of some markers' severities."""
    return max((m.severity for m in markers), default=None)
