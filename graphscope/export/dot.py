"""Turns a captured graph into Graphviz DOT text. Needs no Graphviz engine.

This docstring is the legend; the picture carries the same one (``legend=False`` drops it).

Shapes
    rounded box      an op (a ``grad_fn``) with its short name (``addmm``, ``sigmoid``); the full
                     autograd class is in the tooltip
    cylinder         a parameter, with its qualified name; tied weights list every name
    ellipse          another leaf tensor that requires grad (an input; or a weight, when the
                     graph was drawn from a tensor without ``model=`` to name the parameters)
    double octagon   an output of the capture (usually the loss)
    3-D box          a group: a module's ops (``encoder.layers``), a chain of ops
                     (``12 ops: add, mul, ...``), or what the node budget left out
    tab              an opaque region (checkpoint, compiled code) the capture cannot see into

Fill colour: the gradient's band (``graphscope.health``, the judgement the findings use), from
``graphscope.formatting.magnitude_colour``; the limits move with a GradScaler loss scale
    blue             vanishing (RMS at or below ``Thresholds.vanishing_rms``, or a parameter far
                     below the largest parameter gradient)
    teal to orange   healthy, from small to large
    red              exploding (RMS at or above ``Thresholds.exploding_rms``, or a parameter in
                     a growth through depth)
    magenta          NaN or Inf in the gradient
    grey             no gradient recorded, or an empty one (0 elements: nothing flowed)
    white            structure only: no backward pass has run
    A group is filled like its worst member (NaN, then exploding, then vanishing, then largest).

Borders and marks
    thick magenta border and "‼"   the NaN/Inf origin: where non-finite gradients start
    red / orange / blue border     a finding of severity error / warning / info (tooltip says what)
    dashed, grey                   backward did not run this node (pruned, or not on the loss path)
    "x12", or a frame "x12"        stands for 12 identical numbered blocks; the first is drawn

Edges run forward, producer to consumer
    label            the tensor's shape; "out 1" names an output of a multi-output op; "in 1"
                     tells parallel edges apart (``x * x``); "x5" counts edges merged between groups
    coloured, bold   the gradient sent back along the edge is vanishing (blue), exploding (red)
                     or NaN/Inf (magenta); grey otherwise
    dashed           "next copy": from one copy of a folded block into the next

LSTM cells written as ops (``nn.LSTMCell`` on the CPU, or by hand; ``graphscope.export.recurrent``)
    frame "step 3 (LSTMCell cell)"   one time step: its gates, cell update and the ops feeding them;
                     the frame says the gradient RMS at c_t, the part sent back along the cell
                     state to c_{t-1} and the part that goes into the gates
    "forget gate f σ"  a gate by its role (input i, forget f, candidate g, output o), found from
                     the graph's shape, not from names or chunk order
    thick brown edges  the cell state path, c_{t-1} -> f*c -> c_t (the band colour wins when the
                     gradient on it is vanishing, exploding or NaN)

Values (small tensors, micrograd style)
    "data 2.0 | grad -3.0"   a tensor of at most ``capture(values=16)`` elements shows its actual
                     forward value (when the capture knew it: a leaf, the output, a tensor an op
                     saved) and its gradient; a vector or matrix shows them on two lines
    "y = add"        an op whose output your code named ``y`` (a leaf shows just its name)

Every node and edge has a tooltip with the full gradient statistics, dtype, device, what the op
saved for backward (tensors by shape and dtype, values as written: ``ignore_index = -100``),
module and source line (hover over it in a browser or in Jupyter).

Imports ``graphscope.model``, ``graphscope.formatting`` and this package's ``collapse``,
``options`` and ``recurrent``; never graphviz, torch or textual.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from dataclasses import dataclass
from typing import Iterable

from graphscope.diagnostics import rediagnose
from graphscope.export.collapse import CHAIN, MODULE, SINGLE, Box, Link, View, build_view
from graphscope.export.options import RenderOptions
from graphscope.export.recurrent import (
    CANDIDATE,
    CELL,
    CELL_TANH,
    FORGET_GATE,
    FORGET_MUL,
    HIDDEN,
    INPUT_GATE,
    INPUT_MUL,
    OUTPUT_GATE,
    LstmStep,
    find_lstm_steps,
)
from graphscope.formatting import (
    BAND_COLOURS,
    fmt_count,
    fmt_meta,
    fmt_module,
    fmt_num,
    fmt_saved,
    fmt_shape,
    fmt_stats,
    magnitude_colour,
    rms_colour,
)
from graphscope.health import Band, Health
from graphscope.model import (
    LEAF,
    OP,
    PARAM,
    Finding,
    FindingKind,
    GradStats,
    Graph,
    Node,
    ParamStatus,
    Severity,
    op_label,
)

ORIGIN_KIND = FindingKind.NONFINITE_ORIGIN
ORIGIN_MARK = "‼"  # in the fonts graphviz-pure embeds, unlike the warning sign
ORIGIN_COLOUR = BAND_COLOURS[Band.NONFINITE]
SEVERITY_COLOURS = {Severity.ERROR: "#c62828", Severity.WARNING: "#ef6c00", Severity.INFO: "#1e88e5"}
NOT_RUN = {"fillcolor": "#f2f2f2", "color": "#9e9e9e", "fontcolor": "#757575"}
SHAPES = {
    OP: "box",
    PARAM: "cylinder",
    LEAF: "ellipse",
    "root": "doubleoctagon",
    "group": "box3d",
    "opaque": "tab",
}
# Edge labels become layout nodes in dot; past this many boxes they are placed as cheaper
# external labels instead (a 1,000-node graph: 15 s with labels, about 1 s with xlabels).
_XLABEL_ABOVE = 150
# Whole recurrent layers (all gates, all time steps) that autograd records as one node.
FUSED_RNN_OPS = frozenset({"MkldnnRnnLayerBackward0", "CudnnRnnBackward0", "MiopenRnnBackward0",
                           "ThnnFusedLstmCellBackward0", "ThnnFusedGruCellBackward0"})
# The cell state path of an LSTM step: a colour no gradient band uses.
CELL_COLOUR = "#8d5524"
_STEP_FRAME = {"color": "#a1887f", "bgcolor": "#fbf8f4"}
_BAND_RANK = {Band.NONE: 0, Band.HEALTHY: 1, Band.VANISHING: 2, Band.EXPLODING: 3, Band.NONFINITE: 4}


def to_dot(graph: Graph, *, options: RenderOptions | None = None) -> str:
    """Draw ``graph`` as Graphviz DOT text (the legend is this module's docstring).

    Args:
        graph: A capture (``graphscope.capture(loss)`` or ``graphscope.load(path)``).
        options: Budget, grouping, shapes on edges, legend, direction; defaults when ``None``.

    Returns:
        DOT source for ``dot`` or ``graphviz-pure``. Node ``n<id>`` is graph node ``id``;
        ``g<k>`` nodes are groups.

    Example:
        >>> text = to_dot(graph, options=RenderOptions(legend=False))  # doctest: +SKIP
        >>> text.startswith("digraph")  # doctest: +SKIP
        True
    """
    opts = options or RenderOptions()
    view = build_view(graph, max_nodes=opts.max_nodes, depth=opts.depth, fold_repeats=opts.fold_repeats)
    return view_to_dot(graph, view, options=opts)


def _how_to_see_more(graph: Graph) -> str:
    """The caption's hint when the picture lacks what a capture would give it: gradients (drawn
    from a tensor, never captured) and parameter names (no ``model=``)."""
    unnamed = any(n.kind == LEAF for n in graph.nodes) and not any(n.kind == PARAM for n in graph.nodes)
    hints = []
    if unnamed:
        hints.append("pass model=model to name the weights")
    fused = sorted({n.op for n in graph.nodes if n.op in FUSED_RNN_OPS})
    if fused:
        hints.append(f"{', '.join(fused)} is a fused recurrent layer: its input/forget/output "
                     "gates, cell state and every time step run inside this one node, out of "
                     "sight;\nto see them, write the loop with nn.LSTMCell (on the CPU) or by hand")
    if graph.passes == 0:
        hints.append("for gradients: graph = graphscope.capture(loss, model=model) before "
                     "loss.backward(), then render(graph)")
    return "; ".join(hints)


def view_to_dot(graph: Graph, view: View, *, options: RenderOptions) -> str:
    """DOT text for an already reduced ``view`` of ``graph`` (see ``collapse.build_view``)."""
    # Other thresholds than the capture's: colours and finding marks both follow them.
    graph = rediagnose(graph, thresholds=options.thresholds)
    ctx = _Context.of(graph, view, options)
    title = graph.meta.get("title")
    caption = "\n".join(x for x in (title, graph.summary(), view.note, _how_to_see_more(graph),
                                     _lstm_note(ctx), textwrap.fill(graph.meta.get("mode_note") or "", 110)) if x)
    lines = [
        "digraph graphscope {",
        f"  graph {_attrs(rankdir=options.rankdir, fontname='Helvetica', fontsize=10, nodesep=0.3, ranksep=0.4, labelloc='b', label=caption, tooltip='graphscope', newrank='true')}",
        "  node [fontname=\"Helvetica\" fontsize=11 shape=box style=\"rounded,filled\" "
        "height=0.3 margin=\"0.12,0.04\" fillcolor=\"#ffffff\"]",
        "  edge [fontname=\"Helvetica\" fontsize=9 color=\"#757575\" fontcolor=\"#424242\" arrowsize=0.6]",
    ]
    framed: dict[object, list[Box]] = {}
    stepped: dict[int, list[Box]] = {}
    for box in view.boxes:
        if box.repeat is not None and ctx.repeat_boxes[box.repeat] > 1:
            framed.setdefault(box.repeat, []).append(box)
        elif box.kind == SINGLE and ctx.step_of.get(box.node) in ctx.framed:  # type: ignore[arg-type]
            stepped.setdefault(ctx.step_of[box.node], []).append(box)  # type: ignore[index]
        else:
            lines.append(f"  {box.name} {_attrs(**_box_attrs(graph, box, ctx))}")
    for k, (repeat, boxes) in enumerate(framed.items()):
        lines.append(f"  subgraph cluster_repeat{k} {{")
        label = f"{repeat.span}  x{repeat.count} identical blocks (first drawn)"  # type: ignore[attr-defined]
        lines.append(f'    label={_q(label)}; labelloc="t"; style="dashed,rounded"; color="#616161"; fontsize=10;')
        lines.extend(f"    {b.name} {_attrs(**_box_attrs(graph, b, ctx))}" for b in boxes)
        lines.append("  }")
    for k in sorted(stepped):
        lines.extend(_step_cluster(graph, k, stepped[k], ctx))
    lines.extend(_step_order(graph, ctx))
    for link in view.links:
        lines.append(f"  {link.src} -> {link.dst} {_attrs(**_link_attrs(graph, link, ctx))}")
    lines.extend(_unreached(graph, ctx))
    if options.legend:
        lines.extend(_legend(graph, ctx))
    lines.append("}")
    return "\n".join(lines) + "\n"


@dataclass
class _Context:
    boxes: dict[str, Box]
    findings: dict[int, list[Finding]]
    health: Health
    backward: bool  # any backward has run: colours mean something
    parallel: Counter  # (src, dst) -> how many links join them
    repeat_boxes: Counter  # Repeat -> how many boxes it has
    edge_label: str  # "label" or "xlabel"
    show_shapes: bool
    steps: list[LstmStep]  # LSTM time steps written as ops (recurrent.find_lstm_steps)
    step_of: dict[int, int]  # node id -> index into steps
    role_of: dict[int, str]  # node id -> its role in its step (recurrent.INPUT_GATE, ...)
    step_titles: list[str]  # "step 3 (LSTMCell cell)", one per step
    cell_edges: dict[int, int]  # edge index -> the step whose cell state path it is on
    framed: set[int]  # the steps drawn whole, one box per node: each gets its frame

    @classmethod
    def of(cls, graph: Graph, view: View, options: RenderOptions) -> _Context:
        findings: dict[int, list[Finding]] = {}
        for f in graph.findings:
            for nid in f.nodes:  # a finding about a cause marks every node it names
                findings.setdefault(nid, []).append(f)
        steps = find_lstm_steps(graph)
        alone = {b.node for b in view.boxes if b.kind == SINGLE and b.repeat is None}
        return cls(
            boxes={b.name: b for b in view.boxes},
            findings=findings,
            health=Health.of(graph),
            backward=graph.passes > 0 or any(n.executed for n in graph.nodes),
            parallel=Counter((link.src, link.dst) for link in view.links),
            repeat_boxes=Counter(b.repeat for b in view.boxes if b.repeat is not None),
            edge_label="label" if len(view.boxes) <= _XLABEL_ABOVE else "xlabel",
            show_shapes=options.show_shapes,
            steps=steps,
            step_of={nid: k for k, s in enumerate(steps) for nid in s.members},
            role_of={nid: role for s in steps for nid, role in s.roles().items()},
            step_titles=_step_titles(graph, steps),
            cell_edges={e: k for k, s in enumerate(steps) for e in s.cell_edges},
            framed={k for k, s in enumerate(steps) if alone.issuperset(s.members)},
        )


# -- text -------------------------------------------------------------------------------------


def _q(value: object) -> str:
    """A DOT double-quoted string; newlines become centred line breaks."""
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def _attrs(**attrs: object) -> str:
    return "[" + " ".join(f"{k}={_q(v)}" for k, v in attrs.items() if v is not None) + "]"


def _ink(fill: str) -> str:
    """Black or white text, whichever reads better on ``fill`` (``#rrggbb``)."""
    r, g, b = (int(fill[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return "#ffffff" if 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.45 else "#000000"


def _worst(items: Iterable[Node | GradStats | None], h: Health) -> Node | GradStats | None:
    """What a group is coloured by: NaN/Inf, then exploding, vanishing, largest healthy."""

    def rank(x: Node | GradStats) -> tuple[int, float]:
        b = h.band(x)
        s = _stats(x)
        size = s.rms if s is not None and s.finite else 0.0
        return _BAND_RANK[b], -size if b is Band.VANISHING else size

    return max((x for x in items if _stats(x) is not None), key=rank, default=None)


def _stats(x: Node | GradStats | None) -> GradStats | None:
    return x.grad if isinstance(x, Node) else x


# -- boxes ------------------------------------------------------------------------------------


def _box_attrs(graph: Graph, box: Box, ctx: _Context) -> dict[str, object]:
    nodes = [graph.nodes[m] for m in box.members]
    findings = [f for m in box.members for f in ctx.findings.get(m, ())]
    worst = _worst(nodes, ctx.health)
    stats = _stats(worst)
    if box.kind == SINGLE:
        node = graph.nodes[box.node]  # type: ignore[index]
        label, shape, tooltip = _node_label(node, stats, ctx), _node_shape(node), _node_tooltip(graph, node, box, ctx)
    else:
        label, shape, tooltip = _group_label(graph, box, nodes), SHAPES["group"], _group_tooltip(graph, box, nodes, stats, ctx)
    style = ["filled"] if shape in ("cylinder", "ellipse", "doubleoctagon", "box3d", "tab") else ["rounded", "filled"]
    attrs: dict[str, object] = {"id": box.name, "shape": shape}
    fill = magnitude_colour(worst, ctx.health) if ctx.backward else "#ffffff"
    attrs.update(fillcolor=fill, fontcolor=_ink(fill))
    if ctx.backward and not any(n.executed for n in nodes):
        style.append("dashed")
        attrs.update(NOT_RUN)
    if any(f.kind == ORIGIN_KIND for f in findings):
        label = f"{ORIGIN_MARK} {label}\nNaN/Inf starts here"
        attrs.update(color=ORIGIN_COLOUR, penwidth=4, peripheries=2)
        style.append("bold")
    elif findings:
        attrs.update(color=SEVERITY_COLOURS[max(f.severity for f in findings)], penwidth=2.5)
        style.append("bold")
    if nodes and all(n.is_root for n in nodes):
        style.append("bold")
    attrs.update(style=",".join(dict.fromkeys(style)), label=label, tooltip=tooltip)
    return attrs


def _node_shape(node: Node) -> str:
    if node.opaque:
        return SHAPES["opaque"]
    if node.is_root:
        return SHAPES["root"]
    return SHAPES.get(node.kind, SHAPES[OP])


def _values_text(node: Node) -> str:
    """``data 2.0 | grad -3.0`` for a scalar; ``data [..]`` and ``grad [..]`` lines otherwise."""
    parts = [(k, v) for k, v in (("data", node.value), ("grad", node.grad_value)) if v is not None]
    if not parts:
        return ""
    if all(not v.shape for _, v in parts):
        return " | ".join(f"{k} {v}" for k, v in parts)
    return "\n".join(f"{k} {v}" for k, v in parts)


def _node_label(node: Node, stats: GradStats | None, ctx: _Context) -> str:
    values = _values_text(node)
    if node.kind == PARAM:
        label = "\n".join(node.names) or node.label or node.op
        if ctx.backward and stats is not None and node.grad_value is None:
            label += f"\ngrad rms {fmt_num(stats.rms)}"
    else:
        label = _role_label(node, ctx) or node.label or op_label(node.op)
        if node.kind == OP and node.var_name:
            label = f"{node.var_name} = {label}"
    if values:
        label += "\n" + values
    if node.opaque:
        label += f"\n({node.opaque}: inside hidden)"
    return label


def _node_tooltip(graph: Graph, node: Node, box: Box, ctx: _Context) -> str:
    lines = [f"{node.op}  (node {node.id}, {node.kind}{', output' if node.is_root else ''})"]
    role = _role_label(node, ctx)
    if role:
        lines.append(f"LSTM {ctx.step_titles[ctx.step_of[node.id]]}: {role.replace(chr(10), ' ')}")
    if node.names:
        lines.append("parameter: " + ", ".join(node.names))
    if node.module is not None:
        lines.append(f"module: {fmt_module(node.module, graph)}")
    if node.source is not None:
        lines.append(f"source: {node.source}")
    for i, meta in enumerate(node.outputs):
        lines.append(f"{'output' if len(node.outputs) == 1 else f'output {i}'}: {fmt_meta(meta)}")
    if node.saved:
        lines.append("saved: " + ", ".join(fmt_saved(m) for m in node.saved[:8]))
        if len(node.saved) > 8:
            lines[-1] += f", ... ({len(node.saved)} in all)"
    lines.append(f"grad: {fmt_stats(node.grad)}")
    if len(node.grads) > 1:
        lines.extend(f"grad out {i}: {fmt_stats(g)}" for i, g in enumerate(node.grads))
    if ctx.backward:
        lines.append(
            "backward: not run" if not node.executed
            else f"backward: ran (step {node.exec_order})" if node.exec_order is not None
            else "backward: ran"
        )
    if box.repeat is not None:
        norms = [graph.nodes[m].grad.norm for m in box.members if graph.nodes[m].grad is not None]  # type: ignore[union-attr]
        lines.append(
            f"stands for {box.repeat.count} copies ({box.repeat.span}); colour shows the worst"
            + (f"; grad norm {fmt_num(min(norms))} .. {fmt_num(max(norms))}" if norms else "")
        )
    lines.extend(dict.fromkeys(str(f) for m in box.members for f in ctx.findings.get(m, ())))
    return "\n".join(lines)


def _group_label(graph: Graph, box: Box, nodes: list[Node]) -> str:
    copies = box.repeat.count if box.repeat is not None else 1
    ops = [n for n in nodes if n.kind == OP]
    n_ops, n_params = len(ops) // copies, sum(n.kind == PARAM for n in nodes) // copies
    counts = fmt_count(n_ops, "op") + (f", {fmt_count(n_params, 'param')}" if n_params else "")
    if box.kind == MODULE:
        head = fmt_module(box.title, graph)
        if box.repeat is not None and box.title == box.repeat.path:
            return f"{box.repeat.span}  x{copies}\n{counts} each"
        return f"{head}\n{counts}"
    if box.kind == CHAIN:
        names = [n.label or op_label(n.op) for n in ops[: len(ops) // copies]]
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        return f"{fmt_count(n_ops, 'op')}: {shown}" + (f"\n+{fmt_count(n_params, 'param')}" if n_params else "")
    return f"... {len(nodes):,} more nodes\n(raise max_nodes to draw them)"


def _group_tooltip(graph: Graph, box: Box, nodes: list[Node], stats: GradStats | None, ctx: _Context) -> str:
    what = {MODULE: f"module {fmt_module(box.title, graph)}", CHAIN: "a linear chain of ops"}.get(
        box.kind, "nodes left out to keep the drawing under max_nodes"
    )
    lines = [f"{what}: {fmt_count(len(nodes), 'node')}"]
    if box.repeat is not None:
        lines.append(f"stands for {box.repeat.count} identical copies ({box.repeat.span})")
    worst = next((n for n in nodes if stats is not None and n.grad is stats), None)
    if worst is not None:
        lines.append(f"worst gradient: {worst.name or worst.label or worst.op} (node {worst.id}): {fmt_stats(stats)}")
    params = [name for n in nodes for name in n.names]
    if params:
        lines.append("parameters: " + ", ".join(params[:6]) + (", ..." if len(params) > 6 else ""))
    ops = Counter(n.label or op_label(n.op) for n in nodes if n.kind == OP)
    lines.append("ops: " + ", ".join(f"{k} x{v}" if v > 1 else k for k, v in ops.most_common(8)))
    lines.extend(dict.fromkeys(str(f) for n in nodes for f in ctx.findings.get(n.id, ())))
    return "\n".join(lines)


# -- LSTM steps -------------------------------------------------------------------------------


def _role_label(node: Node, ctx: _Context) -> str:
    """What a node of an LSTM step does there (``forget gate f σ``, ``h3 = o * tanh(c3)``), or
    ``""`` for a node of no step, or one whose op is label enough (the gates' inputs)."""
    k = ctx.step_of.get(node.id)
    if k is None:
        return ""
    t = ctx.steps[k].index
    roles = {
        INPUT_GATE: "input gate i σ",
        FORGET_GATE: "forget gate f σ",
        CANDIDATE: "candidate g tanh",
        OUTPUT_GATE: "output gate o σ",
        FORGET_MUL: f"f * c{t - 1}",
        INPUT_MUL: "i * g",
        CELL: f"cell state c{t}\n= f*c{t - 1} + i*g",
        CELL_TANH: f"tanh(c{t})",
        HIDDEN: f"h{t} = o * tanh(c{t})",
    }
    return roles.get(ctx.role_of[node.id], "")


def _step_titles(graph: Graph, steps: list[LstmStep]) -> list[str]:
    """``step 3 (LSTMCell cell)``: each step's time step and the module that ran it; with the
    sequence when one module ran several chains (two sequences through one cell)."""
    classes = graph.meta.get("module_classes") or {}
    chains: dict[str | None, set[int]] = {}
    for s in steps:
        chains.setdefault(s.module, set()).add(s.chain)
    titles = []
    for s in steps:
        where = " ".join(x for x in (classes.get(s.module) if s.module is not None else None, s.module) if x)
        sequence = f"sequence {s.chain + 1}, " if len(chains[s.module]) > 1 else ""
        titles.append(f"{sequence}step {s.index} ({where or 'LSTM cell'})")
    return titles


def _step_cluster(graph: Graph, k: int, boxes: list[Box], ctx: _Context) -> list[str]:
    """One frame per time step, titled with the step and where its gradient goes: the RMS at
    c_t, the part sent back along the cell state, the part that goes into the gates."""
    step = ctx.steps[k]
    label = ctx.step_titles[k]
    if ctx.backward and step.cell_grad is not None:
        t = step.index
        back = [f"to c{t - 1} along the cell state {fmt_num(step.carried_grad.rms)}"] if step.carried_grad else []
        into = [f"into the gates {fmt_num(step.gate_grad.rms)}"] if step.gate_grad else []
        label += f"\ngrad rms at c{t} {fmt_num(step.cell_grad.rms)}" + "".join(f"; {x}" for x in back + into)
    frame = ";".join(f" {name}={_q(v)}" for name, v in _STEP_FRAME.items())
    lines = [f"  subgraph cluster_step{k} {{",
             f'    label={_q(label)}; labelloc="t"; style="rounded"; fontsize=10;{frame};']
    lines.extend(f"    {b.name} {_attrs(**_box_attrs(graph, b, ctx))}" for b in boxes)
    lines.append("  }")
    return lines


def _step_order(graph: Graph, ctx: _Context) -> list[str]:
    """Invisible edges that keep each step's frame below the step before it.

    The ops that read only x_t and the weights (``x_t @ W_ih``) would otherwise be ranked by
    their weights, at the top of the picture, and stretch every frame over the whole height.
    """
    by_place = {(s.chain, s.index): s for s in ctx.steps}
    lines = []
    for k, step in enumerate(ctx.steps):
        if k not in ctx.framed:
            continue
        before = by_place.get((step.chain, step.index - 1))
        anchor = None if before is None else before.hidden if before.hidden is not None else before.cell
        if anchor is None or not _drawn_alone(ctx, anchor):
            continue
        for m in step.preactivation:
            if _drawn_alone(ctx, m) and not any(p in ctx.step_of or p == anchor for p in graph.producers(m)):
                lines.append(f"  n{anchor} -> n{m} [style=\"invis\"]")
    return lines


def _drawn_alone(ctx: _Context, nid: int) -> bool:
    box = ctx.boxes.get(f"n{nid}")
    return box is not None and box.kind == SINGLE and box.node == nid


def _lstm_note(ctx: _Context) -> str:
    """The caption's line about the LSTM steps found, and how to see them when grouped away."""
    if not ctx.steps:
        return ""
    n = fmt_count(len(ctx.steps), "LSTM time step")
    how = "raise max_nodes (or render a shorter sequence) to see their gates"
    if not ctx.framed:
        return f"{n} found, grouped away here: {how}"
    each = "a frame each" if len(ctx.framed) == len(ctx.steps) else f"{len(ctx.framed)} drawn whole in frames ({how})"
    return (f"{n} found: {each}, gates named by role; thick brown edges carry the cell "
            "state c_{t-1} -> f*c -> c_t")


_UNREACHED_SHOWN = 12


def _row(names: list[str]) -> str:
    """Keep ``names`` on one rank, left to right in this order (invisible edges fix it)."""
    return f"    {{ rank=same; {' -> '.join(names)} [style=invis] }}"


def _unreached(graph: Graph, ctx: _Context) -> list[str]:
    """Parameters the walk never met (unused, detached, frozen): a dashed frame of their own.

    They have no node in the graph, so without this the picture would hide the very thing
    ``capture(model=...)`` found.
    """
    params = [p for p in graph.params if p.node is None and p.status is not ParamStatus.REACHED]
    if not params:
        return []
    severity = {f.param: f.severity for f in graph.findings if f.param is not None}
    lines = [
        "  subgraph cluster_unreached {",
        '    label="parameters this loss does not reach"; labelloc="t"; style="dashed,rounded"; '
        'color="#9e9e9e"; fontsize=10;',
    ]
    for i, p in enumerate(params[:_UNREACHED_SHOWN]):
        attrs: dict[str, object] = {
            "id": f"u{i}", "shape": SHAPES[PARAM], "style": "filled,dashed", **NOT_RUN,
            "label": f"{p.name}\n{p.status}",
            "tooltip": f"{p.name} {fmt_shape(p.shape)}: {p.status}"
            + "".join(f"\n{f}" for f in graph.findings if f.param == p.name),
        }
        if p.name in severity:
            attrs.update(color=SEVERITY_COLOURS[severity[p.name]], penwidth=2)
        lines.append(f"    u{i} {_attrs(**attrs)}")
    names = [f"u{i}" for i in range(min(len(params), _UNREACHED_SHOWN))]
    if len(params) > _UNREACHED_SHOWN:
        rest = len(params) - _UNREACHED_SHOWN
        lines.append(f"    u_more {_attrs(shape='plaintext', style='', label=f'... and {rest} more')}")
        names.append("u_more")
    lines.append(_row(names))
    lines.append("  }")
    return lines


# -- links ------------------------------------------------------------------------------------


def _link_attrs(graph: Graph, link: Link, ctx: _Context) -> dict[str, object]:
    edges = [graph.edges[i] for i in link.edges]
    first = edges[0]
    src, dst = ctx.boxes[link.src], ctx.boxes[link.dst]
    shapes = list(dict.fromkeys(fmt_shape(graph.edge_shape(e)) for e in edges))
    parts = []
    if ctx.show_shapes:
        parts.append(shapes[0] + (" ..." if len(shapes) > 1 else ""))
    if src.kind == SINGLE and len(graph.nodes[first.src].outputs) > 1:
        parts.append(f"out {first.output_nr}")
    if dst.kind == SINGLE and ctx.parallel[(link.src, link.dst)] > 1:
        parts.append(f"in {first.input_nr}")
    # Inside a folded block every edge stands for its copies' edges: count one copy's.
    copies = src.repeat.count if src.repeat is not None and src.repeat == dst.repeat else 1
    if len(edges) // copies > 1:
        parts.append(f"x{len(edges) // copies}")
    attrs: dict[str, object] = {}
    if link.repeat:
        parts = ["next copy"]
        attrs.update(style="dashed", constraint="false", color="#616161")
    if parts:
        attrs[ctx.edge_label] = "  ".join(parts)
    cell = next((ctx.cell_edges[i] for i in link.edges if i in ctx.cell_edges), None)
    if cell is not None:
        step = ctx.steps[cell]
        if first.src == step.prev_cell:  # the carry itself: name the state it carries
            attrs[ctx.edge_label] = "  ".join([f"c{step.index - 1}", *parts])
        attrs.update(color=CELL_COLOUR, fontcolor=CELL_COLOUR, penwidth=3, style="bold")
    stats = _stats(_worst((e.grad for e in edges), ctx.health))
    if ctx.backward and ctx.health.band(stats) in (Band.VANISHING, Band.EXPLODING, Band.NONFINITE):
        colour = magnitude_colour(stats, ctx.health)
        attrs.update(color=colour, fontcolor=colour, penwidth=3 if cell is not None else 2)
    producer = graph.nodes[first.src]
    meta = producer.outputs[first.output_nr] if first.output_nr < len(producer.outputs) else None
    tip = [
        f"{_box_title(graph, src)} -> {_box_title(graph, dst)}"
        + (f"  ({len(edges)} edges)" if len(edges) > 1 else ""),
        f"tensor: {fmt_meta(meta) if meta is not None else '?'}"
        + (f" (output {first.output_nr})" if len(producer.outputs) > 1 else ""),
        f"grad sent back: {fmt_stats(stats)}",
    ]
    if cell is not None:
        t = ctx.steps[cell].index
        tip.append(f"cell state path of {ctx.step_titles[cell]}: c{t - 1} -> f*c{t - 1} -> c{t}")
    attrs["tooltip"] = "\n".join(tip)
    return attrs


def _box_title(graph: Graph, box: Box) -> str:
    if box.kind == SINGLE:
        return graph.nodes[box.node].title  # type: ignore[index]
    return box.title or box.kind


# -- legend -----------------------------------------------------------------------------------


_LEGEND_SHAPES = (
    (SHAPES[OP], "op", {"style": "rounded,filled"}),
    (SHAPES[PARAM], "parameter", {}),
    (SHAPES[LEAF], "leaf tensor", {}),
    (SHAPES["root"], "output / loss", {}),
    (SHAPES["group"], "group of ops", {}),
    (SHAPES["opaque"], "opaque region", {}),
)


def _legend(graph: Graph, ctx: _Context) -> list[str]:
    """A small framed legend of the shapes, marks and colours this picture uses.

    One row of samples, kept in order by invisible edges, and the colour scale below it.
    """
    shapes = {SHAPES["group"] if b.kind != SINGLE else _node_shape(graph.nodes[b.node]) for b in ctx.boxes.values()}  # type: ignore[index]
    samples = [s for s in _LEGEND_SHAPES if s[0] in shapes]
    findings = [f for fs in ctx.findings.values() for f in fs]
    if any(f.kind == ORIGIN_KIND for f in findings):
        samples.append(("box", f"{ORIGIN_MARK} NaN/Inf origin", {"color": ORIGIN_COLOUR, "penwidth": 4, "peripheries": 2, "style": "rounded,filled,bold"}))
    for sev in sorted({f.severity for f in findings if f.kind != ORIGIN_KIND}, reverse=True):
        samples.append(("box", f"finding: {sev}", {"color": SEVERITY_COLOURS[sev], "penwidth": 2.5, "style": "rounded,filled,bold"}))
    if ctx.backward and not all(n.executed for n in graph.nodes):
        samples.append(("box", "not run by backward", {**NOT_RUN, "style": "rounded,filled,dashed"}))
    if ctx.repeat_boxes:
        samples.append(("box", "xN: N identical blocks", {"style": "rounded,dashed"}))
    if ctx.framed:
        samples.append(("plaintext", "thick brown edge: LSTM cell state", {"fontcolor": CELL_COLOUR, "style": ""}))
    # The colour scale is the cluster's own (HTML-like) label: a separate node would sit a rank
    # or two below the samples, as far apart as the graph's labelled edges make its ranks.
    title = _colour_table(ctx.health) if ctx.backward else '"legend"'
    lines = [
        "  subgraph cluster_legend {",
        f'    label={title}; labelloc="b"; fontsize=10; style="rounded"; color="#bdbdbd"; margin=6;',
        '    node [fontsize=9 height=0.25 width=0.3 margin="0.06,0.02" fillcolor="#ffffff"];',
    ]
    for i, (shape, label, extra) in enumerate(samples):
        attrs = {"shape": shape, "label": label, "tooltip": f"legend: {label}", "style": "filled", **extra}
        lines.append(f"    legend_{i} {_attrs(**attrs)}")
    lines.append(_row([f"legend_{i}" for i in range(len(samples))]))
    lines.append("  }")
    return lines


def _colour_table(h: Health) -> str:
    """An HTML-like label: the colour scale, vanishing to exploding, from ``formatting``."""
    lo, hi = math.log10(h.vanishing_rms), math.log10(h.exploding_rms)
    scaled = f" (x{h.scale:g} loss scale)" if h.scale != 1.0 else ""
    cells = [(BAND_COLOURS[Band.VANISHING], f"vanishing &lt;= {fmt_num(h.vanishing_rms)}")]
    cells += [(rms_colour(10 ** (lo + (hi - lo) * f), h), text)
              for f, text in ((0.1, "healthy: small"), (0.4, ""), (0.6, ""), (0.9, "large"))]
    cells += [
        (BAND_COLOURS[Band.EXPLODING], f"exploding &gt;= {fmt_num(h.exploding_rms)}{scaled}"),
        (BAND_COLOURS[Band.NONFINITE], "NaN/Inf"),
        (BAND_COLOURS[Band.NONE], "no grad"),
    ]
    tds = "".join(
        f'<td bgcolor="{c}"><font color="{_ink(c)}" point-size="9">{text or "&nbsp;&nbsp;&nbsp;"}</font></td>'
        for c, text in cells
    )
    return f'<<table border="0" cellborder="0" cellspacing="1" cellpadding="3"><tr><td><font point-size="9">legend; gradient RMS:</font></td>{tds}</tr></table>>'
