"""Findings over time: a recorded run's history -> what went wrong, and the step it started at.

Pure functions over what a run store holds (``graphscope.runs``): the per-step loss and total
gradient norm, per-parameter norms and zero fractions, update-to-weight ratios, and the
findings of the full captures. Each rule looks at the run against its own history, so one
noisy step is not a finding:

- ``nonfinite``: the first step whose loss or gradients held NaN/Inf (an error); a GradScaler's
  skipped overflow steps are not it (``skipped_steps``, info, unless they never stop).
- ``divergence``: loss and gradient norm growing together, geometrically (fast: 5x a step twice
  running; sustained: 10x over 4 growing steps), rising in a zigzag (their medians over a few
  steps far above their best: SGD with momentum at too high a learning rate), or both jumping
  two decades above their first step's and staying there (Adam at a huge learning rate); found
  while the numbers are still finite, with how many steps before they were not (``found_at``),
  naming the parameters whose gradient grew fastest. Loss and gradient norm are judged unscaled
  (GradScaler).
- ``spike``: a gradient norm far above the run's recent median (``is_spike``, the rule the
  recorder also uses to take a capture at that moment).
- ``dying_layer``: a layer whose weight gradient's share of exact zeros jumped and stayed
  (units that stopped firing after an update).
- ``vanishing_worse``: the input-side layers' gradients falling relative to the output side's
  over training (saturation setting in), as a ratio, so a converging loss that shrinks every
  gradient alike is not one.
- ``update_ratio``: ``||update|| / ||weight||`` per optimizer param group far from ~1e-3
  (learning rate too high or too low); a warning when a large one does harm (the loss did not
  fall, or the update outweighs the weight), else info.
- ``accumulating``: ``.grad`` carried over optimizer steps, step after step (``zero_grad()``
  missing).
- ``plateau``: a loss that stopped moving while the input-side gradients vanish.
- the captures' own warnings and errors (vanishing, exploding, dead, ...), each once, with the
  first and last captured step that showed it.

Imports the model, health and the run store; never torch or textual.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from graphscope.formatting import fmt_num
from graphscope.health import Thresholds
from graphscope.model import Severity
from graphscope.runs import Run, RunParam, Steps

SPIKE_FACTOR = 10.0  # a gradient norm this many times the recent median is a spike
SPIKE_HISTORY = 20  # steps of recent history a spike is measured against
SPIKE_MIN_HISTORY = 8  # fewer finite steps than this: no judgement yet
# Divergence, three ways (loss and gradient norm together, so one large batch is not one):
# - fast: an unstable update multiplies the gradient by |1 - lr x curvature| per step, which for
#   a learning rate far too high is 10-1e6x per step (diagnosis benchmark: lr_too_high 163x then
#   1.9e6x, then Inf two steps later). A healthy gradient norm may jump once (a spike, then back)
#   but does not grow 5x twice running with the loss rising both times: 2 steps of >= 5x is
#   found 2 steps after the onset, while such a run still has its steps before the overflow.
DIVERGE_FAST_STEPS = 2
DIVERGE_FAST_FACTOR = 5.0
# - sustained: slower geometric growth (lr x weight_decay just above 2: 1.5x per step in the
#   weights) shows as 4 growing steps in a row with 10x over them; 4 steps of a healthy run's
#   noise rising together in loss and gradient by 10x in all is not seen (benchmark, 150 steps
#   of every healthy set-up).
DIVERGE_STEPS = 4
DIVERGE_GROWTH = 10.0
# - blown up: Adam's steps are lr-sized whatever the gradient, so a huge lr throws the loss up
#   at once and keeps it there, finite, with no geometric stretch to see (adam_huge_lr_transformer:
#   0.69 -> 2.7e7 in one step, above 1e4 after). Loss and gradient norm both 100x (two decades)
#   above their first step's, 5 steps in a row, is a run that has left its starting basin; a
#   healthy loss falls from its first step, and one bad batch is one step, not five.
DIVERGE_JUMP = 100.0
DIVERGE_JUMP_STEPS = 5
# - rising while oscillating: SGD with momentum at too high a learning rate (its updates add up
#   to lr / (1 - momentum) per step, 10x lr at momentum 0.9) overshoots back and forth, so the
#   loss and gradient norm rise in a zigzag: no run of growing steps for the rules above, until
#   the last few steps blow up at once. Judged on robust levels instead of single steps: the
#   median over the last DIVERGE_WINDOW steps (two bad batches in them move it little), against
#   the lowest such median so far (the run's best level). The loss's level DIVERGE_LOSS_RISE x
#   its best and DIVERGE_LOSS_START x its first step's (all progress lost, and more), with the
#   gradient norm's level DIVERGE_GRAD_RISE x its own best, both still rising over the last
#   half window. A healthy run's loss falls from its first step and its noise or one spike does
#   not move a median this far (benchmark: 150 steps of every healthy set-up; momentum runs at
#   sound learning rates in tests/test_trends.py).
DIVERGE_WINDOW = 6
DIVERGE_LOSS_RISE = 4.0
DIVERGE_LOSS_START = 2.0
DIVERGE_GRAD_RISE = 4.0
DYING_JUMP = 0.5  # a zero fraction this much above the layer's early level ...
DYING_STAY = 5  # ... for at least this many recorded steps, to the end of the run
# Update-to-weight ratios: ~1e-3 is the usual rule of thumb for a healthy learning rate. Above
# 0.1 (10% of the weight per step) is aggressive; it is a warning when it does harm: the loss
# did not fall (or went non-finite), or the update is as large as the weight itself (>= 1: the
# step replaces the weight instead of refining it). An aggressive step whose loss falls is info
# (a tiny model at a high learning rate trains fine: norm_of_zero_distance, ratio 0.18, loss
# 4.25 -> 0.27).
UPDATE_HIGH = 1e-1
UPDATE_HARMFUL = 1.0
UPDATE_LOW = 1e-6  # ... below this: too low (info: a frozen-on-purpose group looks the same)
# A GradScaler skips a step whose scaled gradients overflowed and halves its scale: normal while
# it finds its scale (65536 down to what the model tolerates, a handful of halvings). This many
# skipped steps in a row is no longer the scaler searching: the gradients are non-finite at any
# scale (2**16 of halving covers the default initial scale down to 1).
SCALER_SKIP_LIMIT = 16
ACCUMULATING_STEPS = 3  # steps in a row with .grad carried over an optimizer step
PLATEAU_STEPS = 50  # a loss flat over at least this many steps ...
PLATEAU_CHANGE = 1e-3  # ... changing by less than this fraction


@dataclass(frozen=True)
class RunFinding:
    """One finding over time: what, from which step, about which parameters, and what to try.

    Attributes:
        kind: ``nonfinite``, ``divergence``, ``spike``, ``dying_layer``, ``vanishing_worse``,
            ``update_ratio``, ``accumulating``, ``plateau``, ``skipped_steps``, or a capture
            finding's kind
            (``vanishing``, ``exploding``, ``dead``, ...).
        severity: As for a capture's findings.
        step: The step it started at.
        last_step: The last step it was seen at (``None``: still at the end of the run).
        params: The parameters (or layers) it is about.
        message: What happened, where and when, with the numbers.
        hint: Why it happens and what to try.
        rank: The process that recorded it.
        found_at: The step whose numbers completed the evidence (``None``: ``step``): a rule
            that needs several steps of history starts its finding before it can be found.
    """

    kind: str
    severity: Severity
    step: int
    last_step: int | None
    params: tuple[str, ...]
    message: str
    hint: str
    rank: int = 0
    found_at: int | None = None

    def __str__(self) -> str:
        return f"step {self.step}: [{self.severity}] {self.message}"


def is_spike(history: Sequence[float], value: float) -> bool:
    """Whether a gradient norm ``value`` is a spike against the recent ``history`` (oldest
    first): at least ``SPIKE_FACTOR`` times the median of the last ``SPIKE_HISTORY`` finite
    norms, once there are ``SPIKE_MIN_HISTORY`` of them. A non-finite value is not a spike
    (it is its own finding)."""
    if not math.isfinite(value):
        return False
    recent = [h for h in history[-SPIKE_HISTORY:] if math.isfinite(h) and h > 0]
    if len(recent) < SPIKE_MIN_HISTORY:
        return False
    return value >= SPIKE_FACTOR * float(np.median(recent))


def analyze(run: Run, *, rank: int = 0, thresholds: Thresholds | None = None) -> list[RunFinding]:
    """The findings over time of one rank of a run, ordered by the step they started at.

    Args:
        run: An open run store (``graphscope.runs.open_run``).
        rank: Which process's steps to judge.
        thresholds: The limits to judge with; the run's own (those its captures used) when
            ``None``.

    Example:
        >>> for f in analyze(open_run("runs/exp1")):  # doctest: +SKIP
        ...     print(f)
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # medians of all-NaN stretches
        return _analyze(run, rank, thresholds or run_thresholds(run))


def _analyze(run: Run, rank: int, t: Thresholds) -> list[RunFinding]:
    steps = run.steps(rank)
    params = run.params(rank)
    out: list[RunFinding] = []
    if len(steps):
        skipped = _scaler_skipped(steps)
        nonfinite = _nonfinite(run, steps, params, rank, skipped)
        first_bad = nonfinite.step if nonfinite else None
        out += _skipped_steps(steps, skipped, first_bad, rank)
        out += _divergence(steps, run.param_series(rank), params, first_bad, rank,
                           run.meta.get("optimizer"))
        out += _spikes(steps, first_bad, rank)
        if nonfinite:
            out.append(nonfinite)
        out += _accumulating(steps, run.param_series(rank), params, rank)
        series = run.layer_series(rank)
        out += _dying(run, params, rank, first_bad)
        out += _vanishing_worse(series, t, rank, first_bad)
        out += _plateau(steps, series, t, rank, first_bad)
    out += _update_ratio(run, params, rank, steps)
    out += _from_captures(run, rank)
    out.sort(key=lambda f: (f.step, -f.severity))
    return out


def worst(findings: Sequence[RunFinding]) -> Severity | None:
    """The worst severity among ``findings`` (``None`` when there are none)."""
    return max((f.severity for f in findings), default=None)


def first_nonfinite_loss(steps: Steps) -> int | None:
    """The first step whose loss was NaN or Inf, or ``None``."""
    idx = np.flatnonzero(steps.loss_nonfinite)
    return int(steps.step[idx[0]]) if idx.size else None


# -- the rules ------------------------------------------------------------------------------------


def run_thresholds(run: Run) -> Thresholds:
    """The limits the run's captures were judged with (the defaults when it kept none, or
    kept ones this version does not know)."""
    d = run.meta.get("thresholds")
    try:
        return Thresholds(**d) if isinstance(d, dict) else Thresholds()
    except (TypeError, ValueError):
        return Thresholds()


def _names(params: list[RunParam], idx: Sequence[int], limit: int = 3) -> str:
    names = [params[i].name for i in idx]
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _unscaled(steps: Steps, values: np.ndarray) -> np.ndarray:
    """``values`` (the loss, or gradient norms) as the model computed them: divided by the
    GradScaler's scale where one was recorded (scaled, they move with the scale, not with
    training: a halving scale would look like a falling gradient)."""
    scale = steps.loss_scale
    ok = np.isfinite(scale) & (scale > 0)
    return np.where(ok, values / np.where(ok, scale, 1.0), values)


def _loss(steps: Steps) -> np.ndarray:
    return _unscaled(steps, steps.loss)


def _scaler_skipped(steps: Steps) -> np.ndarray:
    """Per step, whether it is a GradScaler's skipped step: a scaled loss that is finite and
    gradients that are not (``scaler.step`` skips the update and lowers the scale), within the
    first ``SCALER_SKIP_LIMIT`` of a stretch of them."""
    scaled = np.isfinite(steps.loss_scale) & (steps.loss_scale > 0)
    grads_bad = (steps.nonfinite > 0) | ~np.isfinite(steps.grad_norm)
    skip = scaled & grads_bad & ~steps.loss_nonfinite
    for start, end in _runs_of(skip):
        skip[start + SCALER_SKIP_LIMIT:end] = False  # past the limit: non-finite at any scale
    return skip


def _skipped_steps(steps: Steps, skipped: np.ndarray, first_bad: int | None,
                   rank: int) -> list[RunFinding]:
    idx = np.flatnonzero(skipped)
    if first_bad is not None:
        idx = idx[steps.step[idx] < first_bad]
    if not idx.size:
        return []
    first, last = int(steps.step[idx[0]]), int(steps.step[idx[-1]])
    lo, hi = steps.loss_scale[idx[0]], steps.loss_scale[idx[-1]]
    msg = (f"The GradScaler skipped {len(idx)} step(s) whose scaled gradients overflowed "
           f"(steps {first} to {last}; loss scale {fmt_num(lo)} -> {fmt_num(hi)})")
    hint = ("Normal while the scaler lowers its scale to what the model tolerates; only steps "
            "skipped throughout training would mean the gradients overflow at any scale")
    return [RunFinding("skipped_steps", Severity.INFO, first, last, (), msg, hint, rank)]


def _nonfinite(run: Run, steps: Steps, params: list[RunParam], rank: int,
               skipped: np.ndarray) -> RunFinding | None:
    bad = steps.loss_nonfinite | (steps.nonfinite > 0) | ~np.isfinite(steps.grad_norm)
    idx = np.flatnonzero(bad & ~skipped)
    if not idx.size:
        return None
    i = int(idx[0])
    step = int(steps.step[i])
    which = run.nonfinite(rank).get(step, {})
    where = ""
    if which:
        where = (f" in {len(which)} parameter gradient(s) ({_names(params, sorted(which))}; "
                 f"{sum(which.values())} NaN/Inf elements)")
    loss_bad = bool(steps.loss_nonfinite[i])
    what = "the loss and the gradients were" if loss_bad and which else (
        "the loss was" if loss_bad else "the gradients were")
    before = steps.loss[i - 1] if i else math.nan
    msg = f"Step {step}: {what} non-finite for the first time{where}"
    if i and math.isfinite(before):
        msg += f"; the step before, the loss was {fmt_num(before)}"
    captured = [c.step for c in run.captures(rank) if c.reason == "nonfinite" and c.step >= step]
    hint = ("Open the capture of step {s} (graphscope view RUN, then enter on it) to see the op "
            "where the NaN was born; if the loss grew before it, the learning rate is too high "
            "for this model (lower it, or clip with torch.nn.utils.clip_grad_norm_)").format(
        s=captured[0] if captured else step)
    return RunFinding("nonfinite", Severity.ERROR, step, None, tuple(params[k].name for k in sorted(which)),
                      msg, hint, rank)


def _runs_of(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, end) index pairs, end exclusive, of the True stretches of ``mask``."""
    out, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(mask)))
    return out


def _divergence(steps: Steps, series, params: list[RunParam], first_bad: int | None,
                rank: int, optimizer: dict | None = None) -> list[RunFinding]:
    """A training run diverging, found while its numbers are still finite: loss and gradient
    norm growing together geometrically (fast or sustained), rising in a zigzag, or both blown
    far above their first step's and staying there (see ``DIVERGE_*``); ``optimizer`` is the
    run's meta about it (its momentum names the cause in the hint)."""
    g, loss = _unscaled(steps, steps.grad_norm), _loss(steps)
    finite = np.isfinite(g) & np.isfinite(loss) & (g > 0)
    if first_bad is not None:
        finite &= steps.step < first_bad
    # (lo, hi, how): the evidence runs from step lo's numbers to step hi's; the earliest found.
    found = [f for f in (_grew(g, loss, finite), _rose(g, loss, finite), _jumped(g, loss, finite))
             if f is not None]
    if not found:
        return []
    lo, hi, how = min(found, key=lambda f: f[1])
    onset, seen = int(steps.step[lo + 1]), int(steps.step[hi])
    if how == "grew":
        per = (g[hi] / g[lo]) ** (1 / (hi - lo))
        msg = (f"Divergence from step {onset}: the gradient norm grew {fmt_num(g[hi] / g[lo])}x "
               f"in {hi - lo} steps ({per:.2g}x per step, {fmt_num(g[lo])} -> {fmt_num(g[hi])}) "
               f"while the loss rose {fmt_num(loss[lo])} -> {fmt_num(loss[hi])}")
    elif how == "rose":
        last = np.flatnonzero(finite[:hi + 1] & (loss[:hi + 1] > 0))[-DIVERGE_WINDOW:]
        msg = (f"Divergence from step {onset}: the loss and the gradient norm rose while "
               f"swinging up and down, from {fmt_num(loss[lo])} and {fmt_num(g[lo])} at step "
               f"{int(steps.step[lo])} to medians of {fmt_num(float(np.median(loss[last])))} "
               f"and {fmt_num(float(np.median(g[last])))} over steps {int(steps.step[last[0]])}-"
               f"{seen} (no run of growing steps: one step up, the next down)")
    else:
        onset = int(steps.step[hi - DIVERGE_JUMP_STEPS + 1])
        at = hi - DIVERGE_JUMP_STEPS + 1
        msg = (f"Divergence from step {onset}: the loss jumped from {fmt_num(loss[lo])} (step "
               f"{int(steps.step[lo])}) to {fmt_num(loss[at])} and the gradient norm from "
               f"{fmt_num(g[lo])} to {fmt_num(g[at])}, and both stayed over "
               f"{fmt_num(DIVERGE_JUMP)}x higher for {DIVERGE_JUMP_STEPS} steps")
    fastest = _fastest_growing(series, params, int(steps.step[lo]), seen)
    if fastest:
        msg += f"; fastest in {_names(params, fastest)}"
    if first_bad is not None and first_bad > seen:
        msg += (f"; found at step {seen}, {first_bad - seen} steps before the values became "
                f"non-finite (step {first_bad})")
    end = first_bad - 1 if first_bad is not None else int(steps.step[-1])
    return [RunFinding("divergence", Severity.WARNING, onset, end,
                       tuple(params[i].name for i in fastest), msg,
                       _divergence_hint(steps, lo + 1, how, optimizer), rank, seen)]


def _grew(g: np.ndarray, loss: np.ndarray, finite: np.ndarray) -> tuple[int, int, str] | None:
    """Loss and gradient norm growing step after step: fast (``DIVERGE_FAST_*``) or sustained
    (``DIVERGE_STEPS``, ``DIVERGE_GROWTH``)."""
    n = len(g)
    grow = np.ones(n)
    up = np.zeros(n, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        grow[1:] = np.where(finite[1:] & finite[:-1], g[1:] / g[:-1], 1.0)
    up[1:] = finite[1:] & finite[:-1] & (grow[1:] > 1) & (loss[1:] > loss[:-1])
    for start, end in _runs_of(up):
        lo = start - 1  # up[i] says step i grew from step i-1: the stretch begins one earlier
        for hi in range(start, end):
            k = DIVERGE_FAST_STEPS
            if hi - lo >= k and (grow[hi - k + 1:hi + 1] >= DIVERGE_FAST_FACTOR).all():
                return hi - k, hi, "grew"
            if hi - lo >= DIVERGE_STEPS and g[hi] >= DIVERGE_GROWTH * g[lo]:
                return lo, hi, "grew"
    return None


def _rose(g: np.ndarray, loss: np.ndarray, finite: np.ndarray) -> tuple[int, int, str] | None:
    """Loss and gradient norm rising in a zigzag: their medians over ``DIVERGE_WINDOW`` steps
    far above the lowest such medians so far (see ``DIVERGE_LOSS_RISE``); the onset is the
    last step at or below the loss's best level."""
    w = DIVERGE_WINDOW
    idx = np.flatnonzero(finite & (loss > 0))
    if idx.size < w + w // 2:
        return None
    # Judged over the finite steps in order (a GradScaler's skipped steps drop out).
    lg, ll = np.log(g[idx]), np.log(loss[idx])
    mg = np.median(np.lib.stride_tricks.sliding_window_view(lg, w), axis=1)
    ml = np.median(np.lib.stride_tricks.sliding_window_view(ll, w), axis=1)
    bg, bl = np.minimum.accumulate(mg), np.minimum.accumulate(ml)
    h = w // 2
    hit = ((ml - bl >= math.log(DIVERGE_LOSS_RISE)) & (ml - ll[0] >= math.log(DIVERGE_LOSS_START))
           & (mg - bg >= math.log(DIVERGE_GRAD_RISE)))
    hit[h:] &= (ml[h:] > ml[:-h]) & (mg[h:] > mg[:-h])
    hit[:h] = False
    if not hit.any():
        return None
    j = int(np.argmax(hit))  # window j ends at finite step j + w - 1
    end = j + w - 1
    # The last step at the best level before the window (else, the first one at all: the
    # best window and this one overlap).
    at_best = np.flatnonzero(ll[:end] <= bl[j])
    before = at_best[at_best <= j]
    lo = int(before[-1] if before.size else at_best[0])
    return int(idx[lo]), int(idx[end]), "rose"


def _jumped(g: np.ndarray, loss: np.ndarray, finite: np.ndarray) -> tuple[int, int, str] | None:
    """Loss and gradient norm both ``DIVERGE_JUMP`` x their first finite step's, for
    ``DIVERGE_JUMP_STEPS`` steps in a row."""
    if not finite.any():
        return None
    first = int(np.argmax(finite))
    high = finite & (g >= DIVERGE_JUMP * g[first]) & (loss >= DIVERGE_JUMP * loss[first])
    for start, end in _runs_of(high):
        if end - start >= DIVERGE_JUMP_STEPS:
            return first, start + DIVERGE_JUMP_STEPS - 1, "jumped"
    return None


def _divergence_hint(steps: Steps, at: int, how: str, optimizer: dict | None) -> str:
    """Why a run diverges and what to try, with the run's momentum and learning rates when it
    recorded them."""
    hint = "Each update overshoots and makes the next gradient larger: "
    momentum = [m for m in (optimizer or {}).get("momentum", [])
                if isinstance(m, (int, float)) and 0 < m < 1]
    lrs = [lr for lr in (steps.lrs[at] if at < len(steps.lrs) else []) if lr > 0]
    if momentum:
        m = max(momentum)
        lr = max(lrs) if lrs else None
        hint += (f"with momentum {m:g}, each step adds the earlier steps' updates, so the weights "
                 f"move up to lr / (1 - momentum) = {1 / (1 - m):.3g}x the learning rate per step"
                 + (f" (lr {fmt_num(lr)}: {fmt_num(lr / (1 - m))} in effect)" if lr else "")
                 + ", and a learning rate stable without momentum swings back and forth, further "
                 f"each time. Lower the learning rate (about {1 / (1 - m):.2g}x lower takes steps "
                 "the size they would have without momentum) or the momentum, ")
    elif how == "rose":
        hint += ("a zigzag that keeps rising is the mark of SGD momentum at too high a learning "
                 "rate (with momentum m the weights move lr / (1 - m) per step, 10x lr at 0.9). "
                 "Lower the learning rate or the momentum, ")
    else:
        hint += "lower the learning rate (or its warm-up peak), "
    first = [lr for lr in (steps.lrs[0] if len(steps.lrs) else []) if lr > 0]
    if lrs and first and max(lrs) >= 1.5 * max(first):
        hint += (f"stop the schedule's rise before it (the learning rate grew {fmt_num(max(first))}"
                 f" -> {fmt_num(max(lrs))} by step {int(steps.step[at])}), ")
    return hint + ("clip gradients with torch.nn.utils.clip_grad_norm_, and check that lr x "
                   "weight_decay is well below 1 (for Adam, that the learning rate is ~1e-3 or "
                   "less: its steps are lr-sized however small the gradient)")


def _fastest_growing(series, params: list[RunParam], a: int, b: int, limit: int = 3) -> list[int]:
    """The parameters whose gradient norm grew the most from step ``a`` to step ``b``."""
    ra, rb = series.row_of(a), series.row_of(b)
    if ra is None or rb is None or ra == rb:
        return []
    with np.errstate(divide="ignore", invalid="ignore"):
        growth = series.norm[rb] / series.norm[ra]
    ok = np.flatnonzero(np.isfinite(growth) & (growth > 1))
    return [int(i) for i in ok[np.argsort(-growth[ok])][:limit]]


def _spikes(steps: Steps, first_bad: int | None, rank: int) -> list[RunFinding]:
    g = steps.grad_norm
    hits = []
    for i in range(len(steps)):
        if first_bad is not None and steps.step[i] >= first_bad:
            break
        if is_spike(list(g[max(0, i - SPIKE_HISTORY):i]), float(g[i])):
            hits.append(i)
    if not hits:
        return []
    i = hits[0]
    med = float(np.median([h for h in g[max(0, i - SPIKE_HISTORY):i] if math.isfinite(h) and h > 0]))
    more = f" ({len(hits)} spikes in all, the last at step {int(steps.step[hits[-1]])})" if len(hits) > 1 else ""
    msg = (f"Gradient-norm spike at step {int(steps.step[i])}: {fmt_num(g[i])}, "
           f"{fmt_num(g[i] / med)}x the median of the steps before it{more}")
    hint = ("One batch (an outlier, a rare class, a bad label) or one update sent the gradient far "
            "above its usual size; clip_grad_norm_ bounds such steps, and a warm-up helps when they "
            "come early. The capture taken at the spike shows which layers carried it")
    return [RunFinding("spike", Severity.INFO, int(steps.step[i]), int(steps.step[hits[-1]]),
                       (), msg, hint, rank)]


def _accumulating(steps: Steps, series, params: list[RunParam], rank: int) -> list[RunFinding]:
    for start, end in _runs_of(steps.accumulating > 0):
        if end - start >= ACCUMULATING_STEPS:
            n = int(steps.accumulating[start:end].max())
            # The store counts them, it does not list them: when every parameter that got a
            # gradient is counted, they are the ones; otherwise the captures name them.
            row = series.row_of(int(steps.step[start + ACCUMULATING_STEPS - 1]))
            got = [] if row is None else [int(i) for i in np.flatnonzero(series.present[row])]
            names = tuple(params[i].name for i in got) if len(got) == n else ()
            msg = (f"From step {int(steps.step[start])}, {n} parameter(s)' .grad kept the earlier "
                   f"steps' gradients across optimizer updates, for {end - start} steps in a row: "
                   f"each update used the sum of all gradients so far")
            hint = ("Call optimizer.zero_grad() (or model.zero_grad()) once per step, before "
                    "loss.backward(); to accumulate over micro-batches on purpose, step the "
                    "optimizer only after the last of them")
            last = None if end == len(steps) else int(steps.step[end - 1])
            return [RunFinding("accumulating", Severity.WARNING, int(steps.step[start]), last,
                               names, msg, hint, rank,
                               int(steps.step[start + ACCUMULATING_STEPS - 1]))]
    return []


def _dying(run: Run, params: list[RunParam], rank: int, first_bad: int | None) -> list[RunFinding]:
    """A weight whose share of zero gradient elements jumped by ``DYING_JUMP`` and stayed
    there to the end: its units stopped passing gradient (a ReLU layer dying)."""
    series = run.param_series(rank)
    rows = len(series)
    if rows < 2 * DYING_STAY:
        return []
    if first_bad is not None:  # after a NaN nothing is judged: everything is NaN or zero
        rows = int(np.searchsorted(series.lo, first_bad))
    z = series.zero_frac[:rows]
    early = max(DYING_STAY, rows // 10)
    found: dict[str, tuple[int, float, float, list[int]]] = {}
    for p in params:
        if len(p.shape) < 2:  # weights: a bias's zeros follow its units the same way
            continue
        col = z[:, p.idx]
        if np.isnan(col[:early]).all():
            continue
        base = float(np.nanmedian(col[:early]))
        high = col >= base + DYING_JUMP
        if not high[-1]:
            continue
        start = rows - 1
        while start > 0 and high[start - 1]:
            start -= 1
        if start < early or rows - start < DYING_STAY:
            continue
        onset = int(series.lo[start])
        prev = found.get(p.module)
        if prev is None or onset < prev[0]:
            found[p.module] = (onset, base, float(np.nanmean(col[start:rows])), [p.idx])
        else:
            prev[3].append(p.idx)
    # One cause, one finding: layers that died at the same step died together (units that
    # stopped firing starve every layer below them too).
    by_onset: dict[int, list[tuple[str, float, float, list[int]]]] = {}
    for module, (onset, base, level, idx) in found.items():
        by_onset.setdefault(onset, []).append((module, base, level, idx))
    out = []
    for onset, layers in sorted(by_onset.items()):
        idx = [i for *_, ids in layers for i in ids]
        base = min(b for _, b, _, _ in layers)
        level = min(v for _, _, v, _ in layers)
        names = ", ".join(m or "(root)" for m, *_ in layers)
        msg = (f"{'Layer' if len(layers) == 1 else 'Layers'} {names} died at step {onset}: the "
               f"share of exactly-zero elements in the weight gradients ({_names(params, idx)}) "
               f"went from {base:.0%} to {level:.0%} or more and stayed there")
        hint = ("Units whose input went negative after an update (a ReLU that never fires again) "
                "pass no gradient back, and the layers before them get none either: lower the "
                "learning rate or warm it up, use LeakyReLU/GELU, or normalise the layer's input")
        out.append(RunFinding("dying_layer", Severity.WARNING, onset, None,
                              tuple(params[i].name for i in idx), msg, hint, rank))
    return out


def _depth_ratio(series) -> tuple[np.ndarray, str, str] | None:
    """Per row, the first layer's RMS over the last layer's (layers with a gradient)."""
    cols = [j for j in range(len(series.names)) if np.isfinite(series.rms[:, j]).any()]
    if len(cols) < 3:
        return None
    first, last = cols[0], cols[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = series.rms[:, first] / series.rms[:, last]
    return ratio, series.names[first], series.names[last]


def _vanishing_worse(series, t: Thresholds, rank: int, first_bad: int | None) -> list[RunFinding]:
    got = _depth_ratio(series)
    if got is None or len(series) < 2 * DYING_STAY:
        return []
    ratio, first, last = got
    rows = len(series) if first_bad is None else int(np.searchsorted(series.lo, first_bad))
    ratio = ratio[:rows]
    ok = np.isfinite(ratio) & (ratio > 0)
    if ok.sum() < 2 * DYING_STAY:
        return []
    lr = np.log10(np.where(ok, ratio, np.nan))
    early = float(np.nanmedian(lr[: max(DYING_STAY, rows // 10)]))
    late = float(np.nanmedian(lr[-max(DYING_STAY, rows // 10):]))
    limit = math.log10(t.vanishing_ratio)
    if not (late <= limit and early - late >= 2):
        return []
    below = lr <= (early + late) / 2
    start = rows - 1
    while start > 0 and (below[start - 1] or not ok[start - 1]):
        start -= 1
    onset = int(series.lo[start])
    msg = (f"Vanishing gradient worsening from step {onset}: the first layer's ({first}) "
           f"gradient RMS fell from {fmt_num(10 ** early)} to {fmt_num(10 ** late)} of the last "
           f"layer's ({last})")
    hint = ("Saturating activations (sigmoid, tanh) push their inputs into the flat tails as "
            "weights grow, and the gradient through them fades: normalise (LayerNorm/BatchNorm), "
            "use residual connections or ReLU/GELU, and keep the learning rate moderate")
    return [RunFinding("vanishing_worse", Severity.WARNING, onset, None, (first,), msg, hint, rank)]


def _plateau(steps: Steps, series, t: Thresholds, rank: int, first_bad: int | None) -> list[RunFinding]:
    got = _depth_ratio(series)
    if got is None or first_bad is not None or len(steps) < 2 * PLATEAU_STEPS:
        return []
    ratio, first, _ = got
    tail = steps.loss[-PLATEAU_STEPS:]
    if not np.isfinite(tail).all():
        return []
    scale = max(abs(float(np.mean(tail))), 1e-12)
    if (tail.max() - tail.min()) / scale > PLATEAU_CHANGE * 10 or abs(tail[-1] - tail[0]) / scale > PLATEAU_CHANGE:
        return []
    late = ratio[-max(DYING_STAY, len(ratio) // 10):]
    late = late[np.isfinite(late)]
    if not late.size or float(np.median(late)) > t.vanishing_ratio:
        return []
    step = int(steps.step[-PLATEAU_STEPS])
    msg = (f"Loss plateau from step {step} at {fmt_num(float(tail[-1]))} while the first layer's "
           f"({first}) gradient is {fmt_num(float(np.median(late)))} of the last layer's")
    hint = ("Training has stalled because the input-side layers barely learn: the gradient vanishes "
            "on its way back. Normalisation, residual connections, ReLU/GELU activations or a "
            "better initialisation (Kaiming/Xavier) restore it")
    return [RunFinding("plateau", Severity.WARNING, step, None, (first,), msg, hint, rank)]


def _loss_fell(steps: Steps) -> bool:
    """Whether the loss went down over the run: every loss finite, and the median of its last
    quarter (one noisy step does not decide) below the first step's loss, where training
    started (not the first quarter's: a loss that blew up at step 2 would set the bar)."""
    loss = _loss(steps)
    if len(loss) < 2 or not np.isfinite(loss).all():
        return False
    k = max(1, len(loss) // 4)
    return float(np.median(loss[-k:])) < float(loss[0])


def _update_ratio(run: Run, params: list[RunParam], rank: int, steps: Steps) -> list[RunFinding]:
    updates = run.updates(rank)
    if not updates:
        return []
    fell = _loss_fell(steps)
    measured = sorted(updates)
    data = np.stack([updates[s] for s in measured])
    out = []
    for group in sorted({p.group for p in params}):
        idx = [p.idx for p in params if p.group == group and len(p.shape) >= 2] or [
            p.idx for p in params if p.group == group]
        vals = data[:, idx]
        vals = vals[np.isfinite(vals) & (vals > 0)]
        if not vals.size:
            continue
        med = float(np.median(vals))
        where = f"param group {group}" if group >= 0 else "the parameters"
        if med > UPDATE_HIGH:
            harmful = med >= UPDATE_HARMFUL or not fell
            msg = (f"Updates {'too' if harmful else 'very'} large for {where}: each optimizer "
                   f"step changes the weights by {fmt_num(med)} of their size (median over "
                   f"{len(measured)} measured steps; about 1e-3 is typical)"
                   + ("" if harmful else ", while the loss still falls"))
            hint = "Lower this group's learning rate (try 10x lower) or add warm-up; large relative updates make training unstable"
            sev = Severity.WARNING if harmful else Severity.INFO
        elif med < UPDATE_LOW:
            msg = (f"Updates very small for {where}: each optimizer step changes the weights by "
                   f"{fmt_num(med)} of their size (median over {len(measured)} measured steps; "
                   f"about 1e-3 is typical)")
            hint = "This group barely learns: raise its learning rate, or check that it is not meant to be frozen"
            sev = Severity.INFO
        else:
            continue
        out.append(RunFinding("update_ratio", sev, measured[0], measured[-1],
                              tuple(params[i].name for i in idx), msg, hint, rank, measured[-1]))
    return out


def _from_captures(run: Run, rank: int) -> list[RunFinding]:
    """The captures' warnings and errors, each kind once, from the first capture showing it."""
    seen: dict[tuple[str, str], list] = {}
    for c in run.captures(rank):
        for f in c.summary:
            if f.get("severity") not in ("warning", "error"):
                continue
            kind = str(f.get("kind"))
            names = f.get("names") or [""]
            # After the first non-finite capture every later one is non-finite through it:
            # one cause, so they extend its finding instead of adding their own.
            key = (kind, "") if kind.startswith("nonfinite") else (kind, str(names[0]))
            if key in seen:
                seen[key][1] = c.step
            else:
                seen[key] = [c.step, c.step, f]
    out = []
    for (kind, _), (first, last, f) in seen.items():
        sev = Severity.ERROR if f["severity"] == "error" else Severity.WARNING
        out.append(RunFinding(kind, sev, first, last, tuple(f.get("names", ()))[:20],
                              f"{f['message']} (in the capture of step {first}"
                              + (f", still at step {last})" if last != first else ")"),
                              f.get("hint", ""), rank))
    return out
