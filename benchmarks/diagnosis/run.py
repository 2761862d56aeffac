"""Run the labelled diagnosis benchmark: graphscope's findings against ground truth and a naive rule.

Owns running the set-ups of ``cases.py``, turning findings into predictions, the naive
baseline, the scores and the report. For every set-up, in one run:

- **one capture**: build, forward, ``g = graphscope.capture(loss, model=model, warn=False)``,
  ``loss.backward()``, read ``g.findings``; the naive rule reads ``p.grad`` right after the same
  backward;
- **watched loop**: a fresh build, then ``with graphscope.watch(model, every=1, keep=N,
  warn=False, on_nonfinite="ignore")`` around ``case.steps`` optimizer steps; the findings of every
  kept graph are pooled, and the naive rule reads ``p.grad`` after every backward.
- **recorded run**: a fresh build, the same ``case.steps`` steps under ``graphscope.watch(model,
  optimizer=opt, run=tmpdir, every=RECORD_EVERY)`` (the flight recorder: cheap numbers every step,
  full captures every ``RECORD_EVERY`` steps and at anomalies), scored from
  ``graphscope.trends.analyze(open_run(tmpdir))``: the findings over time, the captures' warnings
  among them. Judged with the loop's ground truth, next to the naive rule of the watched loop.
  For every set-up whose loss became non-finite after a finite start, and every set-up marked
  ``diverges``, it also measures how many steps before the first non-finite loss the
  ``divergence`` finding had its evidence (``RunFinding.found_at``).
- **healthy over many steps**: every set-up healthy in the loop, trained ``LONG_STEPS`` steps
  under the recorder (captures every ``LONG_EVERY``): any warning or error from ``analyze`` is a
  false alarm of the over-time rules (spikes are info).

Scoring (per kind and overall, per mode, per tool): a set-up is a positive for kind K when its
ground truth is K. A tool predicts K when it raises K (for graphscope: a finding of severity
WARNING or ERROR whose kind maps to K through ``KIND_OF``, or for a recorded run
``TREND_KIND_OF``); kinds in the case's ``also`` are neither positives nor false alarms. A
recorded run's warning of no benchmark kind (``update_ratio``) is a false alarm (``other``) on a
healthy set-up and not counted on a broken one. Right place: for a true positive, the prediction
names one of the ground-truth places (in the loop: the first step that predicted K; in a recorded
run: the first finding of K by ``found_at``). A set-up whose run raised is an error row, shown and
left out of the scores.

Usage: ``python benchmarks/diagnosis/run.py [--only NAME,...] [--threads 1] [--long-steps N]``.
Prints the tables and writes them to ``benchmarks/diagnosis/results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import cases as C  # noqa: E402

import graphscope  # noqa: E402
from graphscope import Severity  # noqa: E402
from graphscope.runs import open_run  # noqa: E402
from graphscope.trends import analyze, first_nonfinite_loss  # noqa: E402

# graphscope's FindingKind values -> the benchmark's kinds, as strings so that a value a given
# revision does not have yet simply never occurs (a measured miss, not an error). Kinds not listed
# (frozen_param, opaque, structural_zero) say "nothing to fix" and never count as a prediction.
KIND_OF: dict[str, str] = {
    "nonfinite_origin": C.NONFINITE,
    "nonfinite_loss": C.NONFINITE,
    "vanishing": C.VANISHING,
    "exploding": C.EXPLODING,
    "dead": C.DEAD,
    "unreachable_param": C.UNREACHABLE,
    "underflow": C.UNDERFLOW,
    "accumulated_grad": C.ACCUMULATED,
}

# graphscope.trends' kinds over time -> the benchmark's kinds (the captures' kinds, which analyze
# passes on, through KIND_OF). A divergence is the exploding of a training run; a plateau is
# reported only with vanishing input-side gradients. Not listed: spike (info), update_ratio
# (a learning-rate judgement with no benchmark kind: see OTHER).
TREND_KIND_OF: dict[str, str] = {
    **KIND_OF,
    "nonfinite": C.NONFINITE,
    "divergence": C.EXPLODING,
    "dying_layer": C.DEAD,
    "vanishing_worse": C.VANISHING,
    "plateau": C.VANISHING,
    "accumulating": C.ACCUMULATED,
}
OTHER = "other"  # a recorded run's warning of no benchmark kind: a false alarm if healthy

# The naive rule's fixed limits, on per-parameter gradient RMS (norm / sqrt(numel)) read from
# p.grad after backward, divided by the GradScaler's scale when there is one.
NAIVE_VANISHING_RMS = 1e-7  # an absolute floor ...
NAIVE_VANISHING_RATIO = 1e-4  # ... or this far below the largest parameter gradient
NAIVE_EXPLODING_RMS = 1e3
CASE_TIMEOUT_S = 60
# Captures every 10 steps: over the 3-12 steps of a set-up that is step 1 and step 11, plus the
# recorder's own at anomalies, so what the recorded run adds is the over-time rules' doing.
RECORD_EVERY = 10
LONG_STEPS = 150  # the healthy set-ups' long run: enough for the 50-step plateau rule to judge
LONG_EVERY = 50
MODES = ("single", "loop", "recorded")
TOOLS = ("graphscope", "naive")
# (mode, tool) measured: a recorded run is judged against the naive rule of the watched loop.
COLUMNS = (("single", "graphscope"), ("loop", "graphscope"), ("recorded", "graphscope"),
           ("single", "naive"), ("loop", "naive"))
NAIVE_OF = {"single": "single", "loop": "loop", "recorded": "loop"}
ALL = "(all parameters)"  # what the naive rule blames when every gradient is non-finite


class CaseTimeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    def fire(*_: Any) -> None:
        raise CaseTimeout(f"ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- predictions ---------------------------------------------------------------------------------


@dataclass
class Prediction:
    """What one tool said about one set-up in one mode.

    Attributes:
        blamed: For each predicted kind, the names the prediction points at (from the first
            step that predicted it).
        said: A short account for the listing.
        info: Names that information-only findings point at.
        info_said: A short account of the first information finding of each kind.
        error: The exception, when the run raised.
        other: A recorded run's warnings whose kind is no benchmark kind.
        first_at: For a recorded run, the step each predicted kind was found at.
    """

    blamed: dict[str, set[str]] = field(default_factory=dict)
    said: list[str] = field(default_factory=list)
    info: set[str] = field(default_factory=set)
    info_said: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    other: list[str] = field(default_factory=list)  # a recorded run's warnings of no kind
    first_at: dict[str, int] = field(default_factory=dict)  # a recorded run's step per kind

    def add(self, kind: str, names: set[str], text: str) -> None:
        if kind not in self.blamed:  # the first step that says it is what a user sees
            self.blamed[kind] = set(names)
            self.said.append(text)
        # later findings of the same step also count: merged by the caller


_QUOTED = re.compile(r"'([^'\s]+)'")  # names have no spaces; "layer's" is not a quote
_MODULE = re.compile(r"in module ([\w.\-]+)")
_WORD = re.compile(r"[A-Za-z_][\w]*")


def _finding_names(g: Any, f: Any) -> set[str]:
    """Every name a finding points at: its parameter, its node's names, module and op, and the
    parameter and module names written in its message."""
    names: set[str] = set()
    if f.param:
        names.add(f.param)
    if f.node is not None and 0 <= f.node < len(g.nodes):
        n = g.nodes[f.node]
        names.update(n.names)
        if n.module:
            names.add(n.module)
        if n.kind == "op":
            names.add(f"op:{n.label}")
    names.update(_QUOTED.findall(f.message))
    names.update(m.rstrip(".") for m in _MODULE.findall(f.message))
    # An op the message names in words ("... or just before it in div") counts as op:div.
    names.update(f"op:{w}" for w in _WORD.findall(f.message) if w in _op_labels(g))
    return names


def _op_labels(g: Any) -> set[str]:
    return {n.label for n in g.nodes if n.kind == "op"}


def _short(kind: str, names: set[str]) -> str:
    ops = sorted(n for n in names if n.startswith("op:"))
    rest = sorted(n for n in names if not n.startswith("op:"))
    shown = (ops[:1] + rest[:2]) if ops else rest[:2]
    return f"{kind}@{'/'.join(shown)}" if shown else kind


def graphscope_step(pred: Prediction, g: Any) -> None:
    """Fold one graph's findings into ``pred``."""
    step: dict[str, set[str]] = {}
    for f in g.findings:
        kind = KIND_OF.get(str(f.kind))
        if f.severity < Severity.WARNING:
            pred.info |= _finding_names(g, f)
            pred.info_said.setdefault(str(f.kind), _short(str(f.kind), _finding_names(g, f)))
            continue
        if kind is not None:
            step.setdefault(kind, set()).update(_finding_names(g, f))
    for kind, names in step.items():
        if kind not in pred.blamed:
            first = next(f for f in g.findings
                         if KIND_OF.get(str(f.kind)) == kind and f.severity >= Severity.WARNING)
            pred.add(kind, names, _short(kind, _finding_names(g, first)))


def _rms(t: torch.Tensor) -> float:
    return t.detach().double().pow(2).mean().sqrt().item()


def naive_step(pred: Prediction, model: torch.nn.Module, scale: float) -> None:
    """The naive rule on ``p.grad`` after one backward (what gradient histograms show)."""
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    step: dict[str, set[str]] = {}
    none = {n for n, gr in grads.items() if gr is None}
    if none:
        step[C.UNREACHABLE] = none
    have = {n: gr for n, gr in grads.items() if gr is not None and gr.numel()}
    bad = {n for n, gr in have.items() if not torch.isfinite(gr).all()}
    if bad:
        step[C.NONFINITE] = bad if len(bad) < len(have) else {ALL}
    rms = {n: _rms(gr) / scale for n, gr in have.items() if n not in bad}
    zero = {n for n, r in rms.items() if r == 0.0}
    if zero:
        step[C.DEAD] = zero
    live = {n: r for n, r in rms.items() if r > 0.0}
    if live:
        top = max(live.values())
        low = {n for n, r in live.items()
               if r < NAIVE_VANISHING_RMS or r < NAIVE_VANISHING_RATIO * top}
        high = {n for n, r in live.items() if r > NAIVE_EXPLODING_RMS}
        if low:
            step[C.VANISHING] = low
        if high:
            step[C.EXPLODING] = high
    for kind, names in step.items():
        pred.add(kind, names, f"{kind}@{'/'.join(sorted(names)[:2])}")


# -- running -------------------------------------------------------------------------------------


@dataclass
class Record:
    """What a recorded run measured about divergence (steps are the run's, from 1)."""

    steps: int = 0
    nonfinite_at: int | None = None  # the first step whose loss was NaN/Inf
    divergence_at: int | None = None  # the step the divergence finding had its evidence
    divergence_from: int | None = None  # the step it says the divergence started
    first_warning: tuple[str, int] | None = None  # (kind, step it was found at)


@dataclass
class Row:
    case: C.Case
    preds: dict[tuple[str, str], Prediction] = field(default_factory=dict)  # (mode, tool)
    evidence: str = ""
    losses: list[float] = field(default_factory=list)  # the watched loop's, unscaled
    record: Record = field(default_factory=Record)
    long: list[str] | None = None  # the long healthy run's warnings (None: not run)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def _build(case: C.Case) -> C.Setup:
    torch.manual_seed(0)
    return case.build()


def _error(exc: BaseException) -> str:
    last = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({Path(last.filename).name}:{last.lineno})" if last else ""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}{where}"


def run_single(case: C.Case, _losses: list[float]) -> tuple[Prediction, Prediction]:
    gs, nv = Prediction(), Prediction()
    s = _build(case)
    loss = s.forward(0)
    g = graphscope.capture(loss, model=s.model, warn=False)
    loss.backward()
    graphscope_step(gs, g)
    naive_step(nv, s.model, s.scale())
    return gs, nv


def run_loop(case: C.Case, losses: list[float]) -> tuple[Prediction, Prediction]:
    gs, nv = Prediction(), Prediction()
    s = _build(case)
    with graphscope.watch(s.model, every=1, keep=case.steps, warn=False,
                          on_nonfinite="ignore") as w:
        for step in range(case.steps):
            loss = s.forward(step)
            loss.backward()
            losses.append(loss.item() / s.scale())
            naive_step(nv, s.model, s.scale())
            s.update()
    for g in w.graphs:
        graphscope_step(gs, g)
    if len(w.graphs) != case.steps:
        gs.said.append(f"(kept {len(w.graphs)} of {case.steps} steps)")
    return gs, nv


def _found_at(f: Any) -> int:
    return f.found_at if getattr(f, "found_at", None) is not None else f.step


def trend_names(run: Any, f: Any, graphs: dict[int, Any]) -> set[str]:
    """What a finding over time points at: its parameters and the names in its message; for a
    capture's finding, what that finding names in its graph (``_finding_names``)."""
    names = set(f.params) | set(_QUOTED.findall(f.message))
    names.update(m.rstrip(".") for m in _MODULE.findall(f.message))
    if f.kind in KIND_OF:
        if f.step not in graphs:
            graphs[f.step] = run.capture(f.step, f.rank)
        g = graphs[f.step]
        for gf in g.findings:
            if str(gf.kind) == f.kind and gf.severity >= Severity.WARNING:
                names |= _finding_names(g, gf)
    return names


def trends_prediction(run: Any, findings: list[Any]) -> Prediction:
    """A recorded run's findings over time as a prediction (each kind from the finding that
    had its evidence first)."""
    pred = Prediction()
    graphs: dict[int, Any] = {}
    for f in sorted(findings, key=_found_at):
        if f.severity < Severity.WARNING:
            pred.info |= set(f.params)
            pred.info_said.setdefault(f.kind, f"{f.kind}@{_found_at(f)}")
            continue
        kind = TREND_KIND_OF.get(f.kind)
        if kind is None:
            pred.other.append(f"{f.kind}@{_found_at(f)}")
            continue
        names = trend_names(run, f, graphs)
        if kind in pred.blamed:
            if _found_at(f) == pred.first_at[kind]:
                pred.blamed[kind] |= names
            continue
        pred.first_at[kind] = _found_at(f)
        pred.add(kind, names, f"{_short(kind, names)} (step {_found_at(f)})")
    return pred


def run_recorded(case: C.Case, record: Record) -> tuple[Prediction, Prediction]:
    s = _build(case)
    with tempfile.TemporaryDirectory(prefix="graphscope-bench-") as tmp:
        with graphscope.watch(s.model, optimizer=s.optimizer, run=tmp, every=RECORD_EVERY,
                              keep=0, warn=False, on_nonfinite="ignore"):
            for step in range(case.steps):
                s.forward(step).backward()
                s.update()
        with open_run(tmp) as run:
            findings = analyze(run)
            pred = trends_prediction(run, findings)
            record.steps = run.step_count()
            record.nonfinite_at = first_nonfinite_loss(run.steps())
    div = [f for f in findings if f.kind == "divergence"]
    if div:
        record.divergence_at, record.divergence_from = _found_at(div[0]), div[0].step
    warned = [f for f in findings if f.severity >= Severity.WARNING]
    if warned:
        first = min(warned, key=_found_at)
        record.first_warning = (first.kind, _found_at(first))
    return pred, Prediction()


def run_long(case: C.Case, steps: int) -> list[str]:
    """The warnings and errors of ``analyze`` on ``steps`` steps of a healthy set-up (those of
    a kind the case accepts, its ``also``, left out as in the scores)."""
    s = _build(case)
    with tempfile.TemporaryDirectory(prefix="graphscope-bench-") as tmp:
        with graphscope.watch(s.model, optimizer=s.optimizer, run=tmp, every=LONG_EVERY,
                              keep=0, warn=False, on_nonfinite="ignore"):
            for step in range(steps):
                s.forward(step).backward()
                s.update()
        with open_run(tmp) as run:
            return [f"{f.kind}@{_found_at(f)}: {f.message}" for f in analyze(run)
                    if f.severity >= Severity.WARNING
                    and TREND_KIND_OF.get(f.kind) not in case.also]


def run_case(case: C.Case, long_steps: int = LONG_STEPS) -> Row:
    row = Row(case)
    t0 = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for mode, fn in (("single", run_single), ("loop", run_loop), ("recorded", run_recorded)):
            try:
                with _deadline(CASE_TIMEOUT_S):
                    arg = {"recorded": row.record, "loop": row.losses}.get(mode, [])
                    gs, nv = fn(case, arg)
            # One set-up's failure is an error row, never the end of the run.
            except Exception as exc:  # noqa: BLE001
                gs, nv = Prediction(error=_error(exc)), Prediction(error=_error(exc))
            row.preds[(mode, "graphscope")], row.preds[(mode, "naive")] = gs, nv
        if case.evidence is not None:
            try:
                with _deadline(CASE_TIMEOUT_S), torch.enable_grad():
                    row.evidence = case.evidence(_build(case))
            except Exception as exc:  # noqa: BLE001
                row.evidence = f"evidence failed: {_error(exc)}"
        if long_steps and case.truth_of("loop")[0] == C.HEALTHY:
            try:
                with _deadline(CASE_TIMEOUT_S * 3):
                    row.long = run_long(case, long_steps)
            except Exception as exc:  # noqa: BLE001
                row.long = [f"error: {_error(exc)}"]
    kinds = sorted({w.category.__name__ for w in caught if "graphscope" in w.category.__module__})
    if kinds:
        row.notes.append("graphscope warnings: " + ", ".join(kinds))
    row.seconds = time.perf_counter() - t0
    return row


# -- scoring -------------------------------------------------------------------------------------


def matches(names: set[str], places: tuple[str, ...]) -> bool:
    """Whether any blamed name is one of the places (a module path also matches everything
    inside it: place ``fc2`` matches ``fc2.weight``, not ``fc20.weight``)."""
    for place in places:
        if place == C.ANYWHERE and any(n != ALL for n in names):
            return True
        for n in names:
            if n == place or n.startswith(place + "."):
                return True
    return False


@dataclass
class Outcome:
    """One tool's outcome on one set-up in one mode."""

    tp: set[str] = field(default_factory=set)
    fn: set[str] = field(default_factory=set)
    fp: set[str] = field(default_factory=set)
    right_place: set[str] = field(default_factory=set)
    error: bool = False

    @property
    def judged_right(self) -> bool:
        return not self.error and not self.fn and not self.fp


def outcome(row: Row, mode: str, tool: str) -> Outcome:
    pred = row.preds[(mode, tool)]
    if pred.error:
        return Outcome(error=True)
    truth, places = row.case.truth_of(mode)
    out = Outcome()
    for kind in C.KINDS:
        predicted = kind in pred.blamed
        if kind == truth:
            if predicted:
                out.tp.add(kind)
                if matches(pred.blamed[kind], places):
                    out.right_place.add(kind)
            else:
                out.fn.add(kind)
        elif predicted and kind not in row.case.also:
            out.fp.add(kind)
    if pred.other and truth == C.HEALTHY:
        out.fp.add(OTHER)
    return out


@dataclass
class Score:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    place: int = 0

    def cell(self) -> str:
        p = f"{self.tp / (self.tp + self.fp):.2f}" if self.tp + self.fp else "-"
        r = f"{self.tp / (self.tp + self.fn):.2f}" if self.tp + self.fn else "-"
        w = f"{self.place / self.tp:.2f}" if self.tp else "-"
        return f"{p} / {r} / {w}"


def score(rows: list[Row], mode: str, tool: str, kinds: tuple[str, ...],
          where: Any = None) -> Score:
    s = Score()
    for row in rows:
        if where is not None and not where(row):
            continue
        o = outcome(row, mode, tool)
        if o.error:
            continue
        s.tp += len(o.tp & set(kinds))
        s.fn += len(o.fn & set(kinds))
        s.fp += len(o.fp & set(kinds))
        s.place += len(o.right_place & set(kinds))
    return s


def _positives(rows: list[Row], mode: str, kind: str) -> int:
    return sum(1 for r in rows if r.case.truth_of(mode)[0] == kind)


# -- report --------------------------------------------------------------------------------------


def _truth_text(case: C.Case, mode: str) -> str:
    kind, places = case.truth_of(mode)
    if kind == C.HEALTHY:
        return "healthy"
    born = f" ({case.born})" if kind == C.NONFINITE and case.born else ""
    return f"{kind}{born} @ {', '.join(places)}"


def _said(pred: Prediction) -> str:
    if pred.error:
        return f"error: {pred.error}"
    text = "; ".join(pred.said + pred.other) if pred.said or pred.other else "nothing"
    if pred.info_said:
        text += " (info: " + "; ".join(pred.info_said.values()) + ")"
    return text


def _columns() -> list[tuple[str, str, str]]:
    names = {"single": "1 capture", "loop": "watched loop", "recorded": "recorded run"}
    return [(m, t, f"{t} {names[m]}") for m, t in COLUMNS]


def summary_table(rows: list[Row]) -> str:
    cols = _columns()
    lines = [
        "| kind | positives (capture / loop) | " + " | ".join(c[2] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for kind in C.KINDS:
        n = f"{_positives(rows, 'single', kind)} / {_positives(rows, 'loop', kind)}"
        cells = [score(rows, m, t, (kind,)).cell() for m, t, _ in cols]
        lines.append(f"| {kind} | {n} | " + " | ".join(cells) + " |")
    cells = [score(rows, m, t, (OTHER,)).cell() if m == "recorded" else "-" for m, t, _ in cols]
    lines.append(f"| {OTHER} (a warning of no benchmark kind on a healthy set-up) | | "
                 + " | ".join(cells) + " |")
    cells = [f"**{score(rows, m, t, C.KINDS + (OTHER,)).cell()}**" for m, t, _ in cols]
    lines.append("| **all kinds** | | " + " | ".join(cells) + " |")
    ok = []
    for m, t, _ in cols:
        judged = [outcome(r, m, t) for r in rows]
        counted = [o for o in judged if not o.error]
        ok.append(f"{sum(o.judged_right for o in counted)} / {len(counted)}")
    lines.append("| set-ups judged right (no miss, no false alarm) | | " + " | ".join(ok) + " |")
    return "\n".join(lines)


def born_table(rows: list[Row]) -> str:
    cols = _columns()
    lines = [
        "| NaN/Inf born in | set-ups | " + " | ".join(c[2] for c in cols) + " |",
        "|---|---|" + "---|" * len(cols),
    ]
    for born in C.BORN:
        sel = lambda r, b=born: r.case.born == b
        n = sum(1 for r in rows if sel(r))
        cells = []
        for m, t, _ in cols:
            s = score(rows, m, t, (C.NONFINITE,), where=sel)
            cells.append(f"recall {s.tp}/{s.tp + s.fn}, place {s.place}/{s.tp}" if s.tp + s.fn else "-")
        lines.append(f"| {born} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _problems(o: Outcome) -> list[str]:
    if o.error:
        return ["error"]
    out = [f"missed {k}" for k in sorted(o.fn)]
    out += [f"false {k}" for k in sorted(o.fp)]
    out += [f"{k} at the wrong place" for k in sorted(o.tp - o.right_place)]
    return out


def problems_table(rows: list[Row], mode: str) -> str:
    naive = NAIVE_OF[mode]
    lines = [
        f"| set-up | truth | graphscope said | naive said ({naive}) | graphscope | naive |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        pg, pn = _problems(outcome(r, mode, "graphscope")), _problems(outcome(r, naive, "naive"))
        if not pg and not pn:
            continue
        lines.append(
            f"| {r.case.name} | {_truth_text(r.case, mode)} | "
            f"{_said(r.preds[(mode, 'graphscope')])} | {_said(r.preds[(naive, 'naive')])} | "
            f"{', '.join(pg) or 'right'} | {', '.join(pn) or 'right'} |"
        )
    return "\n".join(lines)


def info_lines(rows: list[Row]) -> list[str]:
    out = []
    for r in rows:
        if not r.case.info:
            continue
        for mode in ("single", "loop"):
            pred = r.preds[(mode, "graphscope")]
            named = matches(pred.info, r.case.info)
            out.append(f"- {r.case.name} ({mode}): an information finding naming "
                       f"{', '.join(r.case.info)}: {'yes' if named else 'no'}")
    return out


def _lead(at: int | None, bad: int | None) -> str:
    if at is None:
        return "not found"
    if bad is None:
        return f"step {at}"
    return f"step {at} ({bad - at} steps before)" if at < bad else f"step {at} (not before)"


def divergence_table(rows: list[Row]) -> str:
    """Lead times on the set-ups that diverge: marked ``diverges``, or a recorded loss that
    became non-finite after a finite start (outside the non-finite group, born on purpose)."""
    lines = [
        "| set-up | diverging by training (issue 12 target: >= 2 steps) | recorded steps | "
        "loss non-finite at | divergence found at | divergence onset | first warning of any kind |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rec = r.record
        late = rec.nonfinite_at is not None and rec.nonfinite_at > 1
        if not (r.case.diverges or (late and r.case.truth != C.NONFINITE)):
            continue
        first = (f"{rec.first_warning[0]}, {_lead(rec.first_warning[1], rec.nonfinite_at)}"
                 if rec.first_warning else "none")
        lines.append(
            f"| {r.case.name} | {'yes' if r.case.diverges else 'no (exploding at init)'} | "
            f"{rec.steps} | {rec.nonfinite_at if rec.nonfinite_at is not None else 'never'} | "
            f"{_lead(rec.divergence_at, rec.nonfinite_at)} | "
            f"{rec.divergence_from if rec.divergence_from is not None else '-'} | {first} |"
        )
    return "\n".join(lines)


def long_lines(rows: list[Row], steps: int) -> list[str]:
    ran = [r for r in rows if r.long is not None]
    if not ran:
        return ["(not run: --long-steps 0)"]
    alarms = [r for r in ran if r.long]
    out = [f"{len(ran)} set-ups healthy in the loop, {steps} steps each under the recorder "
           f"(captures every {LONG_EVERY}): {len(alarms)} with a warning or error from "
           f"trends.analyze."]
    for r in alarms:
        out.append(f"- {r.case.name}: " + "; ".join(r.long))
    return out


def listing(rows: list[Row]) -> str:
    lines = [
        "| set-up | group | truth (capture) | truth (loop) | loop loss | evidence (measured without graphscope) | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        note = f" {'; '.join(r.notes)}" if r.notes else ""
        loss = (f"{r.losses[0]:.3g} -> {r.losses[-1]:.3g} ({len(r.losses)} steps)"
                if r.losses else "")
        lines.append(
            f"| {r.case.name} | {r.case.group} | {_truth_text(r.case, 'single')} | "
            f"{_truth_text(r.case, 'loop')} | {loss} | {r.evidence}{note} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def header(rows: list[Row], seconds: float) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    errors = sum(1 for r in rows if any(p.error for p in r.preds.values()))
    return (
        f"Measured {datetime.date.today().isoformat()} on {cpu}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op thread(s), Python {platform.python_version()}, "
        f"graphscope at {_revision()}: {len(rows)} set-ups ({errors} with an error), "
        f"{seconds:.0f} s in all."
    )


def _revision() -> str:
    """The commit measured, and whether graphscope/ had uncommitted changes (findings change
    with the code: a result belongs to a revision)."""
    root = HERE.parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                              capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "graphscope"], cwd=root,
                               text=True, capture_output=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "an unknown revision"
    return f"{head}{' with uncommitted changes in graphscope/' if dirty else ''}"


def report(rows: list[Row], seconds: float, long_steps: int = LONG_STEPS) -> str:
    limits = (f"naive rule: nonfinite if any p.grad holds NaN/Inf; vanishing if the smallest "
              f"non-zero parameter-gradient RMS is < {NAIVE_VANISHING_RMS:g} or < "
              f"{NAIVE_VANISHING_RATIO:g} x the largest; exploding if the largest is > "
              f"{NAIVE_EXPLODING_RMS:g}; dead if some p.grad is all zeros; unreachable if p.grad "
              "is None for a parameter that requires grad")
    parts = [
        "# Diagnosis benchmark results",
        "",
        header(rows, seconds),
        "",
        "Each cell: precision / recall / right place (the share of true positives that name a "
        "ground-truth place). `-`: no positives or no predictions. " + limits + ".",
        "",
        summary_table(rows),
        "",
        "## Non-finite values by where they are born",
        "",
        born_table(rows),
        "",
        "## Misses and false alarms: one capture",
        "",
        problems_table(rows, "single"),
        "",
        "## Misses and false alarms: watched loop",
        "",
        problems_table(rows, "loop"),
        "",
        "## Misses and false alarms: recorded run",
        "",
        problems_table(rows, "recorded"),
        "",
        "## Divergence found before the loss is non-finite (recorded run)",
        "",
        "Found at: the step whose numbers completed the divergence finding's evidence; a user "
        "reading `graphscope report` after that step sees it.",
        "",
        divergence_table(rows),
        "",
        "## Healthy set-ups over many steps (recorded run)",
        "",
        *long_lines(rows, long_steps),
        "",
        "## Information findings",
        "",
        *info_lines(rows),
        "",
        "## Every set-up",
        "",
        listing(rows),
        "",
    ]
    return "\n".join(parts)


def show(name: str) -> int:
    """Print every finding of set-up ``name``, for checking a ground truth by hand."""
    case = next((c for c in C.CASES if c.name == name), None)
    if case is None:
        print(f"unknown set-up {name!r}; known: {', '.join(c.name for c in C.CASES)}")
        return 2
    print(f"{case.name}: {case.why}")
    warnings.simplefilter("ignore")
    s = _build(case)
    loss = s.forward(0)
    g = graphscope.capture(loss, model=s.model, warn=False)
    loss.backward()
    graphs = [("capture", g)]
    s = _build(case)
    with graphscope.watch(s.model, every=1, keep=case.steps, warn=False,
                          on_nonfinite="ignore") as w:
        for step in range(case.steps):
            loss = s.forward(step)
            loss.backward()
            print(f"loop step {step}: loss {loss.item() / s.scale():.4g}")
            s.update()
    graphs += [(f"loop step {i}", g) for i, g in enumerate(w.graphs)]
    for label, g in graphs:
        for f in g.findings:
            print(f"{label}: [{f.severity}] {f.kind} names={sorted(_finding_names(g, f))}\n"
                  f"    {f.message}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated set-up names")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave results.md alone")
    ap.add_argument("--show", metavar="NAME", help="print every finding of one set-up and exit")
    ap.add_argument("--long-steps", type=int, default=LONG_STEPS,
                    help="steps of the healthy set-ups' long recorded run "
                    f"(0: skip; default {LONG_STEPS})")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.show:
        return show(args.show)
    chosen = C.CASES
    if args.only:
        wanted = set(args.only.split(","))
        chosen = [c for c in C.CASES if c.name in wanted]
        unknown = wanted - {c.name for c in chosen}
        if unknown:
            ap.error(f"unknown set-up(s): {', '.join(sorted(unknown))}")
    t0 = time.perf_counter()
    rows = []
    for i, case in enumerate(chosen, 1):
        row = run_case(case, args.long_steps)
        rows.append(row)
        flags = [f"{m}/{t}: {', '.join(p)}" for m, t in COLUMNS
                 if (p := _problems(outcome(row, m, t)))]
        if row.long:
            flags.append(f"long: {len(row.long)} warning(s)")
        print(f"[{i:2d}/{len(chosen)}] {case.name:32s} {row.seconds:5.1f} s  "
              f"{'; '.join(flags) or 'all right'}", flush=True)
    text = report(rows, time.perf_counter() - t0, args.long_steps)
    print()
    print(text)
    if not args.no_write and not args.only and args.long_steps == LONG_STEPS:
        (HERE / "results.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
