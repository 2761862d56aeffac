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

One finding per cause: a depth trend is one finding that lists the parameters it fades (or
grows), gradients past an absolute limit are one finding per kind, a dead op carries the
parameters it starves; ``Finding.nodes`` names them all so every view marks each one. Zeros
that mathematics or number formats explain are said once, by the rule that explains them, and
not again as dead or vanishing: float16 gradients that underflow without a loss scale, a softmax
whose outputs are only summed, a bias before a batch norm, a product with a zero initial state.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from graphscope.errors import (
    DeadUnitWarning,
    ExplodingGradientWarning,
    GradientWarning,
    NonFiniteGradientWarning,
    UnderflowWarning,
    UnusedParameterWarning,
    VanishingGradientWarning,
)
from graphscope.formatting import fmt_num, fmt_shape
from graphscope.health import (
    Band,
    Health,
    Reason,
    Thresholds,
    ChainTrend,
    Verdict,
    forward_params,
    depth_trends,
    time_trends,
)
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
    Source,
    fmt_count,
)


# -- diagnosis ---------------------------------------------------------------------------------

_WARNINGS: dict[str, type[GradientWarning]] = {
    FindingKind.NONFINITE_ORIGIN: NonFiniteGradientWarning,
    FindingKind.NONFINITE_LOSS: NonFiniteGradientWarning,
    FindingKind.VANISHING: VanishingGradientWarning,
    FindingKind.EXPLODING: ExplodingGradientWarning,
    FindingKind.DEAD: DeadUnitWarning,
    FindingKind.UNDERFLOW: UnderflowWarning,
    FindingKind.UNREACHABLE: UnusedParameterWarning,
}

# Ops whose gradient is zero wherever the unit is "off": a high zero share means dead units.
_GATING_OPS = {"relu", "threshold", "hardtanh", "relu6", "clamp", "clamp_min", "clamp_max"}
# Gating ops whose output is zero where they block: the layer after a fully dead one gets a
# zero input, so its weight an all-zero gradient, from the same cause.
_ZERO_OUTPUT = {"relu", "threshold"}
# What an op's zero derivative means, by op label (through its family).
_DEAD_FAMILY = {
    "threshold": "relu", "clamp_min": "relu", "relu6": "hardtanh", "clamp": "hardtanh",
    "clamp_max": "hardtanh", "mm": "matmul", "addmm": "matmul", "bmm": "matmul",
    "baddbmm": "matmul", "linear": "matmul", "convolution": "matmul",
}
_DEAD_HINTS = {
    "relu": "ReLU passes no gradient where its input is negative, and here (almost) every input "
    "is: a large negative bias, inputs shifted below zero, or a learning rate so high that an "
    "update pushed the layer there. Try LeakyReLU/GELU, a smaller learning rate, or "
    "re-initialise the layer feeding it (Kaiming init, zero bias).",
    "hardtanh": "A clamp (hardtanh, relu6) passes no gradient where its input lies outside its "
    "limits, and here (almost) every input does: the inputs are saturated. Rescale them "
    "(normalisation, smaller weights) or widen the limits; a smooth function (tanh, softplus) "
    "always passes some gradient.",
    "mul": "The derivative of a * b with respect to a is b: the other factor is all zeros here "
    "(a zero mask, a zero-initialised gate or scale), so nothing learns through this product.",
    "matmul": "The gradient of a matrix product with respect to one operand is the other "
    "operand times the output's gradient: the other operand is all zeros here (a "
    "zero-initialised weight, or the output of a dead layer).",
}
# Activations named in a depth trend's message and hint.
_ACTIVATIONS = {
    "sigmoid", "tanh", "relu", "gelu", "silu", "elu", "leaky_relu", "softplus", "hardtanh",
    "relu6", "mish", "selu", "celu", "hardswish", "hardsigmoid", "log_sigmoid",
}
_FADE_HINTS = {
    "sigmoid": "sigmoid's derivative s(x)(1 - s(x)) is at most 0.25, so each sigmoid shrinks "
    "the gradient at least 4x on its way back ({count} of them: by at most 0.25^{count} = "
    "{bound}). Use ReLU/GELU with Kaiming initialisation, or add residual connections or "
    "normalisation (LayerNorm/BatchNorm).",
    "tanh": "tanh's derivative 1 - tanh(x)^2 is at most 1 and near 0 where tanh saturates, and "
    "PyTorch's default initialisation (kaiming_uniform_ with a=sqrt(5): weight std "
    "1/sqrt(3 fan_in)) shrinks the signal in every layer: here the gradient loses about "
    "{factor}x per layer. Initialise with nn.init.xavier_uniform_(w, "
    "gain=nn.init.calculate_gain('tanh')), or add normalisation (LayerNorm) or residual "
    "connections.",
    "": "Each layer multiplies the gradient by roughly its weights' scale times its "
    "activation's slope, and here it loses about {factor}x per layer: weights initialised too "
    "small make it fade exponentially with depth. Use Kaiming initialisation "
    "(nn.init.kaiming_normal_(w, nonlinearity='relu')), normalisation layers or residual "
    "connections.",
}
# Ops that only move or reshape values: a bias seen through them is still the same bias.
_SHAPE_OPS = {
    "view", "reshape", "unsafe_view", "t", "transpose", "permute", "expand", "unsqueeze",
    "squeeze", "clone", "to_copy", "alias",
}
_BIAS_USERS = {"convolution", "addmm", "add"}  # ops that add a 1-D parameter as a bias
# The input an op adds rather than multiplies (a bias): it is not the factor that zeroes the rest.
_ADDED_INPUT = {"addmm": 0, "addmv": 0, "addbmm": 0, "baddbmm": 0, "convolution": 2}
_MEAN_SUBTRACTING = ("batch_norm", "instance_norm")  # labels: native_batch_norm, cudnn_...
_SOFTMAX = {"softmax"}
_NONFINITE_KINDS = (FindingKind.NONFINITE_ORIGIN, FindingKind.NONFINITE_LOSS)
_FP16_MIN_NORMAL = 2.0**-14  # 6.1e-5; float16's smallest subnormal is 2**-24 (6e-8)

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
    """The warning category issued for ``finding``; ``None`` for information-only findings. A
    warning-level kind without a category of its own is the base ``GradientWarning``."""
    if finding.severity < Severity.WARNING:
        return None
    return _WARNINGS.get(finding.kind, GradientWarning)


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
    idle = _idle(graph)
    # Zeros and tiny gradients another rule explains (float16 underflow, a softmax whose
    # gradient cancels) are reported once, there, not as vanishing or dead as well.
    health = Health.of(graph, t)
    explained = _underflow(graph, t, idle) + _cancelling_softmax(graph, idle)
    covered = {n for f in explained for n in f.nodes}
    explained += _saturated(graph, health, idle, covered)
    covered = {n for f in explained for n in f.nodes}
    findings += _magnitudes(graph, health, covered)
    findings += _through_time(graph, t, findings)
    deep = _through_depth(graph, t, findings)
    if any(f.kind == FindingKind.EXPLODING for f in deep):
        # Gradients "far below the largest" were measured against an exploded one.
        findings = [f for f in findings
                    if not (f.kind == FindingKind.VANISHING and f.severity < Severity.WARNING)]
    findings += deep
    findings += explained
    broken = any(f.kind in _NONFINITE_KINDS and f.severity >= Severity.WARNING for f in findings)
    findings += _dead(graph, t, idle, covered, after_nonfinite=broken)
    findings += _params(graph)
    findings += _opaque(graph)
    findings += _eval_modes(graph)
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
        severity = Severity.ERROR
        message = f"NaN/Inf gradient born in the backward pass at {where(node)}: it " \
            f"received {got} and sent back {_bad(bad[0][1])} toward {targets}. Every NaN " \
            "gradient below it comes from here." + diverged
        if _scaler_overflow(graph, [s for _, s in bad]):
            severity = Severity.INFO
            message += f" The loss is finite and scaled by a GradScaler (x{graph.meta['loss_scale']:g}):" \
                " this is the scaled gradient overflowing its dtype."
            hint = "Expected now and then with mixed precision: scaler.step(optimizer) skips this " \
                "step and scaler.update() lowers the scale. Only if it happens on most steps " \
                "(the scale keeps falling) look for a real overflow in the model."
        out.append(
            Finding(
                kind=FindingKind.NONFINITE_ORIGIN,
                severity=severity,
                node=node.id,
                message=message,
                hint=hint,
            )
        )
    return out


def _scaler_overflow(graph: Graph, sent: list[GradStats]) -> bool:
    """Inf born in backward under a GradScaler loss scale with a finite loss: the scaled
    gradient overflowed, which GradScaler detects and skips by design."""
    if not graph.meta.get("loss_scale"):
        return False
    roots = graph.meta.get("root_values") or []
    finite_loss = all(v is None or math.isfinite(float(v)) for v in roots)
    return finite_loss and all(s.inf_count and not s.nan_count for s in sent)


def _births(graph: Graph) -> list[dict]:
    """The births of non-finite forward values the capture traced (``meta["forward_nonfinite"]``),
    in forward order; those naming a missing node are left out."""
    trace = graph.meta.get("forward_nonfinite") or {}
    return [b for b in trace.get("births", ()) if 0 <= int(b["node"]) < len(graph.nodes)]


def _birth_place(graph: Graph, birth: dict) -> str:
    node = graph.nodes[birth["node"]]
    made = birth.get("made")
    if birth["at"] == "data" and isinstance(made, dict) and not made.get("from_data"):
        return f"at {_made_where(made)}, outside the autograd graph"
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
        elif b["at"] == "data" and isinstance(b.get("made"), dict):
            message, hint = _made_outside(graph, node, b)
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


def _made_where(made: dict) -> str:
    """``div in module norm, created at file:line in f``: an op the recording saw outside the
    graph."""
    text = str(made.get("op") or "an op")
    if made.get("module"):
        text += f" in module {made['module']}"
    src = made.get("source")
    if isinstance(src, list) and len(src) == 3:
        text += f", created at {Source(str(src[0]), int(src[1]), str(src[2]))}"
    return text


def _made_outside(graph: Graph, node: Node, birth: dict) -> tuple[str, str]:
    """A NaN/Inf that entered the graph as data, made in the forward pass by ops outside it
    (none of their inputs needed a gradient), as the forward recording saw them."""
    made = birth["made"]
    at = _made_where(made)
    through = int(made.get("through") or 1)
    path = f" (and {through - 1} more op{'s' if through > 2 else ''} after it)" if through > 1 else ""
    enters = f"It enters the graph as the input '{birth['tensor']}' of {where(node)}, which " \
        f"holds {_held(birth)}."
    if made.get("from_data"):
        message = f"NaN/Inf came in with the data and went through {at}{path} outside the " \
            f"autograd graph: what it read was already non-finite when the forward pass " \
            f"began. {enters}"
        hint = "Check the batch before the forward pass: torch.isfinite(x).all(). Look for " \
            "missing values in the data set or a corrupt sample; no change to the model can " \
            "fix it."
        return message, hint
    message = f"NaN/Inf born in the forward pass at {at}{path}, outside the autograd graph: none " \
        "of its inputs needs a gradient, so no node records it, but its inputs are finite and " \
        f"its output is not. {enters} Every non-finite value computed from it, in forward and " \
        "backward, comes from there."
    hint = _FORWARD_HINTS.get(
        str(made.get("op")),
        "An op made NaN or Inf from finite inputs: 0 / 0 or x / 0, log or sqrt of a negative "
        "number, inf - inf, or a result past the dtype's range; guard it where it is undefined "
        "(an epsilon, a clamp).")
    return message, hint


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
    groups: dict[bool, list[tuple[Node, float, int]]] = {}
    for a in graph.meta.get("accumulated_grad", ()):
        nid = int(a["node"])
        node = graph.nodes[nid] if 0 <= nid < len(graph.nodes) else None
        if node is None or node.grad is None:
            continue
        steps = int(a.get("steps_in_a_row", 0))
        groups.setdefault(steps >= _ACCUMULATING_STEPS, []).append((node, float(a["norm"]), steps))
    out = []
    # One finding per cause: the parameters that keep accumulating over watched steps (a
    # forgotten zero_grad), and those that held an earlier gradient once.
    for persistent, items in sorted(groups.items(), reverse=True):
        items.sort(key=lambda it: -abs(it[1]) / max(it[0].grad.norm, 1e-300))  # type: ignore[union-attr]
        each = "; ".join(
            f"{where(node)}: .grad has norm {fmt_num(held)} but this backward sent it "
            f"{fmt_num(node.grad.norm)}"  # type: ignore[union-attr]
            for node, held, _ in items
        )
        count = f"{len(items)} parameters" if len(items) > 1 else "A parameter"
        message = f"{count} hold gradients from an earlier backward in .grad ({each})."
        if persistent:
            steps = min(it[2] for it in items)
            message += f" They have held earlier gradients in {steps} watched steps in a row, " \
                "and the optimizer updated them in between: each step applies the sum of every " \
                "gradient so far."
            severity = Severity.WARNING
            hint = "optimizer.zero_grad() is missing from the training loop: call it (or " \
                "model.zero_grad()) before each backward."
        else:
            severity = Severity.INFO
            hint = "Call optimizer.zero_grad() (or model.zero_grad()) before each backward, " \
                "unless you accumulate gradients over micro-batches on purpose."
        first = items[0][0]
        out.append(Finding(kind=FindingKind.ACCUMULATED, severity=severity, node=first.id,
                           nodes=tuple(node.id for node, _, _ in items), message=message,
                           hint=hint, param=first.name or None))
    return out


def _bad(s: GradStats) -> str:
    parts = []
    if s.nan_count:
        parts.append(f"{s.nan_count} NaN")
    if s.inf_count:
        parts.append(f"{s.inf_count} Inf")
    return " and ".join(parts) + f" of {s.numel} values"


def _magnitudes(graph: Graph, h: Health, explained: set[int]) -> list[Finding]:
    """One finding per cause: a depth trend, gradients past an absolute limit, and isolated tiny
    gradients (a bias before BatchNorm apart), each listing the parameters it is about.
    Parameters another rule explains (float16 underflow, a softmax that cancels) are left out."""
    verdicts = [v for v in h.verdicts.values() if v.node not in explained]
    trend = [v for v in verdicts if v.reason is Reason.TREND]
    exploding = [v for v in verdicts if v.band is Band.EXPLODING and v.reason is not Reason.TREND]
    small = [v for v in verdicts if v.band is Band.VANISHING and v.reason is not Reason.TREND]
    # A bias before a batch norm is cancelled by it, however small its residual; past that,
    # a lost gradient (below any structural residual) is a WARNING wherever it sits.
    before_norm = [v for v in small if _cancelled_by_batch_norm(graph, v.node)]
    lost = [v for v in small if v.reason is Reason.LOST and v not in before_norm]
    small = [v for v in small if v not in lost]
    # Tiny next to healthy neighbours is structural (INFO); tiny like the rest of the model
    # (the median layer is past the limit too), or past the limit without being far below the
    # largest, is the loss or the whole model's scale (WARNING).
    everywhere = h.typical_rms <= h.vanishing_rms
    isolated = [v for v in small if not everywhere and v.rel <= h.thresholds.vanishing_ratio]
    absolute = [v for v in small if v not in isolated]
    before_norm = [v for v in isolated if v in before_norm]
    isolated = [v for v in isolated if v not in before_norm]
    out: list[Finding] = []
    if trend:
        out.append(_trend_finding(graph, h, trend))
    if exploding:
        out.append(_limit_finding(graph, h, exploding, Band.EXPLODING))
    if lost:
        out.append(_lost_finding(graph, h, lost))
    if absolute:
        finding = _limit_finding(graph, h, absolute, Band.VANISHING)
        loss = _small_loss(graph, h)
        if loss is not None:
            # Every gradient is tiny because the loss is: a nearly converged fit (or a loss
            # weighted down), not a network that loses its gradient on the way back.
            finding = dataclasses.replace(
                finding, severity=Severity.INFO,
                message=finding.message + f" The loss itself is {fmt_num(loss)}: gradients are "
                "small in proportion to it, as a nearly converged fit (or a down-weighted loss) "
                "gives.",
                hint="Nothing to fix if training has converged. If it has not, the loss is "
                "scaled down too far (a tiny weight on it, a mean over a huge dimension): "
                "scale it up, or with float16 use a GradScaler so such gradients do not "
                "underflow.")
        out.append(finding)
    if before_norm:
        out.append(_before_norm_finding(graph, before_norm))
    if isolated:
        out.append(_isolated_finding(graph, h, isolated))
    return out


def _through_time(graph: Graph, t: Thresholds, found: list[Finding]) -> list[Finding]:
    """One warning per recurrence whose gradient fades (or grows) through time, unless a
    finding of the same kind already names its recurrent weights (one cause, one finding: an
    RNN exploding through time is usually past the absolute limit too)."""
    return _chain_findings(graph, time_trends(graph, t), found, _time_finding)


def _chain_findings(graph: Graph, trends: list[ChainTrend], found: list[Finding],
                    make: Callable[[Graph, ChainTrend, FindingKind], Finding]) -> list[Finding]:
    """A finding per chain trend whose weights no finding of its kind (``found``, or one made
    here before it) names yet."""
    out: list[Finding] = []
    for trend in trends:
        kind = FindingKind.VANISHING if trend.band is Band.VANISHING else FindingKind.EXPLODING
        named = {n for f in found + out if f.kind == kind for n in (*f.nodes, f.node)}
        if not trend.shared or set(trend.shared) & named:
            continue
        out.append(make(graph, trend, kind))
    return out


def _time_finding(graph: Graph, trend: ChainTrend, kind: FindingKind) -> Finding:
    # time_trends keeps only chains whose every step has a finite, non-zero gradient
    first_rms, last_rms = (graph.nodes[i].grad.rms  # type: ignore[union-attr]
                           for i in (trend.steps[0], trend.steps[-1]))
    weight = trend.shared[0]
    names = _listed(graph, list(trend.shared), limit=3)
    steps = len(trend.steps)
    per_step = trend.growth ** (1.0 / max(1, steps - 1))
    where = f" in module {graph.nodes[weight].module}" if graph.nodes[weight].module else ""
    if kind is FindingKind.VANISHING:
        message = (
            f"Vanishing gradient through time{where}: over {steps} steps of the {trend.label} "
            f"recurrence that shares {names}, the gradient reaching the first step "
            f"(RMS {fmt_num(first_rms)}) is {fmt_num(trend.growth)} of the last step's "
            f"(RMS {fmt_num(last_rms)}): the early steps barely influence learning. The "
            "parameter gradients look healthy because the last steps dominate them."
        )
        hint = (
            f"Each step back multiplies the gradient by the recurrent weight and {trend.label}'s "
            f"slope (at most 1), here about {per_step:.2g}x per step. Use a gated cell "
            "(nn.LSTM, nn.GRU), an orthogonal init of the recurrent weight, shorter (truncated) "
            "sequences, or attention/skip connections over time."
        )
    else:
        message = (
            f"Exploding gradient through time{where}: over {steps} steps of the {trend.label} "
            f"recurrence that shares {names}, the gradient reaching the first step "
            f"(RMS {fmt_num(first_rms)}) is {fmt_num(trend.growth)}x the last step's "
            f"(RMS {fmt_num(last_rms)})."
        )
        hint = (
            f"Each step back multiplies the gradient by the recurrent weight, here about "
            f"{per_step:.2g}x per step: its largest singular value is above 1. Scale the "
            "recurrent weight down (orthogonal init), clip gradients "
            "(torch.nn.utils.clip_grad_norm_), or use shorter sequences."
        )
    return Finding(kind=kind, severity=Severity.WARNING, node=weight,
                   param=graph.nodes[weight].name, nodes=(*trend.shared, *trend.steps),
                   message=message, hint=hint)


def _through_depth(graph: Graph, t: Thresholds, found: list[Finding]) -> list[Finding]:
    """One warning per stack of layers whose activations' gradient grows (or fades) through
    depth, unless a finding of the same kind already names one of its weights (the parameter
    depth rule, or the absolute limit, said it first)."""
    return _chain_findings(graph, depth_trends(graph, t), found, _depth_finding)


def _depth_finding(graph: Graph, trend: ChainTrend, kind: FindingKind) -> Finding:
    # depth_trends keeps only chains whose every layer has a finite, non-zero gradient
    first, last = graph.nodes[trend.steps[0]], graph.nodes[trend.steps[-1]]
    first_rms, last_rms = first.grad.rms, last.grad.rms  # type: ignore[union-attr]
    layers = len(trend.steps)
    per_layer = trend.growth ** (1.0 / max(1, layers - 1))
    weights = [i for i in trend.shared if graph.nodes[i].grad is not None]
    spread = [graph.nodes[i].grad.rms for i in weights]  # type: ignore[union-attr]
    even = (f" The layers' parameter gradients do not follow it layer by layer (RMS "
            f"{fmt_num(min(spread))} to {fmt_num(max(spread))}): each weight's gradient is its "
            "input, grown or shrunk forward, times the gradient it receives, grown or shrunk "
            "backward.") if spread else ""
    params = [i for i in trend.shared if graph.nodes[i].kind == PARAM]
    place = ([f"after '{graph.nodes[params[0]].title}'"] if params else []) + (
        [f"created at {first.source}"] if first.source is not None else [])
    near = f" ({', '.join(place)})" if place else ""
    more, less = ("more", "x") if kind is FindingKind.EXPLODING else ("less", "")
    factor = per_layer if kind is FindingKind.EXPLODING else 1 / per_layer
    message = (
        f"{'Exploding' if kind is FindingKind.EXPLODING else 'Vanishing'} gradient through "
        f"{layers} {trend.label} layers: the gradient the first {trend.label}{near} "
        f"receives is {fmt_num(trend.growth)}{less} the last one's (RMS {fmt_num(first_rms)} "
        f"against {fmt_num(last_rms)}), about {factor:.2g}x {more} per layer toward the "
        f"input.{even}"
    )
    if kind is FindingKind.EXPLODING:
        hint = (
            f"Each layer multiplies the gradient (and, forward, the activations) by roughly its "
            f"weights' scale times {trend.label}'s slope, here {per_layer:.2g}x: the weights are "
            "initialised too large for this depth. Use the initialisation made for the "
            "activation (nn.init.kaiming_normal_ for ReLU, xavier with calculate_gain for "
            "tanh/sigmoid), add normalisation (LayerNorm/BatchNorm) or residual connections, and "
            "clip gradients (torch.nn.utils.clip_grad_norm_) while you fix it."
        )
    else:
        hint = _FADE_HINTS.get(trend.label, _FADE_HINTS[""]).format(
            count=layers, bound=fmt_num(0.25 ** layers), factor=f"{factor:.2g}")
    node = params[0] if params else first.id
    return Finding(kind=kind, severity=Severity.WARNING, node=node,
                   param=graph.nodes[node].name, nodes=(*trend.shared, *trend.steps),
                   message=message, hint=hint)


def _small_loss(graph: Graph, h: Health) -> float | None:
    """The loss, when the capture has one scalar loss and every gradient's smallness is in
    proportion to it (the typical layer RMS at least ``vanishing_ratio`` of the loss)."""
    values = graph.meta.get("root_values") or []
    if len(values) != 1 or values[0] is None:
        return None
    loss = abs(float(values[0]))
    if not (math.isfinite(loss) and loss > 0):
        return None
    return float(values[0]) if h.typical_rms >= loss * h.thresholds.vanishing_ratio else None


def _listed(graph: Graph, ids: list[int], *, limit: int = 6) -> str:
    """Parameter names for a message: the first ``limit``, then how many more."""
    names = [f"'{graph.nodes[i].title}'" for i in ids]
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _params_phrase(count: int) -> str:
    return f"{count} parameter" + ("s" if count != 1 else "")


def _forward_ordered(graph: Graph, ids) -> list[int]:
    """Parameter ids in forward order (input side first), as the depth rule reads them."""
    order = {n.id: i for i, n in enumerate(forward_params(graph))}
    return sorted(set(ids), key=lambda i: (order.get(i, len(order)), i))


def _path_activation(graph: Graph, start: tuple[int, ...]) -> tuple[str | None, int]:
    """The activation that is most common on the way from ``start`` to the loss, and how many
    times the gradient passes one."""
    seen, todo = set(start), list(start)
    while todo:
        for dst in graph.consumers(todo.pop()):
            if dst not in seen:
                seen.add(dst)
                todo.append(dst)
    counts: dict[str, int] = {}
    for nid in seen:
        label = graph.nodes[nid].label
        if graph.nodes[nid].kind == OP and label in _ACTIVATIONS:
            counts[label] = counts.get(label, 0) + 1
    if not counts:
        return None, 0
    label = max(counts, key=lambda k: (counts[k], k))
    return label, counts[label]


def _trend_finding(graph: Graph, h: Health, trend: list[Verdict]) -> Finding:
    vanishing = h.trend is Band.VANISHING
    ids = _forward_ordered(graph, (v.node for v in trend))
    pick = min if vanishing else max
    worst = pick(trend, key=lambda v: v.rms)
    ref = graph.nodes[h.reference] if h.reference is not None else graph.nodes[h.layers[-1]]
    ref_rms = ref.grad.rms if ref.grad is not None else 0.0
    first = pick(h.groups[0], key=lambda i: graph.nodes[i].grad.rms)  # type: ignore[union-attr]
    first_rms = graph.nodes[first].grad.rms  # type: ignore[union-attr]
    activation, count = _path_activation(graph, h.groups[0])
    through = f"{count} {activation} layers" if count >= 2 else f"{len(h.groups)} layers"
    steps = max(1, len(h.groups) - 1)
    per_layer = h.growth ** (-1.0 / steps)  # what one layer divides the gradient by, fitted
    ratio = h.thresholds.vanishing_ratio if vanishing else h.thresholds.exploding_ratio
    if vanishing:
        message = (
            f"Vanishing gradient through {through}: {_params_phrase(len(ids))} below "
            f"{fmt_num(ratio)} of the last layer's gradient; the first layer "
            f"('{graph.nodes[first].title}') has RMS {fmt_num(first_rms)} = "
            f"{fmt_num(first_rms / ref_rms)} of the last ('{ref.title}', RMS {fmt_num(ref_rms)}). "
            "The gradient fades layer by layer toward the input, so the early layers barely learn."
        )
        hint = _FADE_HINTS.get(activation or "", _FADE_HINTS[""]).format(
            count=count, bound=fmt_num(0.25 ** count), factor=f"{per_layer:.2g}")
    else:
        message = (
            f"Exploding gradient through {through}: {_params_phrase(len(ids))} above "
            f"{fmt_num(ratio)}x the last layer's gradient; the first layer "
            f"('{graph.nodes[first].title}') has RMS {fmt_num(first_rms)} = "
            f"{fmt_num(first_rms / ref_rms)}x the last ('{ref.title}', RMS {fmt_num(ref_rms)}). "
            "The gradient grows layer by layer toward the input."
        )
        hint = (
            f"Each layer multiplies the gradient by roughly its weights' scale, here about "
            f"{1 / per_layer:.2g}x per layer: weights initialised too large make it grow "
            "exponentially with depth. Use Kaiming/Xavier initialisation, normalisation layers, "
            "gradient clipping (torch.nn.utils.clip_grad_norm_) or a lower learning rate."
        )
    node = graph.nodes[worst.node]
    return Finding(kind=FindingKind.VANISHING if vanishing else FindingKind.EXPLODING,
                   severity=Severity.WARNING, node=node.id, param=node.name, nodes=tuple(ids),
                   message=message, hint=hint)


_LIMIT_HINTS = {
    Band.EXPLODING: "Gradients this large come from large activations (weights initialised too "
    "large, no normalisation: each layer multiplies the signal by its weights' scale) or a huge "
    "loss (a sum where a mean was meant, unscaled targets). Use Kaiming/Xavier initialisation, "
    "normalisation layers, gradient clipping (torch.nn.utils.clip_grad_norm_) or a lower "
    "learning rate.",
    Band.VANISHING: "When the whole model's gradients are this small, the loss is: multiplied "
    "by a tiny factor, averaged over very many elements, or already at its minimum. Check "
    "loss.item() and the scale of the targets; in float16, scale the loss with "
    "torch.amp.GradScaler.",
}


def _limit_finding(graph: Graph, h: Health, verdicts: list[Verdict], band: Band) -> Finding:
    """Parameters past an absolute (loss-scaled) limit, as one finding about the worst."""
    exploding = band is Band.EXPLODING
    scaled = f" (x{h.scale:g} loss scale)" if h.scale != 1.0 else ""
    ids = _forward_ordered(graph, (v.node for v in verdicts))
    worst = graph.nodes[(max if exploding else min)(verdicts, key=lambda v: v.rms).node]
    word, side = ("Exploding", "above") if exploding else ("Vanishing", "below")
    past = f"{side} the {fmt_num(h.exploding_rms if exploding else h.vanishing_rms)} " \
        f"threshold{scaled}"
    rms = fmt_num(worst.grad.rms)  # type: ignore[union-attr]
    if len(ids) == 1:
        message = f"{word} gradient at parameter {where(worst)}: RMS {rms}, {past}"
    else:
        message = f"{word} gradients at {len(ids)} parameters, {past}: the " \
            f"{'largest' if exploding else 'smallest'} is {where(worst)} with RMS {rms}"
    if exploding and len(ids) > 1:
        message += f"; also {_listed(graph, [i for i in ids if i != worst.id])}"
    elif not exploding:
        top = graph.nodes[h.top] if h.top is not None else worst
        message += f"; even the largest ('{top.title}') has RMS {fmt_num(h.top_rms)}, the " \
            f"median layer {fmt_num(h.typical_rms)}"
    return Finding(
        kind=FindingKind.EXPLODING if exploding else FindingKind.VANISHING,
        severity=Severity.WARNING, node=worst.id, param=worst.name, nodes=tuple(ids),
        message=message + ".", hint=_LIMIT_HINTS[band],
    )


def _lost_finding(graph: Graph, h: Health, verdicts: list[Verdict]) -> Finding:
    """Parameters whose gradient is below ``Health.lost_rms``, as one warning about the worst."""
    ids = _forward_ordered(graph, (v.node for v in verdicts))
    worst_v = min(verdicts, key=lambda v: v.rms)
    worst = graph.nodes[worst_v.node]
    factor = fmt_num(worst_v.rms / h.typical_rms)
    at = f"parameter {where(worst)}" if len(ids) == 1 else \
        f"{len(ids)} parameters ({_listed(graph, ids)}); the smallest is {where(worst)}"
    return Finding(
        kind=FindingKind.VANISHING, severity=Severity.WARNING, node=worst.id, param=worst.name,
        nodes=tuple(ids),
        message=f"Vanishing gradient at {at}: RMS {fmt_num(worst_v.rms)}, {factor} of the "
        f"model's typical layer (RMS {fmt_num(h.typical_rms)}), below "
        f"{fmt_num(h.lost_rms)}. That is smaller than any structural cause leaves (a "
        "layer-scale factor of 1e-6, the rounding residual of a gradient that cancels): this "
        "parameter gets, in effect, no gradient and will not learn.",
        hint=f"Something between it and the loss multiplies its contribution by about {factor}: "
        "a constant factor or loss weight far too small, a mask or gate that is almost closed, "
        "an activation saturated far into its flat part, or an input that is almost zero. Find "
        "that multiplication (the graph's path from this parameter to the loss) and rescale it; "
        "if the parameter is meant not to learn, freeze it (requires_grad_(False)).",
    )


def _isolated_finding(graph: Graph, h: Health, verdicts: list[Verdict]) -> Finding:
    ids = _forward_ordered(graph, (v.node for v in verdicts))
    worst_v = min(verdicts, key=lambda v: v.rms)
    worst = graph.nodes[worst_v.node]
    top = graph.nodes[h.top] if h.top is not None else worst
    largest = f"the largest parameter gradient ('{top.title}', RMS {fmt_num(h.top_rms)})"
    # "Near-zero" only where it is: next to a huge gradient, 0.05 is small but not near zero.
    what = "Near-zero gradient" if worst_v.rms <= h.vanishing_rms * 100 else "Gradient far below the rest"
    if len(ids) == 1:
        message = f"{what} at parameter {where(worst)}: RMS {fmt_num(worst_v.rms)}, " \
            f"{fmt_num(worst_v.rel)} of {largest}, while the model's typical layer has " \
            f"RMS {fmt_num(h.typical_rms)}."
    else:
        rel = max(v.rel for v in verdicts)
        message = f"{what} at {len(ids)} parameters, at most {fmt_num(rel)} of " \
            f"{largest}: {_listed(graph, ids)}; the smallest is '{worst.title}' with RMS " \
            f"{fmt_num(worst_v.rms)}."
    return Finding(
        kind=FindingKind.VANISHING, severity=Severity.INFO, node=worst.id, param=worst.name,
        nodes=tuple(ids), message=message,
        hint="Tiny next to healthy gradients is structural, not depth. Small by design? A "
        "branch scaled by a factor initialised tiny (a layer-scale gamma of 1e-6 as in "
        "ConvNeXt/CaiT, a zero-initialised gate or residual branch) gets a tiny gradient "
        "until that factor grows: nothing to fix. Or the parameter is cancelled downstream "
        "(a key bias before softmax adds the same score to every key). Otherwise check "
        "that its input is not almost zero.",
    )


def _through_shape_ops(graph: Graph, node_id: int, step) -> list[int]:
    """The nodes ``step`` (consumers or producers) reaches from ``node_id``, looking through
    ops that only move or reshape values (view, t, expand, ...)."""
    out, todo, seen = [], [node_id], {node_id}
    while todo:
        for nxt in step(todo.pop()):
            if nxt in seen:
                continue
            seen.add(nxt)
            if graph.nodes[nxt].kind == OP and graph.nodes[nxt].label in _SHAPE_OPS:
                todo.append(nxt)
            else:
                out.append(nxt)
    return out


def _cancelled_by_batch_norm(graph: Graph, param: int) -> bool:
    """A 1-D parameter added before a batch norm (a conv or linear bias): the norm subtracts
    each channel's batch mean, so the bias cancels and its gradient is ~0 by construction."""
    node = graph.nodes[param]
    if node.shape is None or len(node.shape) != 1:
        return False
    users = _through_shape_ops(graph, param, graph.consumers)
    if not users or any(graph.nodes[u].label not in _BIAS_USERS for u in users):
        return False
    return all(
        (norms := _through_shape_ops(graph, u, graph.consumers))
        and all(any(k in graph.nodes[m].label for k in _MEAN_SUBTRACTING) for m in norms)
        for u in users
    )


def _before_norm_finding(graph: Graph, verdicts: list[Verdict]) -> Finding:
    ids = _forward_ordered(graph, (v.node for v in verdicts))
    worst = max(verdicts, key=lambda v: v.rms)
    node = graph.nodes[worst.node]
    what = f"bias {where(node)}" if len(ids) == 1 else f"{len(ids)} biases ({_listed(graph, ids)})"
    return Finding(
        kind=FindingKind.STRUCTURAL, severity=Severity.INFO, node=node.id, param=node.name,
        nodes=tuple(ids),
        message=f"Near-zero gradient at {what}, added right before a batch norm: the norm "
        "subtracts each channel's batch mean, so a per-channel bias cancels out and its "
        f"gradient is zero up to rounding (RMS at most {fmt_num(worst.rms)}).",
        hint="Nothing to fix: the batch norm's own bias does this job. Layers followed by "
        "BatchNorm are usually built with bias=False (nn.Conv2d(..., bias=False)), which also "
        "saves the parameters.",
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


# Ops that add a bias: its gradient is their incoming gradient summed over the batch.
_BIAS_OPS = {"addmm", "add", "sub", "convolution", "linear"}


def _sums_to_zero(graph: Graph, param: Node) -> bool:
    """A bias (1-D, added by ``_BIAS_OPS``) whose all-zero gradient is a sum of non-zero ones:
    every op that adds it (through shape ops) received a gradient that is not all zeros."""
    if param.shape is None or len(param.shape) != 1:
        return False
    users, todo = [], list(graph.consumers(param.id))
    while todo:
        node = graph.nodes[todo.pop()]
        if node.label in _SHAPE_OPS:
            todo += graph.consumers(node.id)
        else:
            users.append(node)
    return bool(users) and all(
        u.label in _BIAS_OPS and u.grad is not None and u.grad.numel and u.grad.finite
        and u.grad.zero_frac < 1.0
        for u in users
    )


def _all_zero(g: GradStats | None) -> bool:
    return g is not None and g.numel > 0 and g.finite and g.zero_frac >= 1.0


def _zero_region(graph: Graph, start: int) -> set[int]:
    """The nodes below ``start`` that got nothing but its zeros: producers reached along
    all-zero edges whose whole gradient is zeros (no other consumer gave them anything)."""
    region: set[int] = set()
    todo = [start]
    while todo:
        for e in graph.in_edges(todo.pop()):
            if e.src not in region and _all_zero(e.grad) and _all_zero(graph.nodes[e.src].grad):
                region.add(e.src)
                todo.append(e.src)
    return region


def _own_zeros(graph: Graph, node: Node, edge: Edge, sent: GradStats) -> float:
    """The share of ``node``'s units that received a gradient and sent back zero.

    An elementwise op (its input has the shape of its output) turns every zero it receives into
    a zero it sends: those are not its own (a ReLU after a max-pool receives 99% zeros).
    """
    got = node.grad
    assert got is not None
    if got.zero_frac <= 0.0 or graph.edge_shape(edge) != node.shape:
        return sent.zero_frac
    return min(1.0, max(0.0, (sent.zero_frac - got.zero_frac) / (1.0 - got.zero_frac)))


def _fed_by(graph: Graph, node: Node) -> list[int]:
    """Parameters with all-zero gradients that share an op with ``node``'s output: the weight
    of the layer after a ReLU whose every unit is off gets a zero input, so a zero gradient."""
    out = []
    for user in _through_shape_ops(graph, node.id, graph.consumers):
        for src in _through_shape_ops(graph, user, graph.producers):
            p = graph.nodes[src]
            if p.kind == PARAM and _all_zero(p.grad):
                out.append(src)
    return out


def _dead(graph: Graph, t: Thresholds, idle: set[int], explained: set[int], *,
          after_nonfinite: bool = False) -> list[Finding]:
    """Ops that add zeros of their own, and the parameters those zeros starve; then parameters
    with an all-zero gradient that no dead op explains, as one finding (an INFO when the same
    pass is non-finite: ``after_nonfinite``; the NaN is the cause to fix first)."""
    out = []
    starved_by_op: set[int] = set()
    for node in graph.nodes:
        if node.id in idle or node.id in explained:
            continue  # nothing flowed, or another rule says why it is zero
        got = node.grad
        if node.kind != OP or got is None or not got.finite or not got.numel:
            continue
        if got.zero_frac >= 1.0:
            continue  # nothing came in: the dead unit is further up
        sent = [(e, e.grad) for e in graph.in_edges(node.id) if e.grad is not None]
        sent = [(e, s) for e, s in sent if s.numel]  # an empty input holds no units
        if not sent or not all(s.finite for _, s in sent):
            continue
        gating = node.label in _GATING_OPS
        own = 1.0
        if gating:
            own = min(_own_zeros(graph, node, e, s) for e, s in sent)
            if own < t.dead_frac:
                continue
        elif not any(s.zero_frac >= 1.0 for _, s in sent):
            continue
        region = _zero_region(graph, node.id)
        if not gating and _times_constant_zero(node):
            # x * 0 on purpose: the idiom that keeps a loss term in the graph when it has
            # nothing to learn from this batch (torchvision's mask loss without a positive).
            starved = _forward_ordered(graph, {i for i in region if graph.nodes[i].kind == PARAM}
                                       - explained)
            starved_by_op.update(starved)
            if starved:
                out.append(_times_zero_finding(graph, node, starved))
            continue
        if not gating and not any(graph.nodes[i].kind != OP for i in region):
            # A product with a zero factor (a zero initial state h0 or c0): the zeros are
            # absorbed, everything below still gets a gradient along its other paths.
            continue
        starved = [i for i in region if graph.nodes[i].kind == PARAM]
        if not gating and any(s.zero_frac < 1.0 for _, s in sent):
            # Zeros toward one operand only: the other one is zero. When that is a parameter
            # that learns (a zero-initialised head), the zeros last one step.
            weight = _learning_operand(graph, sent)
            if weight is not None:
                starved = _forward_ordered(graph, set(starved) - explained)
                starved_by_op.update(starved)
                out.append(_zero_weight_finding(graph, node, graph.nodes[weight], starved))
            continue
        if node.label in _ZERO_OUTPUT and own >= 1.0 and got.zero_frac <= 0.0:
            starved += _fed_by(graph, node)
        starved = _forward_ordered(graph, set(starved) - explained)
        starved_by_op.update(starved)
        out.append(_dead_finding(graph, node, got, sent, own, starved))
    zero = [
        n.id for n in graph.nodes
        if n.kind == PARAM and _all_zero(n.grad)
        and n.id not in idle and n.id not in explained and n.id not in starved_by_op
    ]
    cancelled = [i for i in zero if _sums_to_zero(graph, graph.nodes[i])]
    zero = [i for i in zero if i not in cancelled]
    if cancelled:
        cancelled = _forward_ordered(graph, cancelled)
        first = graph.nodes[cancelled[0]]
        what = f"Parameter {where(first)}" if len(cancelled) == 1 else \
            f"{len(cancelled)} parameters ({_listed(graph, cancelled)})"
        out.append(Finding(
            kind=FindingKind.STRUCTURAL, severity=Severity.INFO, node=first.id,
            param=first.name, nodes=tuple(cancelled),
            message=f"{what} got an exactly-zero gradient although the op using it received a "
            "non-zero one: its gradient sums to zero over the batch, so the loss does not "
            "depend on it.",
            hint="A bias that cancels, as in a difference f(x1) - f(x2) or before a "
            "normalisation, has no effect on the loss. Nothing is broken; remove it if it is "
            "not meant to be there.",
        ))
    if zero:
        zero = _forward_ordered(graph, zero)
        first = graph.nodes[zero[0]]
        what = f"Parameter {where(first)} received" if len(zero) == 1 else \
            f"{len(zero)} parameters ({_listed(graph, zero)}) received"
        message = f"{what} an all-zero gradient: {'it' if len(zero) == 1 else 'they'} will " \
            "not change this step."
        hint = "Look at the op that consumes it for a dead unit (a ReLU that never fires, a " \
            "mask of zeros), or at its input: a weight's gradient is its input times the " \
            "output's gradient, so an all-zero input gives it none."
        if after_nonfinite:
            # No op here adds zeros of its own: the zeros come from the values. In a pass that
            # is already non-finite those are most likely NaN, and a mask or comparison built
            # on NaN (x > 0 is False) is all off.
            message += " This pass also has NaN/Inf values (see that finding): the zeros are " \
                "likely its consequence, a mask or comparison built on NaN activations is " \
                "all off."
            hint = "Fix the NaN/Inf first, then look again: " + hint[0].lower() + hint[1:]
        out.append(Finding(
            kind=FindingKind.DEAD,
            severity=Severity.INFO if after_nonfinite else Severity.WARNING,
            node=first.id, param=first.name, nodes=tuple(zero), message=message, hint=hint,
        ))
    return out


def _times_constant_zero(node: Node) -> bool:
    """Whether ``node`` multiplies by a constant 0 written in the code (``x * 0``): autograd
    saves the number as a 0-dim constant, which the capture keeps with its value."""
    return node.label == "mul" and any(
        m.shape == () and m.value is not None and m.value in ("0", "0.0", "-0.0", "False")
        for m in node.saved)


def _times_zero_finding(graph: Graph, node: Node, starved: list[int]) -> Finding:
    first = graph.nodes[starved[0]]
    what = f"parameter {where(first)}" if len(starved) == 1 else \
        f"{len(starved)} parameters ({_listed(graph, starved)})"
    return Finding(
        kind=FindingKind.STRUCTURAL, severity=Severity.INFO, node=node.id, param=first.name,
        nodes=(node.id, *starved),
        message=f"{where(node)} multiplies by the constant 0, so {what} "
        f"{'gets' if len(starved) == 1 else 'get'} an exactly-zero gradient through it this "
        "step.",
        hint="Written on purpose, x * 0 keeps a loss term in the graph when it has nothing to "
        "learn from (a detection head with no positive region in the batch): nothing is "
        "broken. If it was not meant, the 0 is a weight or a mask set to zero by mistake.",
    )


def _learning_operand(graph: Graph, sent: list[tuple[Edge, GradStats]]) -> int | None:
    """A parameter operand (seen through shape ops such as ``t``) that gets a gradient."""
    for e, s in sent:
        if s.zero_frac >= 1.0 or _ADDED_INPUT.get(graph.nodes[e.dst].label) == e.input_nr:
            continue
        for src in (e.src, *_through_shape_ops(graph, e.src, graph.producers)):
            p = graph.nodes[src]
            if p.kind == PARAM and p.grad is not None and not _all_zero(p.grad):
                return src
    return None


def _zero_weight_finding(graph: Graph, node: Node, weight: Node, starved: list[int]) -> Finding:
    rms = fmt_num(weight.grad.rms) if weight.grad is not None else "?"
    below = f": {_params_phrase(len(starved))} below it get no gradient this step " \
        f"({_listed(graph, starved)})" if starved else ""
    return Finding(
        kind=FindingKind.STRUCTURAL, severity=Severity.INFO, node=node.id, param=weight.name,
        nodes=(node.id, weight.id, *starved),
        message=f"{where(node)} sends back an all-zero gradient toward its input because the "
        f"parameter it multiplies, '{weight.title}', is all zeros (zero-initialised?){below}. "
        f"'{weight.title}' itself gets a gradient (RMS {rms}), so after the next update the "
        "gradient flows again.",
        hint="Nothing to fix when the zero init is deliberate (a zero-initialised head or "
        "residual branch, as in Fixup, ReZero or a diffusion model's last layer). If it is not, "
        "initialise it (nn.init.kaiming_uniform_, nn.init.xavier_uniform_) or look for code "
        "that zeroes it.",
    )


def _dead_finding(graph: Graph, node: Node, got: GradStats, sent: list[tuple[Edge, GradStats]],
                  own: float, starved: list[int]) -> Finding:
    zeros = max(s.zero_frac for _, s in sent)
    if got.zero_frac <= 0.0:
        received = f"a non-zero gradient and sent back {_share(zeros)} exact zeros"
    else:  # the zeros it passed on are not its own: count the units that got something
        received = f"a gradient that is non-zero at {_share(1 - got.zero_frac)} of its units, " \
            f"and {_share(own)} of those sent back zero"
    message = f"Dead units at {where(node)}: it received {received}, so nothing below it " \
        "learns from this path."
    if starved:
        message += f" {_params_phrase(len(starved)).capitalize()} get no gradient because of " \
            f"it: {_listed(graph, starved)}."
    hint = _DEAD_HINTS.get(node.label) or _DEAD_HINTS.get(_DEAD_FAMILY.get(node.label, "")) or (
        f"{node.label}'s local derivative is zero everywhere for the inputs it saw, so it passes "
        "no gradient back: look at the values it saved for backward (in the details), and at "
        "what produced them."
    )
    return Finding(kind=FindingKind.DEAD, severity=Severity.WARNING, node=node.id,
                   nodes=(node.id, *starved), message=message, hint=hint)


def _share(x: float) -> str:
    """A share as a percentage: whole numbers at the ends, one decimal between."""
    return f"{x:.0%}" if x in (0.0, 1.0) else f"{min(max(x, 0.001), 0.999):.1%}"


def _dominated(graph: Graph, start: int) -> set[int]:
    """The nodes whose every way to the loss passes through ``start`` (``start`` excluded)."""
    s = graph.nodes[start]
    if s.exec_order is None:
        return set()
    inside = {start}
    for n in graph.backward_order():  # consumers run before their producers
        if n.exec_order is None or n.exec_order <= s.exec_order:
            continue
        users = graph.consumers(n.id)
        if users and all(u in inside for u in users):
            inside.add(n.id)
    inside.discard(start)
    return inside


def _cancelling_softmax(graph: Graph, idle: set[int]) -> list[Finding]:
    """A softmax that receives the same gradient at every element (``softmax(z).sum()``): its
    outputs always sum to 1, so its input gradient is exactly zero by mathematics, and what
    reaches the parameters below it is rounding."""
    out = []
    for node in graph.nodes:
        g = node.grad
        if node.kind != OP or node.label not in _SOFTMAX or node.id in idle:
            continue
        if g is None or not g.finite or g.numel < 2 or g.min != g.max or g.max == 0.0:
            continue
        below = _dominated(graph, node.id)
        params = _forward_ordered(graph, (i for i in below if graph.nodes[i].kind == PARAM))
        sent = [e.grad for e in graph.in_edges(node.id) if e.grad is not None]
        noise = max((s.rms for s in sent if s.finite), default=0.0)
        learn = f" {_params_phrase(len(params)).capitalize()} learn nothing through it: " \
            f"{_listed(graph, params)}." if params else ""
        out.append(Finding(
            kind=FindingKind.STRUCTURAL, severity=Severity.INFO, node=node.id,
            nodes=(node.id, *params),
            message=f"{where(node)} receives the same gradient ({fmt_num(g.max)}) at every "
            "element: its outputs are only summed, and softmax outputs always sum to 1, so the "
            "gradient it sends back is zero by mathematics (what it sent, RMS "
            f"{fmt_num(noise)}, is rounding).{learn}",
            hint="Nothing is wrong in backward: a loss that adds up softmax probabilities does "
            "not depend on the logits. If this term should train them, weight the "
            "probabilities by something that varies (a target, a cost), or use cross_entropy "
            "on the logits.",
        ))
    return out


_SATURATING = {"softmax", "sigmoid", "tanh"}
# Saturated: the op's derivative is below this on average (sent over received RMS). A property of
# the op's inputs, not of the user's vanishing_ratio (a strict ratio of 0.5 must not call every
# sigmoid, whose derivative is at most 0.25, saturated).
_SATURATED = 1e-4
_SATURATION_HINTS = {
    "softmax": "softmax(z) is one-hot when its inputs differ by tens: attention scores without "
    "the 1/sqrt(d) scale, logits multiplied up, a temperature far below 1. Scale the scores "
    "down (q @ k.T / sqrt(d)), normalise what feeds them (LayerNorm, QK-norm), or raise the "
    "temperature.",
    "sigmoid": "sigmoid's derivative s(x)(1 - s(x)) is below 1e-4 once |x| > 9: its "
    "pre-activations are far too large (weights or inputs too large, no normalisation). "
    "Initialise smaller (Xavier), normalise the inputs or the layer before it (LayerNorm), or "
    "compute a loss on the logits (binary_cross_entropy_with_logits) instead of on sigmoid.",
    "tanh": "tanh's derivative 1 - tanh(x)^2 is below 1e-4 once |x| > 5: its pre-activations "
    "are far too large (weights or inputs too large, no normalisation). Initialise smaller "
    "(Xavier with the tanh gain), normalise the inputs or the layer before it (LayerNorm), or "
    "clip what feeds it.",
}


def _saturated(graph: Graph, h: Health, idle: set[int], explained: set[int]) -> list[Finding]:
    """A softmax, sigmoid or tanh that sends back less than ``_SATURATED`` of the gradient it
    receives (its derivative is ~0 on almost every unit: it saturates), when parameters whose
    only way to the loss is through it get a vanishing gradient because of it.

    All-zero gradients are left to the dead-unit rule, a softmax whose gradient cancels to its
    own rule (``explained``); a converged sigmoid head is no finding, since nothing behind it
    is vanishing next to the rest of the model."""
    out = []
    for node in graph.nodes:
        got = node.grad
        if node.kind != OP or node.label not in _SATURATING or node.id in idle | explained:
            continue
        if got is None or not got.finite or not got.rms > 0:
            continue
        sent = [e.grad for e in graph.in_edges(node.id) if e.grad is not None and e.grad.numel]
        if not sent or not all(g.finite for g in sent):
            continue
        back = max(g.rms for g in sent)
        if not 0 < back < got.rms * _SATURATED:
            continue
        below = _dominated(graph, node.id)
        starved = _forward_ordered(graph, (
            i for i in below if graph.nodes[i].kind == PARAM and i not in explained
            and (v := h.verdicts.get(i)) is not None and v.band is Band.VANISHING))
        if not starved:
            continue
        worst = min((graph.nodes[i] for i in starved), key=lambda n: n.grad.rms)  # type: ignore[union-attr]
        out.append(Finding(
            kind=FindingKind.VANISHING, severity=Severity.WARNING, node=node.id,
            nodes=(node.id, *starved),
            message=f"Saturated {node.label} at {where(node)}: it sends back "
            f"{fmt_num(back / got.rms)} of the gradient it receives (RMS {fmt_num(back)} of "
            f"{fmt_num(got.rms)}), so its derivative is ~0 on almost every unit. "
            f"{_params_phrase(len(starved)).capitalize()} reached only through it get a "
            f"vanishing gradient: {_listed(graph, starved)}; the smallest is '{worst.title}' "
            f"with RMS {fmt_num(worst.grad.rms)}, while the largest parameter gradient has "  # type: ignore[union-attr]
            f"RMS {fmt_num(h.top_rms)}.",
            hint=_SATURATION_HINTS[node.label],
        ))
    return out


def _half_edge(graph: Graph, e: Edge) -> bool:
    """Whether the gradient on ``e`` is float16: the dtype of the producer's output it is for."""
    outs = graph.nodes[e.src].outputs
    return e.output_nr < len(outs) and outs[e.output_nr].dtype == "float16"


def _underflow(graph: Graph, t: Thresholds, idle: set[int]) -> list[Finding]:
    """float16 gradients too small for float16, with no loss scale: they lose precision below
    its smallest normal (6.1e-5) and flush to zero below 6e-8, which looks like dead units.

    Zeros are born where a node received a non-zero gradient too small for float16 and sent
    more zeros than it received along a float16 edge: a float16 op, or the cast of a float16
    output to float32 (``out.float()`` under autocast) whose gradient is cast back.
    """
    if graph.meta.get("loss_scale"):
        return []  # a GradScaler keeps them in range; its own inf/NaN check skips bad steps
    tiny = [
        n for n in graph.nodes
        if n.dtype == "float16" and n.id not in idle and n.grad is not None and n.grad.finite
        and 0.0 < n.grad.rms < _FP16_MIN_NORMAL
    ]
    births: dict[int, float] = {}  # node -> the zero share it added
    for e in graph.edges:
        got, sent = graph.nodes[e.dst].grad, e.grad
        if got is None or sent is None or not (got.finite and sent.finite and sent.numel):
            continue
        if e.dst in idle or not 0.0 < got.rms < _FP16_MIN_NORMAL or not _half_edge(graph, e):
            continue
        if sent.zero_frac > got.zero_frac:
            births[e.dst] = max(births.get(e.dst, 0.0), sent.zero_frac - got.zero_frac)
    if not tiny and not births:
        return []
    region: set[int] = set()
    for nid in births:
        region |= _zero_region(graph, nid)
    zeroed = {i for i in region if graph.nodes[i].kind == PARAM}
    zeroed |= {n.id for n in graph.nodes
               if n.kind == PARAM and n.dtype == "float16" and _all_zero(n.grad)}
    small = {n.id for n in tiny if n.kind == PARAM} - zeroed
    params = _forward_ordered(graph, zeroed | small)
    if births:
        # The birth that zeroed the most, nearest the loss among equals.
        at = graph.nodes[max(births, key=lambda i: (births[i], -(graph.nodes[i].exec_order or 0)))]
        got = at.grad
        assert got is not None
        sent_zero = max(e.grad.zero_frac for e in graph.in_edges(at.id)  # type: ignore[union-attr]
                        if e.grad is not None and e.grad.numel and _half_edge(graph, e))
        where_ = f"at {where(at)} the gradient has RMS {fmt_num(got.rms)}, below float16's " \
            f"smallest normal {fmt_num(_FP16_MIN_NORMAL)}, and it sends back " \
            f"{_share(sent_zero)} zeros"
    else:
        at = min(tiny, key=lambda n: n.grad.rms)  # type: ignore[union-attr]
        where_ = f"{len(tiny)} float16 gradients are below float16's smallest normal " \
            f"{fmt_num(_FP16_MIN_NORMAL)}, the smallest at {where(at)} (RMS " \
            f"{fmt_num(at.grad.rms)})"  # type: ignore[union-attr]
    parts = [f"{_params_phrase(len(zeroed))} get an all-zero gradient"] if zeroed else []
    if small:
        parts.append(f"{len(small)} {'more ' if zeroed else ''}a subnormal one")
    tail = f"; {' and '.join(parts)}: {_listed(graph, params)}" if parts else ""
    return [Finding(
        kind=FindingKind.UNDERFLOW, severity=Severity.WARNING, node=at.id,
        param=at.name or None, nodes=(at.id, *sorted(births), *params),
        message=f"float16 gradients underflow to zero without loss scaling: {where_}{tail}.",
        hint="float16 holds no magnitude below 6e-8 and loses precision below 6.1e-5, so small "
        "gradients flush to zero (they look like dead units). Use torch.amp.GradScaler "
        "(scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()), or train "
        "in bfloat16, which has float32's range.",
    )]


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
                    message=f"Parameter '{p.name}' {fmt_shape(p.shape)} requires grad but the "
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
                message=f"{fmt_count(len(frozen), 'frozen parameter')} (requires_grad=False): {shown}.",
                hint="Frozen on purpose (fine-tuning)? Nothing to do. Otherwise set "
                "requires_grad=True.",
            )
        )
    return out


def mode_note(modes: dict[str, str]) -> str | None:
    """What to say when a capture (made to train: a backward follows) sees dropout or batch-norm
    modules in eval mode (``modes``: module path -> ``"train"`` | ``"eval"``, as a capture's
    ``meta["modes"]`` keeps them); ``None`` when every one trains."""
    evals = [p or "(root)" for p, m in modes.items() if m == "eval"]
    if not evals:
        return None
    listed = f"{', '.join(evals[:3])}{', ...' if len(evals) > 3 else ''}"
    if len(evals) == len(modes):
        return (
            f"the model is in eval mode while you train it ({listed} in eval): dropout drops "
            "nothing and batch norm uses its running statistics and stops updating them, so "
            "training sees a different network than you think. Call model.train() before the "
            "training step (model.eval() is for evaluation, usually inside torch.no_grad())."
        )
    return (
        f"{listed} in eval mode while the rest trains: fine if you froze them on purpose (a "
        "fine-tuned batch norm); otherwise call model.train()."
    )


def _eval_modes(graph: Graph) -> list[Finding]:
    """One information finding when a trained pass runs dropout / batch norm in eval mode."""
    modes = graph.meta.get("modes") or {}
    note = mode_note(modes) if isinstance(modes, dict) else None
    if note is None:
        return []
    return [Finding(
        kind=FindingKind.EVAL_MODE, severity=Severity.INFO, node=None,
        message=note[0].upper() + note[1:],
        hint="model.train() before each training step, model.eval() (with torch.no_grad()) "
        "before evaluating; a module frozen on purpose can stay in eval: "
        "model.train(); model.bn.eval().",
    )]


def _opaque(graph: Graph) -> list[Finding]:
    out = []
    for node in graph.nodes:
        if node.opaque is None:
            continue
        inside = [p.name for p in graph.params if p.status is ParamStatus.OPAQUE and p.node == node.id]
        params = f" It uses {fmt_count(len(inside), 'parameter')}: {', '.join(inside[:5])}." if inside else ""
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
