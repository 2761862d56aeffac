"""The navigable graph tree: backward from the loss, or grouped by module, loaded lazily.

Lines are added only when their parent is expanded, and long runs (a 50,000-op chain) only a
window at a time, with "more" lines at the ends; ``reveal`` loads just the lines on the way to
a node. The shape comes from ``graphscope.tui.outline``; this module only turns it into lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.message import Message
from textual.reactive import reactive
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from graphscope import formatting
from graphscope.health import Health
from graphscope.model import PARAM, Graph, Severity
from graphscope.tui.outline import (
    BackwardPlan,
    Container,
    ModuleItem,
    ModulePlan,
    RefItem,
    SeqItem,
    SeqKey,
    UnderModule,
    UnderNode,
)

CHUNK = 200
"""Lines loaded at once from a long run; a jump further away than two chunks starts afresh."""

Grouping = Literal["backward", "module"]
SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


@dataclass(frozen=True, slots=True)
class Line:
    """What a tree line stands for: a node, a reference to one, a module or a "more" marker."""

    kind: Literal["node", "ref", "module", "more", "more-items"]
    node: int = -1
    module: str = ""
    seq: SeqKey | None = None
    step: int = 0  # for "more": -1 loads earlier lines, +1 later ones
    container: Container = None  # for "more-items": whose inputs to load further


@dataclass(slots=True)
class _Window:
    """The loaded slice ``[start, end)`` of a run, and its marker lines."""

    start: int
    end: int
    lines: list[TreeNode[Line]] = field(default_factory=list)
    before: TreeNode[Line] | None = None
    after: TreeNode[Line] | None = None


@dataclass(slots=True)
class _Items:
    """The items under one opened container, how many are loaded, and its "more" line."""

    items: list
    done: int = 0
    more: TreeNode[Line] | None = None


class GraphTree(Tree[Line]):
    """The graph as a tree. Post ``Selected`` when the cursor lands on a node (or a reference)."""

    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("h,left", "close", "Collapse", show=False),
        Binding("l,right", "open", "Expand", show=False),
    ]

    grouping: reactive[Grouping] = reactive("backward", init=False)

    class Selected(Message):
        """The cursor moved to a line about ``node``."""

        def __init__(self, node: int) -> None:
            self.node = node
            super().__init__()

    def __init__(self, graph: Graph, *, health: Health | None = None, **kw) -> None:
        super().__init__("graph", **kw)
        self.show_root = False
        self.guide_depth = 3
        self.auto_expand = False
        self._graph = graph
        self._health = health or Health.of(graph)
        self._worst = {}
        for f in graph.findings:
            for nid in f.nodes:  # a finding about a cause marks every node it names
                self._worst[nid] = max(f.severity, self._worst.get(nid, f.severity))
        self._plans: dict[Grouping, BackwardPlan | ModulePlan] = {}
        self._rebuild()

    @property
    def plan(self) -> BackwardPlan | ModulePlan:
        """The plan of the current grouping, built the first time it is shown."""
        plan = self._plans.get(self.grouping)
        if plan is None:
            cls = BackwardPlan if self.grouping == "backward" else ModulePlan
            plan = self._plans[self.grouping] = cls(self._graph)
        return plan

    @property
    def current(self) -> int | None:
        """The node under the cursor (the target, for a reference line)."""
        line = self.cursor_node.data if self.cursor_node is not None else None
        return line.node if line is not None and line.kind in ("node", "ref") else None

    def _rebuild(self) -> None:
        self.clear()
        self.border_title = "backward from the loss" if self.grouping == "backward" else "by module"
        self._line_of: dict[int, TreeNode[Line]] = {}
        self._module_line: dict[str, TreeNode[Line]] = {}
        self._opened: set[Container] = set()
        self._runs: dict[SeqKey, _Window] = {}
        self._items: dict[Container, _Items] = {}
        self._load(None, self.root)
        self.root.expand()

    def watch_grouping(self) -> None:
        keep = self.current
        self._rebuild()
        if keep is not None:
            self.reveal(keep)

    # -- lines --------------------------------------------------------------------------------

    def _label_for(self, node_id: int) -> Text:
        node = self._graph.nodes[node_id]
        text = Text(node.title, style="bold" if node.kind == PARAM else "")
        # The gradient and the finding mark before the shape and the module: a narrow tree cuts
        # the end of a line ("native_layer_norm (4, 16, 64)" filled it), and the number is what
        # the tree is read for.
        if node.grad is not None:
            colour = formatting.magnitude_colour(node, self._health)
            text.append(f" ● {formatting.fmt_num(node.grad.rms)}", style=colour)
        worst = self._worst.get(node_id)
        if worst is not None:
            text.append(" ⚠", style=SEVERITY_STYLE[worst])
        text.append(f" {formatting.fmt_shape(node.shape)}", style="dim")
        # Grouped by module, the module is the line above: said once there, not on every line.
        # With its class (a Sequential's "38" alone read like a count): "38 (Linear)". Last on
        # the line, where a narrow tree may cut it.
        if node.module and node.kind != PARAM and self.grouping == "backward":
            text.append(f"  {formatting.fmt_module(node.module, self._graph)}", style="dim italic")
        return text

    def _more_text(self, count: int, step: int) -> Text:
        where = "earlier" if step < 0 else "more"
        return Text(f"… {count:,} {where} (enter loads {min(count, CHUNK)})", style="dim italic")

    def _insert(self, parent: TreeNode[Line], label: Text, line: Line, *, expandable: bool,
             after: TreeNode[Line] | None = None, before: TreeNode[Line] | None = None) -> TreeNode[Line]:
        if after is not None:
            return parent.add(label, line, after=after, allow_expand=expandable)
        if before is not None:
            return parent.add(label, line, before=before, allow_expand=expandable)
        return parent.add(label, line, allow_expand=expandable)

    def _insert_node(self, parent: TreeNode[Line], node_id: int, key: SeqKey, **where) -> TreeNode[Line]:
        line = Line("node", node=node_id, seq=key)
        tn = self._insert(parent, self._label_for(node_id), line,
                       expandable=self.plan.expandable(node_id), **where)
        self._line_of[node_id] = tn
        return tn

    def _load(self, container: Container, parent: TreeNode[Line]) -> None:
        """Add the lines under ``container`` once (the first time it is opened)."""
        if container in self._opened:
            return
        self._opened.add(container)
        self._items[container] = _Items(self.plan.items(container))
        self._load_items(container, parent)

    def _load_items(self, container: Container, parent: TreeNode[Line]) -> TreeNode[Line] | None:
        """Add the next ``CHUNK`` items under ``container``; each run starts with a short
        window, so opening a node with many inputs adds about ``CHUNK`` lines in all."""
        state = self._items[container]
        batch = state.items[state.done : state.done + CHUNK]
        per = max(3, CHUNK // max(1, len(batch)))
        if state.more is not None:  # appending, then re-adding the marker, is O(1) a line
            state.more.remove()
            state.more = None
        where: dict[str, TreeNode[Line]] = {}
        first: TreeNode[Line] | None = None
        for item in batch:
            if isinstance(item, ModuleItem):
                label = Text(formatting.fmt_module(item.path, self._graph), style="bold")
                label.append(f"  {formatting.fmt_count(item.count, 'node')}", style="dim")
                tn = self._insert(parent, label, Line("module", module=item.path),
                                  expandable=True, **where)
                self._module_line[item.path] = tn
            elif isinstance(item, RefItem):
                node = self._graph.nodes[item.node]
                label = Text(f"↪ {node.title} #{item.node} (shared: enter jumps to it)",
                             style="italic dim")
                tn = self._insert(parent, label, Line("ref", node=item.node), expandable=False,
                                  **where)
            else:
                w = self._open_window(parent, item.key, 0, where, size=per)
                tn = w.lines[0]
            first = first or tn
        state.done += len(batch)
        left = len(state.items) - state.done
        if left:
            label = Text(f"… {left:,} more (enter loads {min(left, CHUNK)})", style="dim italic")
            state.more = parent.add_leaf(label, Line("more-items", container=container))
        return first

    def _has_line(self, item: SeqItem | ModuleItem) -> bool:
        if isinstance(item, ModuleItem):
            return item.path in self._module_line
        return item.key in self._runs

    def _open_window(self, parent: TreeNode[Line], key: SeqKey, start: int,
                     where: dict[str, TreeNode[Line]], *, size: int = CHUNK) -> _Window:
        """Load ``[start, start + size)`` of run ``key``; ``where`` places it among siblings."""
        seq = self.plan.seq(key)
        end = min(len(seq), start + size)
        w = _Window(start, start)
        if start > 0:
            w.before = self._insert(parent, self._more_text(start, -1), Line("more", seq=key, step=-1),
                                 expandable=False, **where)
            where = {"after": w.before}
        for i in range(start, end):
            tn = self._insert_node(parent, seq[i], key, **where)
            w.lines.append(tn)
            where = {"after": tn}
        w.end = end
        if end < len(seq):
            w.after = self._insert(parent, self._more_text(len(seq) - end, 1),
                                Line("more", seq=key, step=1), expandable=False, **where)
        self._runs[key] = w
        return w

    def _extend(self, key: SeqKey, step: int) -> TreeNode[Line] | None:
        """Load up to one chunk more of run ``key`` in direction ``step``; the first new line."""
        w = self._runs[key]
        seq = self.plan.seq(key)
        first_new: TreeNode[Line] | None = None
        if step > 0 and w.after is not None:
            end = min(len(seq), w.end + CHUNK)
            anchor = w.lines[-1]
            for i in range(w.end, end):
                anchor = self._insert_node(anchor.parent, seq[i], key, after=anchor)
                w.lines.append(anchor)
                first_new = first_new or anchor
            w.end = end
            if end == len(seq):
                w.after.remove()
                w.after = None
            else:
                w.after.set_label(self._more_text(len(seq) - end, 1))
        elif step < 0 and w.before is not None:
            start = max(0, w.start - CHUNK)
            new = []
            for i in range(start, w.start):
                new.append(self._insert_node(w.before.parent, seq[i], key, before=w.lines[0]))
            w.lines[:0] = new
            first_new = new[-1] if new else None
            w.start = start
            if start == 0:
                w.before.remove()
                w.before = None
            else:
                w.before.set_label(self._more_text(start, -1))
        return first_new

    def _show_index(self, parent: TreeNode[Line], key: SeqKey, index: int) -> TreeNode[Line]:
        """Make entry ``index`` of run ``key`` a loaded line, by extending or re-windowing."""
        w = self._runs[key]
        while not (w.start <= index < w.end):
            near = w.start - 2 * CHUNK <= index < w.end + 2 * CHUNK
            if near:
                self._extend(key, 1 if index >= w.end else -1)
                continue
            # Far away: drop this window and open a fresh one around the target, in its place.
            block = ([w.before] if w.before else []) + w.lines + ([w.after] if w.after else [])
            prev, nxt = block[0].previous_sibling, block[-1].next_sibling
            where = {"after": prev} if prev is not None else {"before": nxt} if nxt is not None else {}
            for tn in block:
                self._forget(tn)
                tn.remove()
            w = self._open_window(parent, key, max(0, index - CHUNK // 2), where)
        return w.lines[index - w.start]

    def _forget(self, tn: TreeNode[Line]) -> None:
        """Drop the bookkeeping of a line about to be removed, and of all lines under it."""
        stack = [tn]
        while stack:
            t = stack.pop()
            stack.extend(t.children)
            line = t.data
            if line is not None and line.kind == "node":
                self._line_of.pop(line.node, None)
                container = UnderNode(line.node)
                self._opened.discard(container)
                for item in self._items.pop(container, _Items([])).items:
                    if isinstance(item, SeqItem):
                        self._runs.pop(item.key, None)

    # -- navigation ---------------------------------------------------------------------------

    def reveal(self, node_id: int) -> None:
        """Open the way down to ``node_id``'s own line and put the cursor on it."""
        tn = self._line_of.get(node_id)
        if tn is None:
            for step in self.plan.locate(node_id):
                parent = self._container_line(step.container)
                self._load(step.container, parent)
                parent.expand()
                item = step.item
                while not self._has_line(item) and self._items[step.container].more is not None:
                    self._load_items(step.container, parent)
                if isinstance(item, ModuleItem):
                    tn = self._module_line[item.path]
                else:
                    tn = self._show_index(parent, item.key, step.index)
        assert tn is not None
        node = tn.parent
        while node is not None and node is not self.root:
            node.expand()
            node = node.parent
        self._move_to(tn)

    def _move_to(self, tn: TreeNode[Line]) -> None:
        # Lines just added have no line number until the tree re-indexes its lines; reading
        # ``last_line`` does that now, so the cursor lands at once (not after a refresh).
        _ = self.last_line
        self.move_cursor(tn)

    def _container_line(self, container: Container) -> TreeNode[Line]:
        if container is None:
            return self.root
        if isinstance(container, UnderNode):
            return self._line_of[container.node]
        return self._module_line[container.path]

    @on(Tree.NodeExpanded)
    def _expanded(self, event: Tree.NodeExpanded[Line]) -> None:
        line = event.node.data
        if line is not None and line.kind == "node":
            self._load(UnderNode(line.node), event.node)
        elif line is not None and line.kind == "module":
            self._load(UnderModule(line.module), event.node)

    @on(Tree.NodeHighlighted)
    def _highlighted(self, event: Tree.NodeHighlighted[Line]) -> None:
        event.stop()
        line = event.node.data
        if line is not None and line.kind in ("node", "ref"):
            self.post_message(self.Selected(line.node))

    @on(Tree.NodeSelected)
    def _chosen(self, event: Tree.NodeSelected[Line]) -> None:
        event.stop()
        line = event.node.data
        if line is None:
            return
        if line.kind == "ref":
            self.reveal(line.node)
        elif line.kind == "more":
            first = self._extend(line.seq, line.step)
            if first is not None:
                self._move_to(first)
        elif line.kind == "more-items":
            first = self._load_items(line.container, event.node.parent)
            if first is not None:
                self._move_to(first)
        elif event.node.allow_expand:
            event.node.toggle()

    def action_open(self) -> None:
        tn = self.cursor_node
        if tn is None:
            return
        if tn.allow_expand and not tn.is_expanded:
            tn.expand()
        elif tn.is_expanded and tn.children:
            self.move_cursor(tn.children[0])

    def action_close(self) -> None:
        tn = self.cursor_node
        if tn is None:
            return
        if tn.is_expanded:
            tn.collapse()
        elif tn.parent is not None and tn.parent is not self.root:
            self.move_cursor(tn.parent)
