"""The selected node with its producers above and its consumers below, drawn by netext.

netext lays the few nodes out (Sugiyama, top-down) and routes the edges; a click on a
neighbour posts ``Clicked`` so the screen can move the selection there.
"""

from __future__ import annotations

from typing import Any

from netext import ArrowTip, EdgeRoutingMode, EdgeSegmentDrawingMode
from netext.textual_widget.widget import GraphView
from rich.style import Style
from rich.text import Text
from textual import on
from textual.message import Message
from textual.reactive import reactive

from graphscope import formatting
from graphscope.health import Health
from graphscope.model import Graph
from graphscope.tui.outline import neighbourhood

_EDGE = {
    "$edge-routing-mode": EdgeRoutingMode.ORTHOGONAL,
    "$edge-segment-drawing-mode": EdgeSegmentDrawingMode.BOX_ROUNDED,
    "$end-arrow-tip": ArrowTip.ARROW,
    "$style": Style(color="grey50"),
}


def _render_content(_key: str, data: dict[str, Any], style: Style) -> Text:
    return data["text"]


COMPACT_BELOW = 70
"""Below this many columns the boxes drop the shape (the details tab has it) and shorten names,
and only as many neighbours as fit side by side are drawn; the rest are one "+N more" box."""


def local_picture(graph: Graph, node_id: int, health: Health | None = None,
                  *, limit: int = 5, compact: bool = False,
                  ) -> tuple[dict[Any, dict[str, Any]], list[tuple[Any, Any, dict]]]:
    """netext nodes and edges for ``node_id`` and its neighbours (forward direction: down)."""
    prods, cons, more_in, more_out = neighbourhood(graph, node_id, limit=limit)
    h = health or Health.of(graph)

    def box(i: int, *, centre: bool = False) -> dict[str, Any]:
        n = graph.nodes[i]
        title = n.title
        if compact and not centre and len(title) > 10:
            title = title[:9] + "…"
        text = Text(title, style="bold" if centre else "")
        text.append("\n" if compact else f"\n{formatting.fmt_shape(n.shape)} ", style="dim")
        if n.grad is not None:
            text.append(f"● {formatting.fmt_num(n.grad.rms)}",
                        style=formatting.magnitude_colour(n, h))
        style = Style(color="yellow", bold=True) if centre else Style(color="grey70")
        return {"text": text, "$content-renderer": _render_content, "$style": style}

    nodes: dict[Any, dict[str, Any]] = {node_id: box(node_id, centre=True)}
    edges: list[tuple[Any, Any, dict]] = []
    for p in prods:
        nodes[p] = box(p)
        edges.append((p, node_id, _EDGE))
    for c in cons:
        nodes.setdefault(c, box(c))
        edges.append((node_id, c, _EDGE))
    for key, count, is_input in (("more-in", more_in, True), ("more-out", more_out, False)):
        if count:
            text = Text(f"+{count:,} more", style="dim italic")
            nodes[key] = {"text": text, "$content-renderer": _render_content}
            edges.append((key, node_id, _EDGE) if is_input else (node_id, key, _EDGE))
    return nodes, edges


class LocalGraph(GraphView):
    """The neighbourhood of ``node``; redrawn when ``node`` changes."""

    node: reactive[int | None] = reactive(None, init=False)

    class Clicked(Message):
        """The user clicked neighbour ``node``."""

        def __init__(self, node: int) -> None:
            self.node = node
            super().__init__()

    def __init__(self, graph: Graph, *, health: Health | None = None, **kw) -> None:
        super().__init__({}, [], **kw)
        self._graph = graph
        self._health = health or Health.of(graph)

    def watch_node(self, node: int | None) -> None:
        if node is not None:
            width = self.size.width or COMPACT_BELOW
            compact = width < COMPACT_BELOW
            limit = max(1, (width - 12) // 16) if compact else 5  # a compact box and its gap
            self.set_graph(*local_picture(self._graph, node, self._health, limit=limit,
                                          compact=compact))
            # The viewport is the whole picture, and the pane scrolls over it: a viewport the
            # pane's size cut the consumers off below and right at 80x24. Scrolled back to the
            # top-left, so a new picture never shows the previous one's stale offset.
            self._console_graph.reset_viewport()
            self._strip_segments = self.pre_render_strips()
            self.scroll_to(0, 0, animate=False)
            self.refresh()

    @on(GraphView.ElementClick)
    def _clicked(self, event: GraphView.ElementClick) -> None:
        ref = event.element_reference
        if ref.type == "node" and isinstance(ref.ref, int):
            self.post_message(self.Clicked(ref.ref))
