"""One run seen across ranks: which rank went wrong first, and how the ranks disagree.

Under ``torch.distributed`` every rank records its own steps into the same run store (the
``rank`` column of every table). ``graphscope.trends`` judges each rank's history alone; this
module reads the ranks side by side, from the store only (nothing here talks to the processes):

- **Where a NaN was born.** DDP averages the gradients inside the backward, so a NaN/Inf born on
  one rank is in every rank's gradients at the same step. The recorder's check before the
  all-reduce (``local_nonfinite`` events: a rank's own gradient bucket was already non-finite),
  or a non-finite loss, names the rank(s) where it was born; the other ranks' findings say they
  received it through the all-reduce (information, not a second error: one cause, one finding).
  The birth rank's finding carries the op, module and line of its capture's origin finding.
  Under FSDP2 the reduce-scatter puts each gradient element on one rank, so the NaN can reach
  only some ranks' stored shards and miss the birth rank's own: the check (on the unsharded
  gradients) still names it, and its finding says its stored share stayed finite.
- ``rank_grad_norm``: a rank whose own gradient norm before the reduction (``local`` events, on
  captured steps) is ``RANK_NORM_FACTOR`` times above or below the ranks' median (of two ranks,
  the larger is named): its data shard
  (or its code path) differs from the others'.
- ``rank_unused``: parameters that some ranks' losses do not reach in the captures of one step
  while other ranks' do: the cause of DDP's "Expected to have finished reduction in the prior
  iteration" error, named by qualified name and rank.
- ``rank_desync``: for DDP, reduced gradients that are not identical across ranks at the same
  step (a parameter DDP does not all-reduce), or update-to-weight ratios that differ while the
  gradients agree (ranks applying different updates, so their weights drift apart).

Under FSDP2 each rank records the norms of its own shard of every reduced gradient;
``full_grad_norms`` puts the shards back together (the L2 norm of a parameter's full gradient is
the root of its shards' squared norms), so the numbers are those of the whole parameter.

``analyze_ranks`` gives every rank's findings (each with its ``rank``) and the cross-rank ones
together; ``first_rank`` names the rank that went wrong first, for the timeline.

Imports the run store and the per-rank rules (``trends``); never torch or textual.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from graphscope.formatting import fmt_num
from graphscope.health import Thresholds
from graphscope.model import ParamStatus, Severity
from graphscope.runs import Run
from graphscope.trends import RunFinding, analyze

RANK_NORM_FACTOR = 10.0  # a rank's local gradient norm this far from the median rank's
DESYNC_RTOL = 1e-6  # reduced gradient norms further apart than this are not the same gradient
UPDATE_RTOL = 1e-3  # update ratios further apart than this (weights that moved differently)


@dataclass(frozen=True)
class Birth:
    """Where the run's first non-finite value came from.

    Attributes:
        step: The first step any rank recorded a non-finite loss or gradient.
        born: The ranks where it was born (their own gradients or loss were non-finite before
            the all-reduce); empty when that cannot be told (no check before the reduction).
        received: The ranks non-finite at that step only through the all-reduce.
        params: Per birth rank, the parameters of its non-finite gradient buckets.
        origin: Per birth rank, its capture's origin finding (op, module, line) and the step of
            that capture.
        checked: Whether the ranks recorded their gradients before the all-reduce.
        via: The reduction that spread it: ``all-reduce`` (DDP), ``reduce-scatter`` (FSDP2,
            where each element lands on one rank only).
    """

    step: int
    born: tuple[int, ...]
    received: tuple[int, ...]
    params: dict[int, tuple[str, ...]]
    origin: dict[int, tuple[int, str]]
    checked: bool
    via: str = "all-reduce"


@dataclass(frozen=True)
class FullNorms:
    """Every parameter's full gradient norm per step, put together from the ranks' shards.

    Attributes:
        step: The steps every rank recorded exactly (decimated stretches left out: a mean of
            shard norms does not add up to a norm).
        names: The parameters' qualified names, the columns of ``norm``.
        norm: (steps, parameters); NaN where a rank holding part of the parameter recorded no
            gradient for it (or a non-finite one).
    """

    step: np.ndarray
    names: tuple[str, ...]
    norm: np.ndarray


def full_grad_norms(run: Run) -> FullNorms | None:
    """The full gradient norms of an FSDP2 run's parameters, from every rank's shard norms;
    ``None`` for a run that is not FSDP2's or whose ranks recorded different parameters.

    Example:
        >>> full = full_grad_norms(open_run("runs/fsdp"))  # doctest: +SKIP
        >>> dict(zip(full.names, full.norm[-1]))  # doctest: +SKIP
    """
    dist = run.meta.get("distributed") or {}
    if not isinstance(dist, dict) or dist.get("wrapper") != "fsdp":
        return None
    ranks = run.ranks()
    params = {r: run.params(r) for r in ranks}
    names = tuple(p.name for p in params[ranks[0]])
    if any(tuple(p.name for p in params[r]) != names for r in ranks):
        return None
    exact: dict[int, dict[int, np.ndarray]] = {}  # rank -> step -> squared shard norms
    for r in ranks:
        series = run.param_series(r)
        # A rank's empty shard (more ranks than rows) has no gradient and adds nothing.
        empty = np.array([p.numel == 0 for p in params[r]], dtype=bool)
        for i in np.flatnonzero(series.n == 1):
            sq = np.where(empty, 0.0, series.norm[i] ** 2)
            exact.setdefault(r, {})[int(series.lo[i])] = sq
    steps = sorted(set.intersection(*(set(exact.get(r, {})) for r in ranks)))
    norm = np.array([np.sqrt(sum(exact[r][s] for r in ranks)) for s in steps]).reshape(len(steps), len(names))
    return FullNorms(np.array(steps, dtype=np.int64), names, norm)


def analyze_ranks(run: Run, *, ranks: Sequence[int] | None = None,
                  thresholds: Thresholds | None = None) -> list[RunFinding]:
    """Every rank's findings over time and the cross-rank ones, ordered by step, then rank.

    Args:
        run: An open run store.
        ranks: The ranks to report (all recorded ranks when ``None``); the cross-rank checks
            always read every rank.
        thresholds: As for ``trends.analyze``.

    Example:
        >>> for f in analyze_ranks(open_run("runs/ddp")):  # doctest: +SKIP
        ...     print(f"rank {f.rank}: {f}")
    """
    every = run.ranks()
    wanted = list(every if ranks is None else ranks)
    out: list[RunFinding] = []
    birth = nonfinite_birth(run) if len(every) > 1 else None
    for r in wanted:
        found = analyze(run, rank=r, thresholds=thresholds)
        if birth is not None and r in birth.born and not any(
                f.kind == "nonfinite" and f.step == birth.step for f in found):
            found.append(_born_unstored(birth, r))
        out += [_with_birth(f, birth) for f in found]
    if len(every) > 1:
        cross = _norm_outliers(run) + _unused(run, every) + _desync(run, every)
        out += [f for f in cross if f.rank in wanted]
    out.sort(key=lambda f: (f.step, -f.severity, f.rank))
    return out


def first_rank(findings: Sequence[RunFinding]) -> int | None:
    """The rank that went wrong first: the rank of the earliest warning or error (a birth
    rank before ranks that received the NaN; desyncs, which no one rank owns, aside), or
    ``None`` when no rank did."""
    # A desync finding sits on a reference rank, not on the one at fault.
    bad = [f for f in findings if f.severity >= Severity.WARNING and f.kind != "rank_desync"]
    if not bad:
        return None
    return min(bad, key=lambda f: (f.step, -f.severity, f.rank)).rank


# -- where a NaN was born -------------------------------------------------------------------------


def _first_bad(run: Run, rank: int) -> tuple[int, bool] | None:
    """The rank's first non-finite step and whether its loss was non-finite there."""
    s = run.steps(rank)
    bad = s.loss_nonfinite | (s.nonfinite > 0) | ~np.isfinite(s.grad_norm)
    idx = np.flatnonzero(bad)
    return (int(s.step[idx[0]]), bool(s.loss_nonfinite[idx[0]])) if idx.size else None


def nonfinite_birth(run: Run) -> Birth | None:
    """Which rank(s) the first non-finite value of a multi-rank run was born on, or ``None``
    when no rank recorded one."""
    first = {r: b for r in run.ranks() if (b := _first_bad(run, r)) is not None}
    if not first:
        return None
    step = min(s for s, _ in first.values())
    at = sorted(r for r, (s, _) in first.items() if s == step)
    events = run.events()
    checked = any(e.kind == "local" or e.kind == "local_nonfinite" for e in events)
    local = {e.rank: e for e in events if e.kind == "local_nonfinite" and e.step == step}
    born = sorted(set(local) | {r for r in at if first[r][1]})
    via = _reduction(run)
    # Not every rank went bad: no all-reduce carried it (a reduce-scatter carries it to a few).
    if not born and not checked and len(at) < len(run.ranks()) and via == "all-reduce":
        born = at
    received = tuple(r for r in at if r not in born)
    origin: dict[int, tuple[int, str]] = {}
    for r in born:
        for c in run.captures(r):
            if c.step < step:
                continue
            hit = next((f for f in c.summary if f.get("kind") == "nonfinite_origin"), None)
            if hit is not None:
                origin[r] = (c.step, str(hit.get("message", "")))
                break
    params = {r: tuple(e.detail.get("params", ())) for r, e in local.items()}
    return Birth(step, tuple(born), received, params, origin, checked, via)


def _reduction(run: Run) -> str:
    """What averages the ranks' gradients in this run: ``reduce-scatter`` under FSDP2, else
    ``all-reduce``."""
    dist = run.meta.get("distributed") or {}
    return "reduce-scatter" if isinstance(dist, dict) and dist.get("wrapper") == "fsdp" else "all-reduce"


def _born_unstored(birth: Birth, rank: int) -> RunFinding:
    """The birth rank's finding where its stored gradients stayed finite: under FSDP2 its shard
    of the reduced gradient can miss the elements its own NaN/Inf went into."""
    params = birth.params.get(rank, ())
    msg = (f"Step {birth.step}: this rank's stored share of the reduced gradients stayed finite "
           f"(its NaN/Inf went into other ranks' shards)")
    return RunFinding("nonfinite", Severity.ERROR, birth.step, None, params, msg, "", rank)


def _ranks_text(ranks: Sequence[int]) -> str:
    return ("rank " if len(ranks) == 1 else "ranks ") + ", ".join(map(str, ranks))


def _with_birth(f: RunFinding, birth: Birth | None) -> RunFinding:
    """A rank's non-finite finding, told where the NaN came from."""
    if birth is None or not f.kind.startswith("nonfinite") or f.step < birth.step:
        return f
    if f.rank in birth.born:
        # Its first non-finite step of the birth is decorated; later ones (a shard that went
        # non-finite only through the weights) are information.
        if f.kind != "nonfinite" or f.step > birth.step:
            if f.step == birth.step:
                return f  # the capture of the step it was born at: the op, module and line
            msg = (f"Step {f.step}: non-finite through the weights, after this rank's NaN/Inf of "
                   f"step {birth.step} went through the {birth.via} ({f.message})")
            return dataclasses.replace(f, severity=Severity.INFO, message=msg,
                                       hint=f"See this rank's finding of step {birth.step}")
        msg = f.message + f"; born on this rank, before the {birth.via}"
        local = birth.params.get(f.rank)
        if local:
            msg += f" (its own gradients of {', '.join(local[:3])}{' ...' if len(local) > 3 else ''} were non-finite)"
        others = [r for r in birth.received]
        if others:
            msg += f"; {_ranks_text(others)} received it through the {birth.via}"
        if f.rank in birth.origin:
            at, text = birth.origin[f.rank]
            msg += f". In the capture of step {at}: {text}"
        hint = (f"Look at what rank {f.rank} did differently at step {birth.step}: its batch (the "
                f"data shard this rank reads), a rank-dependent branch, or its own numerics; "
                f"open the capture with graphscope view RUN (rank {f.rank}) to see the op where the "
                f"NaN was born." + (f" {f.hint}" if f.hint else ""))
        return dataclasses.replace(f, message=msg, hint=hint)
    if birth.born and f.rank not in birth.born:
        src = _ranks_text(birth.born)
        msg = (f"Step {f.step}: non-finite values received through the {birth.via} from {src}, "
               f"where they were born at step {birth.step}; this rank's own gradients were finite"
               if f.step == birth.step and f.rank in birth.received else
               f"Step {f.step}: non-finite through the weights, after {src} sent NaN/Inf through "
               f"the {birth.via} at step {birth.step}")
        if f.kind != "nonfinite":
            msg += f" ({f.message})"
        hint = f"Not this rank's doing: see the finding on {src}"
        return dataclasses.replace(f, severity=Severity.INFO, message=msg, hint=hint)
    return f


# -- cross-rank checks on captured steps ----------------------------------------------------------


def _norm_outliers(run: Run) -> list[RunFinding]:
    """Ranks whose own gradient norm before the all-reduce is far from the median rank's."""
    by_step: dict[int, dict[int, float]] = {}
    for e in run.events():
        if e.kind == "local":
            v = e.detail.get("norm")
            if isinstance(v, (int, float)) and math.isfinite(v) and v > 0:
                by_step.setdefault(e.step, {})[e.rank] = float(v)
    hits: dict[int, list[tuple[int, float, float]]] = {}
    for step in sorted(by_step):
        norms = by_step[step]
        if len(norms) < 2:
            continue
        if len(norms) == 2:
            # Two ranks far apart: the larger is named (a bad shard inflates, rarely deflates).
            r = max(norms, key=norms.get)
            ratios = {r: norms[r] / min(norms.values())}
        else:
            # The median over all ranks: one wild rank cannot move it.
            med = float(np.median(list(norms.values())))
            ratios = {r: v / med for r, v in norms.items()}
        for r, ratio in ratios.items():
            if ratio >= RANK_NORM_FACTOR or ratio <= 1 / RANK_NORM_FACTOR:
                hits.setdefault(r, []).append((step, ratio, norms[r]))
    out = []
    via = _reduction(run)
    for r, h in sorted(hits.items()):
        step, ratio, v = h[0]
        what = "above" if ratio > 1 else "below"
        msg = (f"Rank {r}'s own gradient norm before the {via} was {fmt_num(v)} at step {step}, "
               f"{fmt_num(ratio if ratio > 1 else 1 / ratio)}x {what} the ranks' median"
               + (f" (on {len(h)} captured steps, the last {h[-1][0]})" if len(h) > 1 else ""))
        hint = (f"Every rank averages its gradient with the others, so rank {r}'s batch outweighs "
                f"(or barely counts beside) theirs: check the data it reads (a shard with unscaled or "
                f"corrupt inputs, a DistributedSampler missing or seeded differently) and any "
                f"rank-dependent code path in the forward or the loss")
        out.append(RunFinding("rank_grad_norm", Severity.WARNING, step, h[-1][0], (), msg, hint, r))
    return out


def _unused(run: Run, ranks: Sequence[int]) -> list[RunFinding]:
    """Parameters some ranks' losses never reach while others' do, on commonly captured steps."""
    caps: dict[int, set[int]] = {}
    for c in run.captures(None):
        caps.setdefault(c.step, set()).add(c.rank)
    common = sorted(s for s, rs in caps.items() if len(rs) > 1)
    missing: dict[str, dict[int, int]] = {}  # parameter -> rank -> first step it was not reached
    for step in common:
        reached: dict[int, set[str]] = {}
        names: dict[int, set[str]] = {}
        for r in sorted(caps[step]):
            try:
                g = run.capture(step, r)
            except Exception:  # a capture that cannot be read is judged without
                continue
            names[r] = {p.name for p in g.params if p.status is not ParamStatus.FROZEN}
            reached[r] = {p.name for p in g.params if p.status in (ParamStatus.REACHED, ParamStatus.OPAQUE)}
        if len(reached) < 2:
            continue
        somewhere = set().union(*reached.values())
        for r, got in reached.items():
            for name in sorted((names[r] & somewhere) - got):
                missing.setdefault(name, {}).setdefault(r, step)
    if not missing:
        return []
    by_rank: dict[int, list[str]] = {}
    for name, rs in missing.items():
        for r in rs:
            by_rank.setdefault(r, []).append(name)
    out = []
    for r, params in sorted(by_rank.items()):
        step = min(missing[n][r] for n in params)
        shown = ", ".join(params[:5]) + (f" and {len(params) - 5} more" if len(params) > 5 else "")
        msg = (f"Rank {r}'s loss does not reach {len(params)} parameter(s) that other ranks' do, "
               f"from step {step}: {shown}")
        hint = ("This is the cause of DDP's 'Expected to have finished reduction in the prior "
                "iteration' error (or, with find_unused_parameters=True, of a graph walk every "
                f"step): rank {r}'s forward took another code path. Make every rank use every "
                "parameter (multiply a skipped branch by 0 rather than skipping it), or keep "
                "find_unused_parameters=True; with TORCH_DISTRIBUTED_DEBUG=DETAIL DDP names them too")
        out.append(RunFinding("rank_unused", Severity.WARNING, step, None, tuple(params), msg, hint, r))
    return out


def _desync(run: Run, ranks: Sequence[int]) -> list[RunFinding]:
    """For DDP: reduced gradients (or updates) that differ across ranks at the same step."""
    dist = run.meta.get("distributed") or {}
    if not isinstance(dist, dict) or dist.get("wrapper") != "ddp":
        return []
    params = {r: run.params(r) for r in ranks}
    ref = min(ranks)
    names = [p.name for p in params[ref]]
    if any([p.name for p in params[r]] != names for r in ranks):
        return []  # different models per rank: nothing to compare parameter by parameter
    stop = min((b[0] for r in ranks if (b := _first_bad(run, r)) is not None), default=None)
    series = {r: run.param_series(r) for r in ranks}
    exact = {r: {int(lo): i for i, (lo, n) in enumerate(zip(s.lo, s.n)) if n == 1}
             for r, s in series.items()}
    steps = sorted(set.intersection(*(set(e) for e in exact.values())))
    if stop is not None:
        steps = [s for s in steps if s < stop]
    grads: dict[int, tuple[int, list[int]]] = {}  # param -> (first step, ranks off the reference)
    for step in steps:
        a = series[ref].norm[exact[ref][step]]
        for r in ranks:
            if r == ref:
                continue
            b = series[r].norm[exact[r][step]]
            both = np.isfinite(a) & np.isfinite(b)
            off = both & (np.abs(a - b) > DESYNC_RTOL * np.maximum(np.abs(a), np.abs(b)))
            off |= np.isfinite(a) != np.isfinite(b)
            for i in np.flatnonzero(off):
                first, rs = grads.setdefault(int(i), (step, []))
                if r not in rs:
                    rs.append(r)
    out = []
    if grads:
        idx = sorted(grads)
        step = min(grads[i][0] for i in idx)
        rs = sorted({r for i in idx for r in grads[i][1]})
        shown = ", ".join(names[i] for i in idx[:5]) + (f" and {len(idx) - 5} more" if len(idx) > 5 else "")
        msg = (f"Reduced gradients differ across ranks from step {step}: {shown} "
               f"({_ranks_text(rs)} against rank {ref}); DDP gives every rank the same averaged gradient")
        hint = ("These parameters are not all-reduced, so each rank steps with its own gradient and "
                "the replicas drift apart: a parameter created or replaced after wrapping the model "
                "in DDP, one in DDP's ignored parameters, or a hook that changes it on some ranks. "
                "Wrap the model after building it completely, and keep rank-dependent code out of "
                "the gradients")
        # One finding, on the reference rank: no rank is at fault when a gradient is not reduced.
        out.append(RunFinding("rank_desync", Severity.ERROR, step, None,
                              tuple(names[i] for i in idx), msg, hint, ref))
    out += _update_desync(run, ranks, names, set(grads), stop)
    return out


def _update_desync(run: Run, ranks: Sequence[int], names: list[str], skip: set[int],
                   stop: int | None) -> list[RunFinding]:
    ups = {r: run.updates(r) for r in ranks}
    ref = min(ranks)
    common = sorted(set.intersection(*(set(u) for u in ups.values())))
    if stop is not None:
        common = [s for s in common if s < stop]
    for step in common:
        a = ups[ref][step]
        off_ranks = []
        off_params: set[int] = set()
        for r in ranks:
            if r == ref:
                continue
            b = ups[r][step]
            both = np.isfinite(a) & np.isfinite(b)
            off = both & (np.abs(a - b) > UPDATE_RTOL * np.maximum(np.abs(a), np.abs(b)))
            off[list(skip)] = False
            if off.any():
                off_ranks.append(r)
                off_params |= set(int(i) for i in np.flatnonzero(off))
        if off_ranks:
            idx = sorted(off_params)
            shown = ", ".join(names[i] for i in idx[:5]) + (f" and {len(idx) - 5} more" if len(idx) > 5 else "")
            msg = (f"The optimizer step after step {step} moved the weights differently across ranks "
                   f"({_ranks_text(off_ranks)} against rank {ref}: {shown}) although their reduced "
                   f"gradients agree: the replicas are out of sync from here")
            hint = ("Code after backward differs by rank: a rank-dependent learning rate, gradient "
                    "clipping or scaling on some ranks only, or optimizer state loaded on one rank. "
                    "Every rank must run the same optimizer step")
            return [RunFinding("rank_desync", Severity.ERROR, step, None, tuple(names[i] for i in idx),
                               msg, hint, off_ranks[0])]
    return []
