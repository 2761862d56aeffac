"""The selected node's details: what it is, where it came from, its gradient and its findings.

Rendering is a pure function of (graph, node id), ``describe``; the widget only holds the id.
"""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.containers import VerticalScroll
from textual.reactive import reactive
from textual.widgets import Static

from graphscope import formatting
from graphscope.health import Health
from graphscope.model import Graph
from graphscope.tui.widgets.graph_tree import SEVERITY_STYLE

MAX_NEIGHBOURS = 12


def _neighbours(graph: Graph, ids: list[int]) -> Text:
    if not ids:
        return Text("none", style="dim")
    shown = [f"{graph.nodes[i].title} #{i}" for i in ids[:MAX_NEIGHBOURS]]
    more = len(ids) - MAX_NEIGHBOURS
    return Text(", ".join(shown) + (f", … {more:,} more" if more > 0 else ""))


def describe(graph: Graph, node_id: int, health: Health | None = None) -> Group:
    """Everything known about one node, as a Rich renderable."""
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
    if node.source is not None:
        rows.append(("source", str(node.source)))
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

    def compose(self):
        yield self._body

    def watch_node(self, node: int | None) -> None:
        if node is not None:
            self._body.update(describe(self._graph, node, self._health))
            self.scroll_home(animate=False)
