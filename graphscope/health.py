"""Gradient health: the one rule for "how healthy is this gradient".

Owns the thresholds (``Thresholds``, kept in a capture's ``meta`` and so in its file), the bands a
gradient falls in (``Band``), and the judgement of a graph's parameter gradients (``Health``):

- absolute limits on the RMS, multiplied by the capture's ``GradScaler`` loss scale (a scaled
  loss scales every gradient; that is not an explosion);
- relative vanishing: a parameter gradient far below the largest one in the same graph;
- the depth trend: gradients growing (or fading) by orders of magnitude from the output layers
  to the input layers.

The findings (``graphscope.diagnostics``), the picture (``graphscope.export``) and the inspector
(``graphscope.tui``) all read their bands from one ``Health``, so a node's colour and the
findings about it cannot disagree. Plain data: imports only ``graphscope.model``; never torch,
textual or graphviz.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field
from graphscope.model import PARAM, GradStats, Graph, Node


class Band(str, enum.Enum):
    """Where a gradient's magnitude falls; the value is the word the views show."""

    VANISHING = "vanishing"
    HEALTHY = "healthy"
    EXPLODING = "exploding"
    NONFINITE = "nonfinite"
    NONE = "none"  # no gradient recorded, or an empty one: nothing flowed

    def __str__(self) -> str:
        return self.value


class Reason(str, enum.Enum):
    """Why a parameter gradient is vanishing or exploding."""

    LIMIT = "limit"  # beyond an absolute (loss-scaled) RMS limit
    RELATIVE = "relative"  # far below the largest parameter gradient in the graph
    TREND = "trend"  # part of a growth or fade through depth

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Thresholds:
    """When a gradient counts as vanishing, exploding or dead.

    Magnitudes are RMS values (norm / sqrt(numel)) so tensors of any size compare fairly. The
    absolute limits are for an unscaled loss: with a ``GradScaler`` loss scale ``s`` they are
    ``s`` times larger.

    Attributes:
        vanishing_rms: A gradient at or below this RMS is vanishing.
        exploding_rms: A gradient at or above this RMS is exploding.
        vanishing_ratio: A parameter whose RMS is below this fraction of the largest parameter
            RMS in the same graph is vanishing relative to the rest (the sigmoid-stack fade).
        exploding_ratio: The input-side parameters' RMS above this multiple of the output-side
            ones is an explosion through depth. Uniform scaling (e.g. ``GradScaler``) changes
            no ratio, so it is never called exploding by this rule.
        dead_frac: A gating op (ReLU, clamp, hardtanh) that receives a non-zero gradient but
            sends back at least this fraction of exact zeros has dead units. Any other op is
            reported only when everything it sends back is zero. Empty gradients count neither
            as received nor as sent.
        min_layers: The depth rules (ratios) need at least this many parameter gradients.

    Example:
        >>> graphscope.capture(loss, thresholds=Thresholds(exploding_rms=1e3))  # doctest: +SKIP
    """

    vanishing_rms: float = 1e-8
    exploding_rms: float = 1e6
    vanishing_ratio: float = 1e-4
    exploding_ratio: float = 1e4
    dead_frac: float = 0.99
    min_layers: int = 3

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"Thresholds.{f.name} must be a positive finite number, got {v!r}")
        if self.vanishing_rms >= self.exploding_rms:
            raise ValueError(
                f"Thresholds.vanishing_rms ({self.vanishing_rms:g}) must be below exploding_rms "
                f"({self.exploding_rms:g})"
            )

    def to_dict(self) -> dict[str, float]:
        """The thresholds as plain data (how a capture keeps them in ``meta``)."""
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, graph: Graph) -> Thresholds:
        """The thresholds a capture was diagnosed with (the defaults for an older file).

        Raises:
            ValueError: The stored thresholds are not valid.
        """
        stored = graph.meta.get("thresholds")
        if not isinstance(stored, dict):
            return cls()
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in names})


def forward_params(graph: Graph) -> list[Node]:
    """Parameter nodes in forward order (model registration order when known).

    Without a model, backward reaches the last layer's parameters first, so the reverse of the
    execution order (then of the walk order) approximates the forward order.
    """
    params = graph.param_nodes
    if graph.params:
        rank = {p.name: i for i, p in enumerate(graph.params)}
        return sorted(params, key=lambda n: min(rank.get(x, len(rank)) for x in n.names))
    return sorted(
        params,
        key=lambda n: (-(n.exec_order if n.exec_order is not None else -1), -n.id),
    )


@dataclass(frozen=True)
class Verdict:
    """The judgement of one parameter gradient that is not healthy."""

    node: int
    band: Band
    reason: Reason
    rms: float
    rel: float  # its RMS over the largest parameter RMS


@dataclass(frozen=True)
class Health:
    """The judgement of one graph's gradients under one set of thresholds.

    Attributes:
        thresholds: The limits it was judged with.
        scale: The capture's loss scale (1 without a ``GradScaler``).
        layers: Parameter node ids with a finite, non-zero gradient, in forward order.
        top: The parameter with the largest gradient RMS (``None`` without layers).
        top_rms: Its RMS.
        growth: Input-side over output-side mean log RMS, as a factor (1 when too shallow).
        trend: ``Band.VANISHING`` or ``Band.EXPLODING`` when the depth trend passes a ratio.
        verdicts: The parameters that are vanishing or exploding, by node id.
    """

    thresholds: Thresholds
    scale: float = 1.0
    layers: tuple[int, ...] = ()
    top: int | None = None
    top_rms: float = 0.0
    growth: float = 1.0
    trend: Band | None = None
    verdicts: dict[int, Verdict] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: Graph, thresholds: Thresholds | None = None) -> Health:
        """Judge ``graph``'s latest backward; ``thresholds`` default to the capture's own."""
        t = thresholds or Thresholds.of(graph)
        scale = float(graph.meta.get("loss_scale") or 1.0)
        # An empty or all-zero gradient has no magnitude: on the log scale of the depth trend it
        # would stand for 1e-300 and make every other layer look exploding (or vanishing). An
        # empty one is "nothing flowed"; an all-zero one is dead, or idle.
        layers = [
            n for n in forward_params(graph)
            if n.grad is not None and n.grad.finite and n.grad.rms > 0
        ]
        if not layers:
            return cls(thresholds=t, scale=scale)
        rms = {n.id: n.grad.rms for n in layers if n.grad is not None}
        top = max(layers, key=lambda n: rms[n.id])
        top_rms = rms[top.id]
        deep = len(layers) >= t.min_layers
        growth = 1.0
        if deep:
            k = max(1, len(layers) // 3)
            first = sum(math.log(rms[n.id]) for n in layers[:k]) / k
            last = sum(math.log(rms[n.id]) for n in layers[-k:]) / k
            growth = math.exp(first - last)
        trend = None
        if deep and growth <= t.vanishing_ratio:
            trend = Band.VANISHING
        elif deep and growth >= t.exploding_ratio:
            trend = Band.EXPLODING
        verdicts: dict[int, Verdict] = {}
        for i, n in enumerate(layers):
            r = rms[n.id]
            rel = r / top_rms
            if trend is Band.EXPLODING and i < max(1, len(layers) // 3):
                verdicts[n.id] = Verdict(n.id, Band.EXPLODING, Reason.TREND, r, rel)
            elif r >= t.exploding_rms * scale:
                verdicts[n.id] = Verdict(n.id, Band.EXPLODING, Reason.LIMIT, r, rel)
            elif trend is Band.EXPLODING:
                continue  # an explosion through depth is the finding; small ones are its tail
            elif r <= t.vanishing_rms * scale:
                verdicts[n.id] = Verdict(n.id, Band.VANISHING, Reason.LIMIT, r, rel)
            elif deep and rel <= t.vanishing_ratio:
                reason = Reason.TREND if trend is Band.VANISHING else Reason.RELATIVE
                verdicts[n.id] = Verdict(n.id, Band.VANISHING, reason, r, rel)
        return cls(
            thresholds=t,
            scale=scale,
            layers=tuple(n.id for n in layers),
            top=top.id,
            top_rms=top_rms,
            growth=growth,
            trend=trend,
            verdicts=verdicts,
        )

    def band(self, x: Node | GradStats | None) -> Band:
        """The band of a node (a parameter's verdict when it has one) or of bare statistics
        (the absolute, loss-scaled limits)."""
        if isinstance(x, Node):
            verdict = self.verdicts.get(x.id) if x.kind == PARAM else None
            if verdict is not None and x.grad is not None and x.grad.finite:
                return verdict.band
            x = x.grad
        if x is None or x.numel == 0:
            return Band.NONE
        rms = x.rms
        if not x.finite or math.isnan(rms):  # a NaN RMS with no NaN counted: a corrupt file
            return Band.NONFINITE
        if rms <= self.vanishing_rms:
            return Band.VANISHING
        if rms >= self.exploding_rms:
            return Band.EXPLODING
        return Band.HEALTHY

    @property
    def vanishing_rms(self) -> float:
        """The absolute vanishing limit for this capture (loss scale included)."""
        return self.thresholds.vanishing_rms * self.scale

    @property
    def exploding_rms(self) -> float:
        """The absolute exploding limit for this capture (loss scale included)."""
        return self.thresholds.exploding_rms * self.scale

    def position(self, rms: float) -> float:
        """Where ``rms`` sits between the vanishing (0) and exploding (1) limits, log scale,
        clipped to [0, 1]; for shading the healthy range."""
        lo, hi = math.log10(self.vanishing_rms), math.log10(self.exploding_rms)
        if not rms > 0:
            return 0.0
        if math.isinf(rms):
            return 1.0
        return min(max((math.log10(rms) - lo) / (hi - lo), 0.0), 1.0)
