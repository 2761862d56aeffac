"""The main screen: tree on the left; node details, neighbours and gradient flow in tabs on the
right, above the findings list. It composes the widgets and routes their messages; the work of
each view lives in its widget.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static, TabbedContent, TabPane

from graphscope.health import Health
from graphscope.errors import EngineError
from graphscope.model import Finding, Graph, fmt_count
from graphscope.tui.outline import SearchIndex, neighbourhood
from graphscope.tui.widgets.details import NodeDetails
from graphscope.tui.widgets.findings import FindingsList
from graphscope.tui.widgets.flow import GradientFlow, flow_csv, layers_of
from graphscope.tui.widgets.graph_tree import GraphTree
from graphscope.tui.widgets.local_graph import LocalGraph

TABS = ("tab-node", "tab-local", "tab-flow")


def free_path(path: Path) -> Path:
    """``path``, or ``name-2.svg``, ``name-3.svg``, ... when it exists: export never overwrites."""
    k = 2
    found = path
    while found.exists():
        found = path.with_name(f"{path.stem}-{k}{path.suffix}")
        k += 1
    return found


def headline(graph: Graph, source: str) -> str:
    """The header's line for a capture: findings first (a narrow header cuts the end, and the
    counts are what matter most), then its size."""
    return (f"{source}: {graph.severity_counts()} · {fmt_count(len(graph), 'node')}, "
            f"{fmt_count(len(graph.param_nodes), 'parameter')}, "
            f"{fmt_count(graph.passes, 'backward pass')}")


def render_svg(graph: Graph, path: Path) -> Path:
    """Draw ``graph`` to ``path`` with the shared exporter (imported only when asked)."""
    from graphscope import export

    export.render_graph(graph, path)
    return path


class MainScreen(Screen[None]):
    """Everything about one graph at once."""

    BINDINGS = [
        Binding("slash", "search", "Search"),
        Binding("f", "findings", "Findings"),
        Binding("n", "finding(1)", "Next", key_display="n/N"),
        Binding("N", "finding(-1)", "Previous finding", show=False),
        Binding("g", "grouping", "Group"),
        Binding("e", "export", "Export"),
        Binding("1", "tab(0)", "Node", show=False),
        Binding("2", "tab(1)", "Neighbours", show=False),
        Binding("3", "tab(2)", "Flow", show=False),
        Binding("escape", "close_search", "Close search", show=False),
    ]

    def __init__(self, graph: Graph, *, stem: str = "graph", folder: Path | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.folder = folder  # where exports go: the capture's folder (None: the current one)
        # One judgement for every widget: the tree, details, neighbours and flow colour from it,
        # and the findings listed are the ones it gives.
        self.health = Health.of(graph)
        self.stem = stem
        self._search = SearchIndex(graph)
        # n/N step through every node each finding names (its own node first), finding by
        # finding in the list's order: a 20-layer fade is one finding with 33 stops.
        self._stop = -1
        self._selected: int | None = None

    def compose(self):
        yield Header()
        lesson = self.graph.meta.get("lesson")
        if lesson:  # a demo's "what to look for", where the user is looking (esc hides it)
            yield Static(Text.assemble(("look for: ", "bold"), str(lesson),
                                       ("  (esc hides this)", "dim")), id="lesson")
        with Horizontal(id="body"):
            yield GraphTree(self.graph, health=self.health, id="tree")
            with Vertical(id="side"):
                with TabbedContent(id="tabs"):
                    with TabPane("Node", id="tab-node"):
                        yield NodeDetails(self.graph, health=self.health, id="details")
                    with TabPane("Neighbours", id="tab-local"):
                        yield LocalGraph(self.graph, health=self.health, id="local")
                    with TabPane("Gradient flow", id="tab-flow"):
                        yield GradientFlow(layers_of(self.graph, self.health), health=self.health,
                                           id="flow")
                yield FindingsList(self.graph.findings, id="findings")
        yield Input(placeholder="search ops and parameter names (enter: next match, esc: close)",
                    id="search")
        yield Footer()

    def on_mount(self) -> None:
        tree = self.query_one(GraphTree)
        if self.graph.nodes:
            tree.reveal(self.graph.roots[0] if self.graph.roots else 0)
        tree.focus()

    # -- routing ------------------------------------------------------------------------------

    @on(GraphTree.Selected)
    def _selected_node(self, event: GraphTree.Selected) -> None:
        self._selected = event.node
        self.query_one(NodeDetails).node = event.node
        if self.query_one(TabbedContent).active == "tab-local":
            self.query_one(LocalGraph).node = event.node

    @on(TabbedContent.TabActivated)
    def _tab_shown(self, event: TabbedContent.TabActivated) -> None:
        # The neighbourhood is laid out only while visible: moving the cursor stays cheap.
        if event.pane.id == "tab-local":
            self.query_one(LocalGraph).node = self._selected

    @on(FindingsList.Chosen)
    def _finding_chosen(self, event: FindingsList.Chosen) -> None:
        index = self.query_one(FindingsList).findings.index(event.finding)
        self._stop = self._stops().index((index, event.finding.node))
        self._jump_to(event.finding)

    @on(LocalGraph.Clicked)
    def _neighbour_clicked(self, event: LocalGraph.Clicked) -> None:
        self.query_one(GraphTree).reveal(event.node)

    @on(Input.Changed, "#search")
    def _search_typed(self, event: Input.Changed) -> None:
        self._count_matches(event.value, None)

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        if not event.value.strip():
            return
        found = self._search.next(event.value, self._selected)
        self._count_matches(event.value, found)
        if found is None:
            self.app.bell()  # the box's title says so; a toast would cover the box at 80x24
        else:
            self.query_one(GraphTree).reveal(found)

    def _count_matches(self, query: str, found: int | None) -> None:
        """The search box's title: how many nodes match, and which one is selected."""
        hits = self._search.matches(query)
        title = ("" if not query.strip() else f"no matches for {query.strip()!r}" if not hits
                 else fmt_count(len(hits), "match"))
        if found is not None and hits:
            title = f"{hits.index(found) + 1} of {title}"
        self.query_one("#search", Input).border_title = title

    def _stops(self) -> list[tuple[int, int | None]]:
        """(finding index, node) for each node of each listed finding, its own node first."""
        return [
            (i, nid)
            for i, f in enumerate(self.query_one(FindingsList).findings)
            for nid in dict.fromkeys((f.node, *f.nodes))
        ]

    def _jump_to(self, finding: Finding, node: int | None = None) -> None:
        node = finding.node if node is None else node
        if node is None:
            what = f"parameter {finding.param}" if finding.param else "this finding"
            self.notify(f"{what} has no node in the graph: {finding.message}", severity="warning")
            return
        self.query_one(GraphTree).reveal(node)

    # -- actions ------------------------------------------------------------------------------

    def action_search(self) -> None:
        box = self.query_one("#search", Input)
        box.add_class("-shown")
        box.focus()

    def action_close_search(self) -> None:
        box = self.query_one("#search", Input)
        if box.has_class("-shown"):
            box.remove_class("-shown")
            self.query_one(GraphTree).focus()
        elif self.query_one(FindingsList).has_focus:
            self.query_one(GraphTree).focus()
        elif lesson := self.query("#lesson"):
            lesson.remove()

    def action_findings(self) -> None:
        """Into the findings list (enter jumps to one); pressed there, back to the tree."""
        findings = self.query_one(FindingsList)
        if findings.has_focus:
            self.query_one(GraphTree).focus()
            return
        if not findings.findings:
            self.notify("no findings in this capture", timeout=2)
            return
        findings.focus()
        if findings.highlighted is None and findings.option_count:
            findings.highlighted = 0

    def action_finding(self, step: int) -> None:
        findings = self.query_one(FindingsList)
        if not findings.findings:
            self.notify("no findings in this capture")
            return
        stops = self._stops()
        start = self._stop if self._stop >= 0 else (-1 if step > 0 else 0)
        self._stop = (start + step) % len(stops)
        index, node = stops[self._stop]
        findings.highlighted = index
        self._jump_to(findings.findings[index], node)

    def action_grouping(self) -> None:
        tree = self.query_one(GraphTree)
        tree.grouping = "module" if tree.grouping == "backward" else "backward"
        self.notify(f"tree grouped {tree.border_title}", timeout=2)

    def action_tab(self, index: int) -> None:
        self.query_one(TabbedContent).active = TABS[index]

    def action_export(self) -> None:
        """Export what the current tab shows, next to the capture, never over an existing file:
        the graph (node tab), the neighbourhood (neighbours tab) or the layers as CSV (flow)."""
        folder = self.folder or Path.cwd()
        tab = self.query_one(TabbedContent).active
        if tab == "tab-flow":
            path = free_path(folder / f"{self.stem}-flow.csv")
            try:
                path.write_text(flow_csv(layers_of(self.graph, self.health)), encoding="utf-8")
            except OSError as exc:
                self.notify(f"cannot write {path}: {exc.strerror or exc}", title="cannot export",
                            severity="error", timeout=10)
            else:
                self.notify(str(path), title="exported the gradient flow")
            return
        graph, path = self.graph, folder / f"{self.stem}.svg"
        if tab == "tab-local" and self._selected is not None:
            prods, cons, _, _ = neighbourhood(self.graph, self._selected, limit=50)
            graph = self.graph.subgraph([self._selected, *prods, *cons])
            path = folder / f"{self.stem}-node{self._selected}.svg"
        path = free_path(path)
        self.notify(f"exporting {fmt_count(len(graph.nodes), 'node')} to {path.name} …", timeout=2)
        self._export(graph, path)

    @work(thread=True, exclusive=True, group="export")
    def _export(self, graph: Graph, path: Path) -> None:
        try:
            render_svg(graph, path)
        except EngineError as exc:
            self.app.call_from_thread(self.notify, str(exc), title="cannot export",
                                      severity="error", timeout=10)
        except Exception as exc:  # noqa: BLE001 - shown to the user, the app keeps running
            self.app.call_from_thread(self.notify, f"{type(exc).__name__}: {exc}",
                                      title="export failed", severity="error", timeout=10)
        else:
            self.app.call_from_thread(self.notify, str(path), title="exported")
