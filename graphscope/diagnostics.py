"""Diagnoses a captured graph: pure functions from a ``Graph`` to ``Finding`` records.

Owns the wording of every finding and the rules that are not about magnitude (where a NaN was
born, dead units, parameters that get no gradient). Whether a gradient is vanishing or exploding
is ``graphscope.health``'s judgement, read here, so the findings agree with the colours of every
view; numbers and shapes are written by ``graphscope.formatting``, as the views write them.
Imports only ``graphscope.formatting``, ``graphscope.health``, ``graphscope.model`` and
``graphscope.errors``: no
torch, textual or graphviz, so a saved capture can be re-diagnosed anywhere.

An empty gradient (zero elements: a head whose batch selected no rows, ``x[mask]`` with an
all-False mask) means nothing flowed. It is never dead, vanishing or a magnitude, and neither are
the zeros it turns into further down (an empty batch gives its layer's weight an all-zero
gradient): ``_idle`` finds both, and every rule skips them.
"""

from __future__ import annotations

import math

from graphscope.errors import (
    DeadUnitWarning,
    ExplodingGradientWarning,
    GradientWarning,
    NonFiniteGradientWarning,
    UnusedParameterWarning,
    VanishingGradientWarning,
)
from graphscope.formatting import fmt_num, fmt_shape
from graphscope.health import Band, Health, Reason, Thresholds
from graphscope.model import (
    OP,
    PARAM,
    Edge,
    Finding,
    FindingKind,
    Graph,
    GradStats,
    Node,
    ParamStatus,
    Severity,
)


# -- diagnosis ---------------------------------------------------------------------------------

_WARNINGS: dict[str, type[GradientWarning]] = {
    FindingKind.NONFINITE_ORIGIN: NonFiniteGradientWarning,
    FindingKind.NONFINITE_LOSS: NonFiniteGradientWarning,
    FindingKind.VANISHING: VanishingGradientWarning,
    FindingKind.EXPLODING: ExplodingGradientWarning,
    FindingKind.DEAD: DeadUnitWarning,
    FindingKind.UNREACHABLE: UnusedParameterWarning,
}

# Ops whose gradient is zero wherever the unit is "off": a high zero share means dead units.
_GATING_OPS = {"relu", "threshold", "hardtanh", "relu6", "clamp", "clamp_min", "clamp_max"}

# Why a local derivative becomes infinite, by op label: the first thing to try.
_NONFINITE_HINTS = {
    "sqrt": "d/dx sqrt(x) = 1/(2 sqrt(x)) is infinite at 0 and NaN below it. torch.where does "
    "not protect the branch it did not take: its gradient is 0 * inf = NaN. Clamp the input "
    "first: x.clamp_min(1e-12).sqrt().",
    "log": "d/dx log(x) = 1/x is infinite at 0. Add an epsilon (log(x + 1e-8)) or use "
    "log_softmax / logsumexp instead of log(softmax(...)).",
    "div": "a / b has derivative -a/b^2, infinite where b is 0. Add an epsilon to the "
    "denominator or mask the zeros before dividing.",
    "pow": "x ** p with p < 1 has an infinite derivative at 0. Clamp x away from 0.",
    "norm": "the derivative of a norm is x / ||x||, NaN when x is all zeros. Add an epsilon "
    "or use F.normalize(..., eps=...).",
    "linalg_vector_norm": "the derivative of a norm is x / ||x||, NaN when x is all zeros. "
    "Add an epsilon or use F.normalize(..., eps=...).",
    "exp": "exp overflows to Inf for inputs above ~88 (float32). Subtract the max first "
    "(the log-sum-exp trick) or clamp the input.",
    "acos": "acos has an infinite derivative at +-1. Clamp the input to (-1 + eps, 1 - eps).",
    "asin": "asin has an infinite derivative at +-1. Clamp the input to (-1 + eps, 1 - eps).",
    "rsqrt": "rsqrt has an infinite derivative at 0. Add an epsilon before rsqrt.",
    "reciprocal": "1/x has an infinite derivative at 0. Add an epsilon.",
}

# Why an op makes NaN/Inf in the forward pass from finite inputs, by op label.
_FORWARD_HINTS = {
    "log": "log(x) is -inf at 0 and NaN below 0. Clamp the input (x.clamp_min(1e-8).log()), or "
    "stay in log space: log_softmax, logsumexp, F.binary_cross_entropy_with_logits instead of "
    "the log of a probability.",
    "div": "a / b is NaN for 0 / 0 and Inf for a / 0: the denominator is zero somewhere (a "
    "constant row gives a standard deviation of 0). Add an epsilon to the denominator "
    "(x / (std + 1e-5)), or use F.layer_norm / F.normalize, which do.",
    "sqrt": "sqrt(x) is NaN for x < 0 (a variance computed as E[x^2] - E[x]^2 can round below "
    "0). Clamp the input first: x.clamp_min(1e-12).sqrt(), which also keeps its gradient "
    "finite.",
    "rsqrt": "rsqrt(x) is Inf at 0 and NaN below 0: add an epsilon (torch.rsqrt(var + 1e-5)).",
    "pow": "x ** p is NaN for x < 0 with a fractional p, Inf for 0 ** p with p < 0, and "
    "overflows for large x: clamp x first.",
    "exp": "exp(x) overflows to Inf above about 88 in float32 (11 in float16). Subtract the "
    "maximum first (the log-sum-exp trick; torch.logsumexp and softmax do it) or clamp the "
    "input.",
    "reciprocal": "1 / x is Inf at 0: add an epsilon or mask the zeros.",
    "acos": "acos is NaN outside [-1, 1], where rounding can push a cosine: clamp the input to "
    "[-1, 1].",
    "asin": "asin is NaN outside [-1, 1], where rounding can push a sine: clamp the input to "
    "[-1, 1].",
}
# A parameter this large has diverged: a million times an initialised weight's scale.
_DIVERGED_WEIGHT = 1e6
_DIVERGED_HINT = (
    "Training has diverged: an earlier optimizer step made the weights huge or non-finite (a "
    "learning rate too high, or a step taken with exploding or NaN gradients). Lower the "
    "learning rate, clip gradients (torch.nn.utils.clip_grad_norm_), skip steps whose "
    "gradients are not finite (GradScaler does under AMP), run with "
    "graphscope.watch(model, on_nonfinite='raise') to stop at the first bad step, and restart "
    "from the last good checkpoint."
)
# Watched steps in a row whose .grad carried earlier gradients across optimizer updates that
# make a missing zero_grad().
_ACCUMULATING_STEPS = 3


def warning_class(finding: Finding) -> type[GradientWarning] | None:
    """The warning category issued for ``finding``; ``None`` for information-only findings."""
    if finding.severity < Severity.WARNING:
        return None
    return _WARNINGS.get(finding.kind)


def where(node: Node) -> str:
    """Where a node is, in words: its op, module and source line when known."""
    text = f"'{node.name}' {fmt_shape(node.shape)}" if node.kind == PARAM else f"{node.label} ({node.op})"
    if node.module and node.kind != PARAM:
        text += f" in module {node.module}"
    if node.source is not None:
        text += f", created at {node.source}"
    return text


def diagnose(graph: Graph, *, thresholds: Thresholds | None = None) -> list[Finding]:
    """All findings for ``graph``, worst first, then by node id.

    Structure-only findings (unreachable, frozen, opaque) need no backward; the gradient
    findings use the statistics of the latest pass.

    Args:
        graph: A capture, live or loaded from a file.
        thresholds: The limits to judge with; the capture's own (``Thresholds.of(graph)``)
            when ``None``.

    Returns:
        The findings; the input graph is not modified.

    Example:
        >>> for f in diagnose(graphscope.load("step.json")): print(f)  # doctest: +SKIP
    """
    t = thresholds or Thresholds.of(graph)
    findings: list[Finding] = []
    findings += _nonfinite_loss(graph)
    findings += _forward_origins(graph)
    findings += _nonfinite_origins(graph)
    findings += _accumulated(graph)
    findings += _magnitudes(graph, Health.of(graph, t))
    findings += _dead(graph, t, _idle(graph))
    findings += _params(graph)
    findings += _opaque(graph)
    findings.sort(key=lambda f: -f.severity)  # stable: each rule already put its worst first
    return findings


def rediagnose(graph: Graph, *, thresholds: Thresholds | None) -> Graph:
    """``graph`` judged with other thresholds, for a view that was given them.

    Returns:
        ``graph`` itself when ``thresholds`` is ``None`` or already its own; otherwise a new
        ``Graph`` sharing its nodes and edges, with ``thresholds`` in its ``meta`` and the
        findings they give, so that colours and findings keep agreeing. ``graph`` is not
        modified.
    """
    if thresholds is None or thresholds == Thresholds.of(graph):
        return graph
    judged = Graph(nodes=graph.nodes, edges=graph.edges, roots=graph.roots, params=graph.params,
                   passes=graph.passes, meta={**graph.meta, "thresholds": thresholds.to_dict()})
    judged.findings = diagnose(judged)
    return judged


def _nonfinite_loss(graph: Graph) -> list[Finding]:
    out = []
    for root, value in zip(graph.roots, graph.meta.get("root_values", [])):
        if value is None or math.isfinite(float(value)):
            continue
        node = graph.nodes[root]
        grads_ok = all(n.grad is None or n.grad.finite for n in graph.nodes)
        tail = (
            "Its gradients are all finite, so the problem is in the forward pass only."
            if grads_ok and graph.passes
            else ""
        )
        hint = (
            "A non-finite loss comes from the forward pass: look for log(0), 0/0, "
            "sqrt of a negative, exp overflow, or NaN in the input batch "
            "(torch.isfinite(x).all()). Fix the forward before looking at gradients."
        )
        births = _births(graph)
        if births:
            tail = f"It was born in the forward pass, {_birth_place(graph, births[0])}. {tail}"
            hint = "The finding at the origin says what to change; fix the forward pass " \
                "before looking at gradients."
        out.append(
            Finding(
                kind=FindingKind.NONFINITE_LOSS,
                severity=Severity.ERROR,
                node=root,
                message=f"The loss itself is {value} (computed by {where(node)}). {tail}".strip(),
                hint=hint,
            )
        )
    return out


def _nonfinite_origins(graph: Graph) -> list[Finding]:
    """Nodes that received a finite gradient and sent back NaN/Inf: where the NaN was born.

    Not a node at or after a NaN born in the forward pass: its NaN gradient is that value's
    consequence, reported by ``_forward_origins``.
    """
    out = []
    after = _forward_consequences(graph)
    for node in graph.backward_order():
        incoming = node.grad
        if incoming is None:
            continue
        if not incoming.finite:
            if node.is_root and node.kind == OP:
                out.append(
                    Finding(
                        kind=FindingKind.NONFINITE_ORIGIN,
                        severity=Severity.ERROR,
                        node=node.id,
                        message=f"The gradient passed to backward() for {where(node)} already "
                        f"holds {_bad(incoming)}.",
                        hint="Check the `gradient=` argument you pass to backward() or "
                        "autograd.grad().",
                    )
                )
            continue
        sent = [(e, e.grad) for e in graph.in_edges(node.id) if e.grad is not None]
        bad = [(e, s) for e, s in sent if not s.finite]
        if not bad or node.id in after:
            continue
        got = "a finite gradient" if incoming.numel else "an empty gradient (nothing flowed in)"
        targets = ", ".join(dict.fromkeys(graph.nodes[e.src].title for e, _ in bad))
        hint = _NONFINITE_HINTS.get(
            node.label,
            "This op's local derivative is infinite or undefined for some input values "
            "(0 in sqrt/log/div/pow, overflow in exp, a custom backward). Inspect the inputs "
            "it saved for backward, clamp them or add an epsilon. Clipping gradients does "
            "not help once a NaN exists.",
        )
        diverged = _diverged_above(graph, node.id)
        if diverged:
            hint = _DIVERGED_HINT
        out.append(
            Finding(
                kind=FindingKind.NONFINITE_ORIGIN,
                severity=Severity.ERROR,
                node=node.id,
                message=f"NaN/Inf gradient born in the backward pass at {where(node)}: it "
                f"received {got} and sent back {_bad(bad[0][1])} toward {targets}. Every NaN "
                "gradient below it comes from here." + diverged,
                hint=hint,
            )
        )
    return out


def _births(graph: Graph) -> list[dict]:
    """The births of non-finite forward values the capture traced (``meta["forward_nonfinite"]``),
    in forward order; those naming a missing node are left out."""
    trace = graph.meta.get("forward_nonfinite") or {}
    return [b for b in trace.get("births", ()) if 0 <= int(b["node"]) < len(graph.nodes)]


def _birth_place(graph: Graph, birth: dict) -> str:
    node = graph.nodes[birth["node"]]
    if birth["at"] == "data":
        return f"in the data fed to {node.title}"
    if birth["at"] == "leaf":
        return f"in {'parameter' if node.kind == PARAM else 'leaf tensor'} {where(node)}"
    return f"at {where(node)}"


def _held(birth: dict) -> str:
    parts = [f"{n} {label}" for n, label in ((birth["nan"], "NaN"), (birth["inf"], "Inf")) if n]
    return " and ".join(parts) + f" of {birth['numel']} values"


def _forward_consequences(graph: Graph) -> set[int]:
    """The nodes at or after a forward birth: their values, and so their gradients, may carry
    its NaN."""
    found = {int(b["node"]) for b in _births(graph)}
    frontier = list(found)
    while frontier:
        nid = frontier.pop()
        for c in graph.consumers(nid):
            if c not in found:
                found.add(c)
                frontier.append(c)
    return found


def _forward_origins(graph: Graph) -> list[Finding]:
    """Where a non-finite forward value was born: at an op whose inputs are finite, in the data
    (a saved input no op made), or in the leaves (parameters already non-finite)."""
    out = []
    births = _births(graph)
    leaves = [b for b in births if b["at"] == "leaf"]
    for b in births:
        node = graph.nodes[b["node"]]
        param = node.name or None
        if b["at"] == "leaf":
            if b is not leaves[0]:
                continue  # weights already non-finite are one divergence: one finding
            message, hint = _nonfinite_leaves(graph, leaves)
        elif b["at"] == "data":
            message = f"NaN/Inf came in with the data: the input '{b['tensor']}' of " \
                f"{where(node)} holds {_held(b)}, and no op of the graph made it (a batch, a " \
                "target, a mask or a constant)."
            hint = "Check the batch before the forward pass: torch.isfinite(x).all(). Look for " \
                "missing values in the data set, a division by a zero standard deviation while " \
                "normalising it, or a corrupt sample; no change to the model can fix it."
        else:
            top = b.get("input_abs_max")
            size = "" if top is None else " (all zeros)" if float(top) == 0 else \
                f" (largest magnitude {fmt_num(float(top))})"
            unseen = [graph.nodes[i].title for i in b.get("unseen", ())
                      if 0 <= i < len(graph.nodes)]
            if unseen:
                more = f" and {b['unseen_more']} more" if b.get("unseen_more") else ""
                message = f"NaN/Inf born in the forward pass at {where(node)}, or just before it " \
                    f"in {', '.join(unseen)}{more}, whose output nothing saved for backward: the " \
                    f"values before them are finite and the output of {node.title} holds " \
                    f"{_held(b)}."
            else:
                message = f"NaN/Inf born in the forward pass at {where(node)}: its inputs are " \
                    f"finite{size}, its output holds {_held(b)}."
            diverged = _diverged_above(graph, node.id)
            if diverged:
                message += diverged
                hint = _DIVERGED_HINT
            else:
                hint = _FORWARD_HINTS.get(
                    node.label,
                    "An op made NaN or Inf from finite inputs: 0 / 0 or x / 0, log or sqrt of a "
                    "negative number, inf - inf, or a result past the dtype's range (float16 "
                    "ends at 65504, float32 at 3.4e38). If its inputs are huge, the cause is "
                    "further up (a diverging run, a missing normalisation); otherwise guard the "
                    "op where it is undefined. An input the op does not save for backward (a "
                    "constant or a batch added to it) is invisible here: check it with "
                    "torch.isfinite(t).all().",
                )
            message += " Every non-finite value computed from it, in forward and backward, " \
                "comes from there."
        out.append(Finding(kind=FindingKind.NONFINITE_ORIGIN, severity=Severity.ERROR,
                           node=node.id, message=message, hint=hint, param=param))
    return out


def _nonfinite_leaves(graph: Graph, leaves: list[dict]) -> tuple[str, str]:
    """The message and hint for the leaves (parameters) already non-finite before the forward."""
    first = graph.nodes[leaves[0]["node"]]
    what = "Parameter" if first.kind == PARAM else "The leaf tensor"
    message = f"{what} {where(first)} already holds {_held(leaves[0])} before this forward pass"
    if len(leaves) > 1:
        others = [f"'{graph.nodes[b['node']].title}'" for b in leaves[1:]]
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        message += f", and so do {shown}"
    message += ": every value computed from them, the loss and the gradients are non-finite too."
    hint = _DIVERGED_HINT
    if any(graph.nodes[b["node"]].kind != PARAM for b in leaves):
        message += " (A leaf is a parameter not named with model=, or an input that requires " \
            "grad.)"
        hint += " If it is your input batch, check it with torch.isfinite(x).all()."
    return message, hint


def _diverged_above(graph: Graph, nid: int) -> str:
    """A sentence naming the largest of the huge leaves ``nid`` was computed from (weights
    past ``_DIVERGED_WEIGHT``, from the forward trace), or ``""``."""
    trace = graph.meta.get("forward_nonfinite") or {}
    huge = {int(n): float(v) for n, v in trace.get("leaf_abs_max", ())
            if float(v) >= _DIVERGED_WEIGHT}
    if not huge:
        return ""
    seen = {nid}
    frontier = [nid]
    found = []
    while frontier:
        for p in graph.producers(frontier.pop()):
            if p not in seen:
                seen.add(p)
                frontier.append(p)
                if p in huge:
                    found.append(p)
    if not found:
        return ""
    top = max(found, key=huge.__getitem__)
    return f" {graph.nodes[top].title!r} before it holds values up to {fmt_num(huge[top])}: " \
        "the weights have diverged."


def _accumulated(graph: Graph) -> list[Finding]:
    """Parameters whose ``.grad`` after this backward is not the gradient this backward sent: an
    earlier backward's gradient was added to it (``meta["accumulated_grad"]``, from the
    capture). Information on one capture; a warning once ``watch`` saw it in
    ``_ACCUMULATING_STEPS`` watched steps in a row with the optimizer updating the parameter in
    between (``steps_in_a_row``)."""
    out = []
    for a in graph.meta.get("accumulated_grad", ()):
        nid = int(a["node"])
        node = graph.nodes[nid] if 0 <= nid < len(graph.nodes) else None
        if node is None or node.grad is None:
            continue
        what = "Parameter" if node.kind == PARAM else "The leaf tensor"
        message = f"{what} {where(node)}: its .grad holds a gradient of norm " \
            f"{fmt_num(float(a['norm']))} but this backward sent it {fmt_num(node.grad.norm)}: " \
            "gradients from an earlier backward were added to it."
        steps = int(a.get("steps_in_a_row", 0))
        if steps >= _ACCUMULATING_STEPS:
            message += f" It has held earlier gradients in {steps} watched steps in a row, " \
                "and the optimizer updated the parameter in between: each step applies the sum " \
                "of every gradient so far."
            severity = Severity.WARNING
            hint = "optimizer.zero_grad() is missing from the training loop: call it (or " \
                "model.zero_grad()) before each backward."
        else:
            severity = Severity.INFO
            hint = "Call optimizer.zero_grad() (or model.zero_grad()) before each backward, " \
                "unless you accumulate gradients over micro-batches on purpose."
        out.append(Finding(kind=FindingKind.ACCUMULATED, severity=severity, node=nid,
                           message=message, hint=hint, param=node.name or None))
    return out


def _bad(s: GradStats) -> str:
    parts = []
    if s.nan_count:
        parts.append(f"{s.nan_count} NaN")
    if s.inf_count:
        parts.append(f"{s.inf_count} Inf")
    return " and ".join(parts) + f" of {s.numel} values"


def _magnitudes(graph: Graph, h: Health) -> list[Finding]:
    scaled = f" (x{h.scale:g} loss scale)" if h.scale != 1.0 else ""
    top = graph.nodes[h.top] if h.top is not None else None
    out: list[Finding] = []
    for v in h.verdicts.values():
        n = graph.nodes[v.node]
        if v.band is Band.EXPLODING:
            why = (
                f"{fmt_num(h.growth)}x larger near the input than near the output"
                if v.reason is Reason.TREND
                else f"above the {fmt_num(h.exploding_rms)} threshold{scaled}"
            )
            out.append(
                Finding(
                    kind=FindingKind.EXPLODING,
                    severity=Severity.WARNING,
                    node=n.id,
                    param=n.name,
                    message=f"Exploding gradient at parameter {where(n)}: RMS {fmt_num(v.rms)}, "
                    f"{why}.",
                    hint="Each layer multiplies the gradient by roughly its weight scale; "
                    "weights initialised too large make it grow exponentially with depth. Use "
                    "Kaiming/Xavier initialisation, normalisation layers, gradient clipping "
                    "(torch.nn.utils.clip_grad_norm_) or a lower learning rate.",
                )
            )
        else:
            assert top is not None
            out.append(_vanishing(n, v.rms, v.rel, top, h.top_rms, h.trend is Band.VANISHING))
    # Worst first: the smallest vanishing and the largest exploding gradients lead.
    out.sort(key=lambda f: h.verdicts[f.node].rms if f.kind == FindingKind.VANISHING else -h.verdicts[f.node].rms)  # type: ignore[index]
    return out


def _vanishing(n: Node, r: float, rel: float, top: Node, top_rms: float, trend: bool) -> Finding:
    where_ = f"parameter {where(n)}: RMS {fmt_num(r)}, {fmt_num(rel)} of the largest parameter " \
        f"gradient ('{top.name}', RMS {fmt_num(top_rms)})"
    if trend:
        return Finding(
            kind=FindingKind.VANISHING,
            severity=Severity.WARNING,
            node=n.id,
            param=n.name,
            message=f"Vanishing gradient at {where_}. Gradients fade layer by layer toward "
            "the input, so the early layers barely learn.",
            hint="Gradients shrink multiplicatively on the way back: each sigmoid multiplies "
            "them by at most 0.25, tanh by at most 1, small weights by less. Try ReLU/GELU "
            "with Kaiming initialisation, residual connections, LayerNorm/BatchNorm, or fewer "
            "layers.",
        )
    return Finding(
        kind=FindingKind.VANISHING,
        severity=Severity.INFO,
        node=n.id,
        param=n.name,
        message=f"Near-zero gradient at {where_}, while its neighbours' are healthy.",
        hint="An isolated tiny gradient is usually structural, not depth: the parameter is "
        "cancelled out downstream (a key bias before softmax adds the same score to every "
        "key), or its input is almost zero. Consider removing it; no training fix needed.",
    )


def _idle(graph: Graph) -> set[int]:
    """Nodes through which nothing flowed in the latest backward.

    A node is idle when its gradient is empty (zero elements), or all zeros that came only from
    idle consumers or along empty edges: ``x[mask]`` with no rows sends zeros to ``x``, and an
    empty batch gives its layer's weight all zeros. A node that also got zeros from a consumer
    which received a real gradient is not idle: that consumer is a dead unit.

    Consumers are settled before their producers (the backward direction), iteratively: a
    10,000-op chain costs one visit per node and edge.
    """
    grads = [n.grad for n in graph.nodes] + [e.grad for e in graph.edges]
    if not any(g is not None and g.numel == 0 for g in grads):
        return set()  # idleness starts at an empty gradient; most steps have none
    outs: list[list[Edge]] = [[] for _ in graph.nodes]  # the gradients a node received
    producers: list[list[int]] = [[] for _ in graph.nodes]
    for e in graph.edges:
        outs[e.src].append(e)
        producers[e.dst].append(e.src)
    pending = [len(o) for o in outs]
    ready = [i for i, n in enumerate(pending) if n == 0]
    idle: set[int] = set()
    while ready:
        nid = ready.pop()
        g = graph.nodes[nid].grad
        if g is not None and (
            g.numel == 0
            or (
                g.zero_frac >= 1.0
                and outs[nid]
                and all(
                    e.dst in idle or (e.grad is not None and e.grad.numel == 0) for e in outs[nid]
                )
            )
        ):
            idle.add(nid)
        for src in producers[nid]:
            pending[src] -= 1
            if pending[src] == 0:
                ready.append(src)
    return idle


def _dead(graph: Graph, t: Thresholds, idle: set[int]) -> list[Finding]:
    out = []
    for node in graph.nodes:
        if node.id in idle:
            continue  # nothing flowed: no unit here had a chance to fire
        if node.kind == OP and node.grad is not None and node.grad.finite:
            if node.grad.zero_frac >= 1.0:
                continue  # nothing came in: the dead unit is further up
            sent = [e.grad for e in graph.in_edges(node.id) if e.grad is not None]
            sent = [s for s in sent if s.numel]  # an empty input holds no units
            if not sent or not all(s.finite for s in sent):
                continue
            zero = min(s.zero_frac for s in sent)
            limit = t.dead_frac if node.label in _GATING_OPS else 1.0
            if zero >= limit:
                out.append(
                    Finding(
                        kind=FindingKind.DEAD,
                        severity=Severity.WARNING,
                        node=node.id,
                        message=f"Dead units at {where(node)}: it received a non-zero "
                        f"gradient but sent back {zero:.0%} exact zeros, so nothing below it "
                        "learns from this path.",
                        hint="A ReLU whose inputs are all negative (e.g. a large negative bias, "
                        "a too-high learning rate) passes no gradient. Try LeakyReLU/GELU, "
                        "a smaller learning rate, or re-initialise the layer feeding it.",
                    )
                )
        elif node.kind == PARAM and node.grad is not None and node.grad.zero_frac >= 1.0:
            out.append(
                Finding(
                    kind=FindingKind.DEAD,
                    severity=Severity.WARNING,
                    node=node.id,
                    param=node.name,
                    message=f"Parameter {where(node)} received an all-zero gradient: it "
                    "will not change this step.",
                    hint="Look at the op that consumes it for a dead unit (a ReLU that never "
                    "fires, a mask of zeros).",
                )
            )
    return out


def _params(graph: Graph) -> list[Finding]:
    out = []
    frozen = []
    for p in graph.params:
        if p.status is ParamStatus.UNREACHABLE:
            out.append(
                Finding(
                    kind=FindingKind.UNREACHABLE,
                    severity=Severity.WARNING,
                    node=None,
                    param=p.name,
                    message=f"Parameter '{p.name}' {tuple(p.shape)} requires grad but the "
                    "loss does not depend on it: it gets no gradient and never learns.",
                    hint="It is unused in forward, or its output was cut off by .detach(), "
                    ".item(), .data or torch.no_grad(). If that is intended, set "
                    "requires_grad=False on it (and pass find_unused_parameters=True to DDP).",
                )
            )
        elif p.status is ParamStatus.FROZEN:
            frozen.append(p.name)
    if frozen:
        shown = ", ".join(frozen[:8]) + (f" and {len(frozen) - 8} more" if len(frozen) > 8 else "")
        out.append(
            Finding(
                kind=FindingKind.FROZEN,
                severity=Severity.INFO,
                node=None,
                message=f"{len(frozen)} frozen parameter(s) (requires_grad=False): {shown}.",
                hint="Frozen on purpose (fine-tuning)? Nothing to do. Otherwise set "
                "requires_grad=True.",
            )
        )
    return out


def _opaque(graph: Graph) -> list[Finding]:
    out = []
    for node in graph.nodes:
        if node.opaque is None:
            continue
        inside = [p.name for p in graph.params if p.status is ParamStatus.OPAQUE and p.node == node.id]
        params = f" It uses {len(inside)} parameter(s): {', '.join(inside[:5])}." if inside else ""
        if node.opaque == "checkpoint":
            hint = "Reentrant checkpointing runs the region in a nested backward that the " \
                "walk cannot see. Use torch.utils.checkpoint.checkpoint(..., use_reentrant=" \
                "False) to see every op inside."
        else:
            hint = "torch.compile fuses the region into one autograd node. Capture the " \
                "uncompiled model to see every op."
        out.append(
            Finding(
                kind=FindingKind.OPAQUE,
                severity=Severity.INFO,
                node=node.id,
                message=f"{where(node)} is an opaque {node.opaque} region shown as one node."
                + params,
                hint=hint,
            )
        )
    return out
