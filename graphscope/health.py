"""Gradient health: the one rule for "how healthy is this gradient".

Owns the thresholds (``Thresholds``, kept in a capture's ``meta`` and so in its file), the bands a
gradient falls in (``Band``), and the judgement of a graph's parameter gradients (``Health``):

- absolute limits on the RMS, multiplied by the capture's ``GradScaler`` loss scale (a scaled
  loss scales every gradient; that is not an explosion);
- relative vanishing: a parameter gradient far below the largest one in the same graph (not
  judged while the largest is past the exploding limit: it would be measured against exploded
  numbers; the same holds for lost gradients);
- the depth trend, relative to the model's own scale: gradients fading (or growing) by orders
  of magnitude from the output layers to the input layers, layer after layer. It is fitted
  through the layers (a module's parameters are one layer), so a 20-layer tanh MLP whose first
  layer gets 1e-5 of the last is a trend, while a few structurally tiny biases among healthy
  layers (before a BatchNorm, behind a layer-scale factor) are not;
- lost gradients: a parameter gradient so far below the model's typical layer that neither a
  structural cause (a layer-scale factor of 1e-6, a rounding residual of a gradient that cancels)
  nor anything else by design explains it: it is vanishing however isolated it is;
- the activation depth trend (``depth_trends``): along a stack of layers, the gradient each
  layer's activation receives. A too-large init grows it layer by layer toward the input while
  the parameter gradients stay even (the activations grow forward as fast), so only this sees it;
- the time trend (``time_trends``): along an unrolled recurrence (the same tanh or sigmoid,
  step after step, fed through ops that share a weight), the gradient each step's activation
  receives, fitted like the depth trend from the first time step to the last. An RNN's
  parameter gradients are dominated by its last steps and look healthy while the gradient that
  reaches its first steps has faded to nothing.

The findings (``graphscope.diagnostics``), the picture (``graphscope.export``) and the inspector
(``graphscope.tui``) all read their bands from one ``Health``, so a node's colour and the
findings about it cannot disagree. Plain data: imports only ``graphscope.model``; never torch,
textual or graphviz.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import math
import re
import statistics
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
    LOST = "lost"  # below Health.lost_rms: too small for any structural cause to explain

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
        vanishing_ratio: A depth trend that fades the gradient to this fraction from the last
            layer to the first is vanishing, and so are the parameters below this fraction of
            the last layer's gradient in it; without a trend, a parameter below this fraction of
            the largest parameter RMS in the graph is vanishing relative to the rest.
        exploding_ratio: A depth trend that grows the gradient by this factor from the last
            layer to the first is an explosion through depth, with the parameters above this
            multiple of the last layer's gradient in it. Uniform scaling (e.g. ``GradScaler``)
            changes no ratio, so it is never called exploding by this rule.
        dead_frac: A gating op (ReLU, clamp, hardtanh) has dead units when at least this
            fraction of the units that received a non-zero gradient send back zero (the zeros
            it only passed on, e.g. from a max-pool above it, are not its own). Any other op is
            reported only when everything it sends back is zero and that starves a parameter
            or input. Empty gradients count neither as received nor as sent.
        min_layers: The depth rules need at least this many parameter gradients (the relative
            rule) and layers (the trend).

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


# A trend is a slope that most layers follow: at least this share of the layer-to-layer steps go
# its way, and no single step carries more than half of it (that is a cliff, not a fade).
_FOLLOW = 0.6
_CLIFF = 0.5
# The depth fit compares every pair of layers; past this many layers it uses an even sample.
_FIT_LAYERS = 400
# Lost gradients. A gradient that is zero by mathematics but computed in floating point keeps a
# rounding residual of about eps of the values it cancels, themselves at least about eps of the
# model's typical gradient: eps**2 of the typical layer (1.4e-14 in float32) is below any residual.
# Tiny by design (a layer-scale factor initialised to 1e-6, times a gradient that is itself up to
# vanishing_ratio of the typical one) stays above 1e-10, the cap for the coarse dtypes whose
# eps**2 would otherwise reach it (bfloat16: 6e-5).
_EPS = {"float64": 2.0**-52, "float32": 2.0**-23, "bfloat16": 2.0**-7, "float16": 2.0**-10}
_BY_DESIGN = 1e-10
# nn.LSTM / nn.GRU / nn.RNN name their stacked layers' parameters weight_ih_l0, bias_hh_l1_reverse.
_RNN_LAYER = re.compile(r"^(?:weight|bias)_\w+?_(l\d+(?:_reverse)?)$")


def layer_key(node: Node) -> str:
    """The layer a parameter belongs to for the depth rule: its module (``blocks.0.conv1`` for
    ``blocks.0.conv1.weight``), one per stacked RNN layer (``lstm.l1``); its own name when it
    has no module."""
    name = node.name or node.label or str(node.id)
    module, _, last = name.rpartition(".")
    rnn = _RNN_LAYER.match(last)
    if rnn:
        return f"{module}.{rnn.group(1)}" if module else rnn.group(1)
    return module or name


@dataclass(frozen=True)
class Verdict:
    """The judgement of one parameter gradient that is not healthy.

    ``rel`` is its RMS over the RMS it was judged against: the trend's output-side reference
    for ``Reason.TREND``, otherwise the largest parameter RMS in the graph.
    """

    node: int
    band: Band
    reason: Reason
    rms: float
    rel: float


@dataclass(frozen=True)
class Health:
    """The judgement of one graph's gradients under one set of thresholds.

    The depth rule works on layers, not single parameters: a module's parameters form one layer
    whose RMS is its largest (a bias that is ~0 by construction does not make its layer look
    faded), in forward order. A trend is the slope of log RMS through the layers (the median of
    the slopes between every pair, so a few odd layers do not move it), accepted only when most
    layer-to-layer steps follow it and no single step carries half of it.

    Attributes:
        thresholds: The limits it was judged with.
        scale: The capture's loss scale (1 without a ``GradScaler``).
        layers: Parameter node ids with a finite, non-zero gradient, in forward order.
        groups: Those ids grouped into the depth rule's layers, in forward order.
        top: The parameter with the largest gradient RMS (``None`` without layers).
        top_rms: Its RMS.
        typical_rms: The median of the layers' RMS: below the vanishing limit, the whole model's
            gradients are tiny (not a few parameters).
        growth: The fitted first-layer over last-layer RMS, as a factor (1 when too shallow).
        trend: ``Band.VANISHING`` or ``Band.EXPLODING`` when the depth trend passes a ratio.
        reference: The output-side parameter a trend is measured against (the largest
            gradient of the last layer); ``None`` without a trend.
        lost_rms: Below this RMS a parameter gradient is lost: ``typical_rms`` times eps**2 of
            the coarsest float dtype computed in the graph (at most 1e-10 of it), past anything a
            structural cause leaves. 0 without layers.
        verdicts: The parameters that are vanishing or exploding, by node id.
    """

    thresholds: Thresholds
    scale: float = 1.0
    layers: tuple[int, ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()
    top: int | None = None
    top_rms: float = 0.0
    typical_rms: float = 0.0
    growth: float = 1.0
    trend: Band | None = None
    reference: int | None = None
    lost_rms: float = 0.0
    verdicts: dict[int, Verdict] = field(default_factory=dict)

    @classmethod
    def of(cls, graph: Graph, thresholds: Thresholds | None = None) -> Health:
        """Judge ``graph``'s latest backward; ``thresholds`` default to the capture's own."""
        t = thresholds or Thresholds.of(graph)
        scale = float(graph.meta.get("loss_scale") or 1.0)
        # An empty or all-zero gradient has no magnitude: on the log scale of the depth trend it
        # would stand for 1e-300 and make every other layer look exploding (or vanishing). An
        # empty one is "nothing flowed"; an all-zero one is dead, or idle. An infinite RMS of
        # finite values (an overflowed norm) has no place on it either: its band is its own.
        layers = [
            n for n in forward_params(graph)
            if n.grad is not None and n.grad.finite and 0 < n.grad.rms < math.inf
        ]
        if not layers:
            return cls(thresholds=t, scale=scale)
        rms = {n.id: n.grad.rms for n in layers if n.grad is not None}
        top = max(layers, key=lambda n: rms[n.id])
        grouped: dict[str, list[int]] = {}
        for n in layers:
            grouped.setdefault(layer_key(n), []).append(n.id)
        groups = [tuple(ids) for ids in grouped.values()]
        group_rms = [max(rms[i] for i in ids) for ids in groups]
        typical = statistics.median(group_rms)
        top_rms = rms[top.id]
        growth, trend = 1.0, None
        if len(groups) >= t.min_layers:
            growth, trend = _trend(group_rms, t)
        deep = len(layers) >= t.min_layers
        ref = max(groups[-1], key=lambda i: rms[i])
        ref_rms = rms[ref]
        lost = typical * _lost_fraction(graph)
        # Next to gradients past the exploding limit, "far below the others" is measured against
        # exploded numbers (an output bias, bounded by its loss, beside 1e16 weight gradients):
        # the explosion is the finding, and only the absolute vanishing limit still applies.
        calm = top_rms < t.exploding_rms * scale
        verdicts: dict[int, Verdict] = {}
        for n in layers:
            r = rms[n.id]
            if trend is Band.VANISHING and r <= ref_rms * t.vanishing_ratio:
                verdicts[n.id] = Verdict(n.id, Band.VANISHING, Reason.TREND, r, r / ref_rms)
            elif trend is Band.EXPLODING and r >= ref_rms * t.exploding_ratio:
                verdicts[n.id] = Verdict(n.id, Band.EXPLODING, Reason.TREND, r, r / ref_rms)
            elif r >= t.exploding_rms * scale:
                verdicts[n.id] = Verdict(n.id, Band.EXPLODING, Reason.LIMIT, r, r / top_rms)
            elif trend is Band.EXPLODING:
                continue  # an explosion through depth is the finding; small ones are its tail
            elif calm and r <= lost:
                verdicts[n.id] = Verdict(n.id, Band.VANISHING, Reason.LOST, r, r / top_rms)
            elif r <= t.vanishing_rms * scale:
                verdicts[n.id] = Verdict(n.id, Band.VANISHING, Reason.LIMIT, r, r / top_rms)
            elif calm and deep and r <= top_rms * t.vanishing_ratio:
                verdicts[n.id] = Verdict(n.id, Band.VANISHING, Reason.RELATIVE, r, r / top_rms)
        return cls(
            thresholds=t,
            scale=scale,
            layers=tuple(n.id for n in layers),
            groups=tuple(groups),
            top=top.id,
            top_rms=top_rms,
            typical_rms=typical,
            growth=growth,
            trend=trend,
            reference=ref if trend is not None else None,
            lost_rms=lost,
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


# Recurrence. An unrolled RNN step is h_t = act(x_t W_ih + h_{t-1} W_hh + b): from one step's
# activation, its predecessor's is a few ops back (addmm <- add <- addmm: at most 4 hops, or a
# GRU/LSTM-cell's gate arithmetic), and both reach the same weight (through its t/view node:
# the hops count those too). A stack of distinct layers has a fresh weight per step, so it is
# depth, not time, and the depth rule judges it.
_RECURRENT = frozenset({"tanh", "sigmoid"})
_RECURRENT_HOPS = 5
# A chain shorter than this is too short for a trend through time to be told from the steps'
# own spread (the benchmark's 10- and 12-step healthy RNNs fade 4e-3 and 2e-4, above the
# vanishing ratio; the 100-step one 1e-26).
_MIN_TIME_STEPS = 8
# Activations whose chains through depth are judged (the same op in every layer of a stack).
_DEPTH_ACTIVATIONS = frozenset({
    "relu", "tanh", "sigmoid", "gelu", "silu", "elu", "leaky_relu", "softplus", "mish", "selu",
    "celu", "hardtanh", "relu6", "hardswish",
})


@dataclass(frozen=True)
class ChainTrend:
    """A gradient fading (or growing) along a chain of one activation: the time axis of an
    unrolled recurrence (``time_trends``) or the layers of a stack (``depth_trends``).

    Attributes:
        band: ``Band.VANISHING`` or ``Band.EXPLODING``.
        growth: The fitted first-step over last-step RMS of the gradient the steps'
            activations receive.
        steps: The activation node of each time step (or layer), first (input side) first.
        shared: Through time, the parameters every step uses (the recurrent weights); through
            depth, the weights of all the layers; in forward order.
        label: The activation's op label (``tanh``).
    """

    band: Band
    growth: float
    steps: tuple[int, ...]
    shared: tuple[int, ...]
    label: str


def time_trends(graph: Graph, thresholds: Thresholds | None = None) -> list[ChainTrend]:
    """The recurrences of ``graph`` whose gradient fades or grows through time past the
    thresholds' ratios (the depth rule's fit, ``_trend``, along the time steps)."""
    t = thresholds or Thresholds.of(graph)
    return _chain_trends(graph, t, _RECURRENT, shared=True, min_steps=_MIN_TIME_STEPS)


def depth_trends(graph: Graph, thresholds: Thresholds | None = None) -> list[ChainTrend]:
    """The stacks of layers whose activations' gradient grows (or fades) through depth past
    the thresholds' ratios: the same activation, layer after layer, each fed through ops with
    weights of its own (``ChainTrend.shared`` is then the weights of every layer, input side
    first). Unlike the parameter depth rule of ``Health``, this reads the gradient the
    activations receive, which a too-large init makes grow toward the input while the parameter
    gradients stay even (each is an activation, grown forward, times a gradient, grown
    backward)."""
    t = thresholds or Thresholds.of(graph)
    return _chain_trends(graph, t, _DEPTH_ACTIVATIONS, shared=False, min_steps=t.min_layers)


def _chain_trends(graph: Graph, t: Thresholds, labels: frozenset[str], *, shared: bool,
                  min_steps: int) -> list[ChainTrend]:
    """Chains of one activation (``labels``), each link a predecessor a few ops back that
    shares a weight with it (``shared``: time steps) or whose weights are all its own (layers),
    judged by ``_trend`` on the gradient each link's activation receives."""
    acts = [n for n in graph.nodes if n.kind == "op" and n.label in labels and n.executed]
    near: dict[int, tuple[set[int], set[int]]] = {}  # act -> (predecessor acts, params)
    for a in acts:
        preds, params = set(), set()
        seen, todo = set(), [(p, 1) for p in graph.producers(a.id)]
        while todo:
            nid, hops = todo.pop()
            if nid in seen:
                continue
            seen.add(nid)
            n = graph.nodes[nid]
            if n.kind == PARAM:
                params.add(nid)
            elif n.kind == "op" and n.label == a.label:
                preds.add(nid)
            elif n.kind == "op" and hops < _RECURRENT_HOPS:
                todo += [(p, hops + 1) for p in graph.producers(nid)]
        near[a.id] = (preds, params)
    # A link's predecessor: the one earlier activation that shares a weight with it (time), or
    # the one whose weights and its own are both there and disjoint (depth).
    before: dict[int, int] = {}
    for a, (preds, params) in near.items():
        if shared:
            linked = [p for p in preds if p in near and near[p][1] & params]
        else:
            linked = [p for p in preds
                      if p in near and params and near[p][1] and not near[p][1] & params]
        if len(linked) == 1:
            before[a] = linked[0]
    # Steps per chain ending at each activation (memoised: one pass however the chains share
    # their pasts). An LSTM step's three gates all link to the previous step's output gate, so
    # chains branch; each activation is judged in one chain only, the longest through it.
    depth: dict[int, int] = {}
    for a in before:
        path = []
        while a in before and a not in depth and len(path) <= len(before):
            path.append(a)
            a = before[a]
        base = depth.get(a, 1)
        for k, p in enumerate(reversed(path), start=1):
            depth[p] = base + k
    ends = sorted(set(before) - set(before.values()), key=lambda a: (-depth.get(a, 0), a))
    covered: set[int] = set()
    order = {n.id: k for k, n in enumerate(forward_params(graph))}
    out = []
    for last in ends:
        chain = [last]
        while chain[-1] in before and before[chain[-1]] not in covered and len(chain) <= len(before):
            chain.append(before[chain[-1]])
        covered.update(chain)
        chain.reverse()
        if len(chain) < min_steps:
            continue
        grads = [graph.nodes[i].grad for i in chain]
        if any(g is None or not g.finite or not 0 < g.rms < math.inf for g in grads):
            continue  # a zero or non-finite step has no place on the log scale
        growth, band = _trend([g.rms for g in grads], t)  # type: ignore[union-attr]
        if band is None:
            continue
        weights = (set.intersection if shared else set.union)(*(near[i][1] for i in chain))
        out.append(ChainTrend(band, growth, tuple(chain),
                             tuple(sorted(weights, key=lambda i: (order.get(i, len(order)), i))),
                             graph.nodes[chain[0]].label))
    return out


def _lost_fraction(graph: Graph) -> float:
    """How far below the typical layer a gradient is lost: eps**2 of the coarsest float dtype
    the graph computes in (float32 when none is recorded), at most ``_BY_DESIGN``."""
    eps = max((_EPS[m.dtype] for n in graph.nodes for m in n.outputs if m.dtype in _EPS),
              default=_EPS["float32"])
    return min(eps * eps, _BY_DESIGN)


def _trend(group_rms: list[float], t: Thresholds) -> tuple[float, Band | None]:
    """The fitted first-over-last factor through the layers, and the trend it makes (if any)."""
    y = [math.log10(r) for r in group_rms]
    at = list(range(len(y)))
    if len(y) > _FIT_LAYERS:
        at = sorted({round(i * (len(y) - 1) / (_FIT_LAYERS - 1)) for i in range(_FIT_LAYERS)})
    slope = statistics.median(
        (y[j] - y[i]) / (j - i) for k, i in enumerate(at) for j in at[k + 1:]
    )
    change = slope * (len(y) - 1)  # log10 of the last layer's RMS over the first's, fitted
    growth = 10.0 ** min(max(-change, -300.0), 300.0)  # 1e-300 .. 1e300: no float overflow
    if t.vanishing_ratio < growth < t.exploding_ratio:
        return growth, None
    along = [(b - a) * (1 if change > 0 else -1) for a, b in itertools.pairwise(y)]
    follows = sum(s > 0 for s in along) >= _FOLLOW * len(along)
    if not follows or max(along) > _CLIFF * abs(change):
        return growth, None
    return growth, Band.VANISHING if change > 0 else Band.EXPLODING
