"""The selected node's details: what it is, where it came from, its gradient and its findings.

Rendering is a pure function of (graph, node id), ``describe``; the widget only holds the id.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from graphscope import formatting
from graphscope.export import recurrent
from graphscope.export.recurrent import LstmStep
from graphscope.health import Health
from graphscope.model import Graph, Source
from graphscope.tui.widgets.graph_tree import SEVERITY_STYLE

MAX_NEIGHBOURS = 12

_ROLES = {
    recurrent.INPUT_GATE: "input gate i (sigmoid)",
    recurrent.FORGET_GATE: "forget gate f (sigmoid)",
    recurrent.CANDIDATE: "candidate g (tanh)",
    recurrent.OUTPUT_GATE: "output gate o (sigmoid)",
    recurrent.FORGET_MUL: "f * c{p}: the cell state kept",
    recurrent.INPUT_MUL: "i * g: what the step writes",
    recurrent.CELL: "cell state c{t} = f*c{p} + i*g",
    recurrent.CELL_TANH: "tanh(c{t})",
    recurrent.HIDDEN: "h{t} = o * tanh(c{t})",
    recurrent.PREACTIVATION: "the gates' inputs",
}


@dataclass(frozen=True, slots=True)
class LstmRole:
    """What a node does in an LSTM step (``recurrent.find_lstm_steps``): its step, its role
    there (``recurrent.FORGET_GATE``, ...) and how many steps its chain has."""

    step: LstmStep
    role: str
    steps: int


def lstm_roles(graph: Graph) -> dict[int, LstmRole]:
    """``node id -> LstmRole`` for every node of every LSTM step in ``graph`` (empty without one)."""
    steps = recurrent.find_lstm_steps(graph)
    length = Counter(s.chain for s in steps)
    return {nid: LstmRole(s, role, length[s.chain]) for s in steps for nid, role in s.roles().items()}


def lstm_text(graph: Graph, role: LstmRole, *, module: str | None = None) -> Text:
    """``forget gate f (sigmoid), step 3 of 6 in layers.0 (LSTMGates)`` (the module left out
    when it is ``module``, the node's own, shown beside it); at the cell state, the gradient it
    receives and the part it carries back to the previous step."""
    s = role.step
    what = _ROLES[role.role].format(t=s.index, p=s.index - 1)
    text = Text(f"{what}, step {s.index} of {role.steps}")
    if s.module is None:
        text.append(f" of recurrence {s.chain + 1}")
    elif s.module != module:
        text.append(f" in {formatting.fmt_module(s.module, graph)}")
    if role.role == recurrent.CELL and s.cell_grad is not None:
        text.append(f"\ngradient at c{s.index}: rms {formatting.fmt_num(s.cell_grad.rms)}", style="dim")
        if s.carried_grad is not None:
            text.append(f"; carried back to c{s.index - 1}: rms {formatting.fmt_num(s.carried_grad.rms)}",
                        style="dim")
    return text


def _neighbours(graph: Graph, ids: list[int]) -> Text:
    if not ids:
        return Text("none", style="dim")
    shown = [f"{graph.nodes[i].title} #{i}" for i in ids[:MAX_NEIGHBOURS]]
    more = len(ids) - MAX_NEIGHBOURS
    return Text(", ".join(shown) + (f", … {more:,} more" if more > 0 else ""))


def _source(src: Source) -> Text:
    """``models.py:65 in forward`` over its folder: a narrow panel folded the whole path mid-way
    through its line number ("models.py:6" / "5 in")."""
    folder, name = os.path.split(src.short_file)
    text = Text(f"{name}:{src.line} in {src.function}")
    if folder:
        text.append(f"\n{folder}{os.sep}", style="dim")
    return text


def describe(graph: Graph, node_id: int, health: Health | None = None,
             lstm: dict[int, LstmRole] | None = None) -> Group:
    """Everything known about one node, as a Rich renderable; ``lstm`` (``lstm_roles``) adds
    its role in an LSTM step."""
    node = graph.nodes[node_id]
    h = health or Health.of(graph)
    title = Text(node.title, style="bold")
    title.append(f"  #{node.id}  {node.op}", style="dim")
    table = Table.grid(padding=(0, 1))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    rows: list[tuple[str, Text | str]] = [("kind", node.kind + (" (root)" if node.is_root else ""))]
    if node.var_name and node.var_name != node.title:
        rows.append(("variable", node.var_name))
    if node.label and node.label != node.title:
        rows.append(("label", node.label))
    if node.names:
        rows.append(("names", ", ".join(node.names)))
    rows.append(("module", formatting.fmt_module(node.module, graph)))
    if lstm and node_id in lstm:
        rows.append(("LSTM", lstm_text(graph, lstm[node_id], module=node.module)))
    if node.source is not None:
        rows.append(("source", _source(node.source)))
    outs = ", ".join(formatting.fmt_shape(m.shape) for m in node.outputs) or "?"
    rows.append(("shape" if len(node.outputs) <= 1 else "outputs", outs))
    rows.append(("dtype", f"{node.dtype or '?'} on {node.device or '?'}"))
    if node.saved:
        rows.append(("saved", ", ".join(formatting.fmt_saved(m) for m in node.saved)))
    if node.opaque:
        rows.append(("opaque", f"hides a {node.opaque} region"))
    colour = formatting.magnitude_colour(node, h)
    grad = Text(formatting.fmt_stats(node.grad), style=colour)
    if node.grad is not None:
        grad.append(f"  rms {formatting.fmt_num(node.grad.rms)}"
                    f" ({h.band(node)})")
    elif not node.executed:
        grad.append("  (backward did not run this node)", style="dim")
    if node.value is not None:
        rows.append(("data", str(node.value)))
    rows.append(("grad", grad))
    if node.grad_value is not None:
        rows.append(("grad values", str(node.grad_value)))
    if len(node.grads) > 1:
        for k, g in enumerate(node.grads):
            rows.append((f"  out {k}", Text(formatting.fmt_stats(g),
                                            style=formatting.magnitude_colour(g, h))))
    rows.append(("inputs", _neighbours(graph, graph.producers(node_id))))
    rows.append(("used by", _neighbours(graph, graph.consumers(node_id))))
    for k, v in rows:
        table.add_row(k, v)
    parts: list = [title, table]
    for f in graph.findings_for(node_id):
        text = Text(f"\n{str(f.severity).upper()} ", style=SEVERITY_STYLE[f.severity])
        text.append(f.message)
        if len(f.nodes) > 1:
            text.append(f"\n  one of the {len(f.nodes)} nodes this finding names (n/N steps "
                        "through them)", style="dim")
        if f.hint:
            text.append(f"\n  hint: {f.hint}", style="italic")
        parts.append(text)
    return Group(*parts)


class NodeDetails(VerticalScroll):
    """Shows ``describe`` of the node in ``node`` (None: a prompt to pick one)."""

    node: reactive[int | None] = reactive(None, init=False)

    def __init__(self, graph: Graph, *, health: Health | None = None, **kw) -> None:
        super().__init__(**kw)
        self._graph = graph
        self._health = health or Health.of(graph)
        self._body = Static(Text("Pick a node in the tree.", style="dim"), id="details-body")
        self._lstm: dict[int, LstmRole] | None = None  # found the first time a node is shown

    def compose(self):
        yield self._body

    def watch_node(self, node: int | None) -> None:
        if node is not None:
            if self._lstm is None:
                self._lstm = lstm_roles(self._graph)
            self._body.update(describe(self._graph, node, self._health, self._lstm))
            self.scroll_home(animate=False)
