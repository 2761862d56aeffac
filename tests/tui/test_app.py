"""The inspector driven with Pilot: the widget tree, navigation, search, findings, export."""

from __future__ import annotations


import pytest
from textual.widgets import Input, Static, TabbedContent
from textual_plot.plot_widget import ScatterPlot

from graphscope.errors import EngineError
from graphscope.tui.screens.help import HelpScreen
from graphscope.tui.widgets.details import NodeDetails
from graphscope.tui.widgets.findings import FindingsList
from graphscope.tui.widgets import flow
from graphscope.tui.widgets.flow import GradientFlow
from graphscope.tui.widgets.graph_tree import CHUNK, GraphTree
from graphscope.tui.widgets.local_graph import LocalGraph
from tests.graphs import chain, diamond, mlp, sigmoid_mlp, transformer


def _lines(tree: GraphTree):
    """(depth, data) of every loaded line, depth first."""
    out = []
    stack = [(0, c) for c in reversed(tree.root.children)]
    while stack:
        d, tn = stack.pop()
        out.append((d, tn.data))
        stack += [(d + 1, c) for c in reversed(tn.children)]
    return out


def test_main_screen_shows_tree_details_findings_at_once(drive):
    """On open: tree on the root, its details, and the findings list are all on screen."""
    async def steps(pilot):
        screen = pilot.app.screen
        tree = screen.query_one(GraphTree)
        assert tree.current == 0 and tree.has_focus
        assert screen.query_one(NodeDetails).node == 0
        assert screen.query_one(FindingsList).option_count == 3
        for w in (tree, screen.query_one(NodeDetails), screen.query_one(FindingsList)):
            assert w.region.area > 0
    drive(sigmoid_mlp(), steps)


def test_tree_children_are_added_only_on_expand(drive):
    """An addmm's side inputs are not in the tree until it is expanded."""
    async def steps(pilot):
        tree = pilot.app.screen.query_one(GraphTree)
        addmm = tree.root.children[2]
        assert addmm.data.node == 2 and addmm.allow_expand and not addmm.children
        await pilot.press("j", "j", "l")
        await pilot.pause()
        assert [c.data.node for c in addmm.children] == [3, 4, 5]
        assert len(_lines(tree)) == 11 + 3  # the spine, plus the opened addmm's inputs
    drive(sigmoid_mlp(), steps)


def test_vim_keys_move_and_collapse(drive):
    """j/k move the cursor, l expands, h collapses then goes to the parent."""
    async def steps(pilot):
        tree = pilot.app.screen.query_one(GraphTree)
        await pilot.press("j", "j", "k")
        assert tree.current == 1
        await pilot.press("j", "l", "l")
        assert tree.current == 3
        await pilot.press("h")
        assert tree.current == 2
        await pilot.press("h")
        assert not tree.cursor_node.is_expanded
    drive(sigmoid_mlp(), steps)


def test_shared_input_is_a_reference_that_jumps(drive):
    """A node with two consumers appears once; the other use is a ↪ line that jumps to it."""
    async def steps(pilot):
        tree = pilot.app.screen.query_one(GraphTree)
        await pilot.press("l", "l", "l", "l")  # add: open, onto sin, open, onto its reference
        await pilot.pause()
        lines = _lines(tree)
        assert [d.node for _, d in lines if d.kind == "node"].count(3) == 1
        assert [d.node for _, d in lines if d.kind == "ref"] == [3]
        assert tree.cursor_node.data.kind == "ref"
        assert pilot.app.screen.query_one(NodeDetails).node == 3
        await pilot.press("enter")
        assert tree.cursor_node.data.kind == "node" and tree.current == 3
    drive(diamond(), steps)


def test_search_moves_selection_to_next_match(drive):
    """'/' then a query selects the first match; enter again moves to the next one."""
    async def steps(pilot):
        tree = pilot.app.screen.query_one(GraphTree)
        await pilot.press("slash")
        assert pilot.app.screen.query_one("#search", Input).has_focus
        await pilot.press(*"fc1.", "enter")
        await pilot.pause()
        first = tree.current
        assert pilot.app.graph.nodes[first].module == "fc1"
        await pilot.press("enter")
        await pilot.pause()
        assert tree.current != first and pilot.app.graph.nodes[tree.current].module == "fc1"
        await pilot.press("escape")
        assert tree.has_focus
    drive(sigmoid_mlp(), steps)


def test_n_and_N_cycle_findings_and_select_their_nodes(drive):
    """n goes to the worst finding's node first, then on; N goes back."""
    async def steps(pilot):
        tree = pilot.app.screen.query_one(GraphTree)
        await pilot.press("n")
        assert tree.current == 5  # the ERROR on fc3.weight, nested under an addmm
        await pilot.press("n")
        assert tree.current == 20  # fc0.weight, deep in the tree
        assert pilot.app.screen.query_one(FindingsList).highlighted == 1
        await pilot.press("N")
        assert tree.current == 5
    drive(sigmoid_mlp(), steps)


def test_choosing_a_finding_jumps_to_its_node(drive):
    """Enter on a finding in the list selects its node in the tree."""
    async def steps(pilot):
        findings = pilot.app.screen.query_one(FindingsList)
        findings.focus()
        findings.highlighted = 1
        await pilot.press("enter")
        await pilot.pause()
        assert pilot.app.screen.query_one(GraphTree).current == 20
    drive(sigmoid_mlp(), steps)


def test_finding_without_node_says_so(drive):
    """A finding about an unreached parameter gives a notice, not a crash."""
    async def steps(pilot):
        await pilot.press("N")  # wraps to the last: the INFO without a node
        await pilot.pause()
        assert any("head.weight" in n.message for n in pilot.app._notifications)
    drive(sigmoid_mlp(), steps)


def test_grouping_toggle_regroups_and_keeps_selection(drive):
    """g regroups the tree by module and back, keeping the selected node."""
    async def steps(pilot):
        tree = pilot.app.screen.query_one(GraphTree)
        await pilot.press("n", "g")
        await pilot.pause()
        assert tree.grouping == "module" and tree.current == 5
        top = [tn.data for tn in tree.root.children]
        assert [d.module for d in top] == ["fc0", "fc1", "fc2", "fc3", "(no module)"]
        await pilot.press("g")
        assert tree.grouping == "backward" and tree.current == 5
    drive(sigmoid_mlp(), steps)


def test_details_show_the_selected_node(drive):
    """The details name the op, module, source, shape, gradient, neighbours and findings."""
    async def steps(pilot):
        await pilot.press("n")
        await pilot.pause()
        body = pilot.app.screen.query_one("#details-body")
        text = _plain(body)
        for part in ("fc3.weight", "AccumulateGrad", "fc3", "(8, 4)", "float32",
                     "norm", "t #4", "NaN in fc3.weight gradient", "lower the learning rate"):
            assert part in text, part
    drive(sigmoid_mlp(), steps)


def _plain(static) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(static.content if hasattr(static, "content") else static.renderable)
    return console.export_text()


def _series(plot) -> dict[str, list[float]]:
    """The flow plot's x values by series label (the weights' line, the biases' marks, ...)."""
    return {label: [float(x) for x in d.x] for d, label in zip(plot._datasets, plot._labels) if label}


def test_gradient_flow_plots_layers_in_forward_order(drive):
    """The flow tab plots one point per layer (module), first layer first, and lists each
    layer's weight and bias under its number."""
    async def steps(pilot):
        await pilot.press("3")
        await pilot.pause()
        flow = pilot.app.screen.query_one(GradientFlow)
        legend = _plain(flow.query_one("#flow-names", Static))
        names = [f"fc{k}.{p}" for k in range(4) for p in ("weight", "bias")]
        at = [legend.find(name) for name in names]
        assert -1 not in at and at == sorted(at), legend
        assert "1 ● fc0.weight" in legend and "◆ fc0.bias" in legend
        plot = flow.query_one("#flow-plot")
        assert plot.region.area > 0
        assert _series(plot)["weights"] == [1.0, 2.0, 3.0, 4.0]
    drive(sigmoid_mlp(), steps)


def test_gradient_flow_marks_biases_apart_from_weights(drive):
    """mlp(): two layers, two weight points on the line, each bias a ◆ beside its layer, and
    the layers named on the x axis."""
    async def steps(pilot):
        await pilot.press("3")
        await pilot.pause()
        plot = pilot.app.screen.query_one("#flow-plot")
        series = _series(plot)
        assert series["weights"] == [1.0, 2.0]
        biases = [d for d in plot._datasets if isinstance(d, ScatterPlot) and d.marker == flow.BIAS]
        assert sorted(x for d in biases for x in d.x) == [1 + flow.BIAS_SHIFT, 2 + flow.BIAS_SHIFT]
        assert series["biases"]
        names = [layer.name for layer in pilot.app.screen.query_one(GradientFlow)._layers]
        assert sorted(names) == ["fc1", "fc2"]
        assert plot._x_formatter.get_labels_for_ticks([1.0, 2.0]) == names
    drive(mlp(), steps)


def test_gradient_flow_on_a_transformer_plots_modules_not_parameters(drive):
    """transformer(): one point per module (embed, each block's attn and mlp), no zigzag of
    separate parameters, and the layers the legend leaves out are counted and explained."""
    graph = transformer(layers=30)
    modules = 1 + 2 * 30

    async def steps(pilot):
        await pilot.press("3")
        await pilot.pause()
        gf = pilot.app.screen.query_one(GradientFlow)
        plot = gf.query_one("#flow-plot")
        assert _series(plot)["weights"] == [float(i) for i in range(1, modules + 1)]
        legend = _plain(gf.query_one("#flow-names", Static))
        shown = len(gf._shown())
        assert shown < modules
        assert f"… {modules - shown} of {modules} layers not shown: listed are the first" in legend
    drive(graph, steps)


def test_flow_x_axis_names_layers_where_they_fit():
    """Names where they fit, without their shared prefix when that fits, else numbers."""
    names = [f"encoder.layers.{i}" for i in range(3)]
    assert flow.x_ticks(names, 100) == {1: names[0], 2: names[1], 3: names[2]}
    assert flow.x_ticks(names, 20) == {1: "0", 2: "1", 3: "2"}
    assert flow.x_ticks([f"l{i}" for i in range(100)], 50) == {i: str(i) for i in range(1, 101, 10)}


def test_neighbours_tab_draws_the_selected_node(drive):
    """The neighbours tab follows the selection once shown."""
    async def steps(pilot):
        await pilot.press("2", "j")
        await pilot.pause()
        local = pilot.app.screen.query_one(LocalGraph)
        assert pilot.app.screen.query_one(TabbedContent).active == "tab-local"
        assert local.node == 1
        assert set(local._graph_nodes) == {0, 1, 2}
    drive(sigmoid_mlp(), steps)


@pytest.fixture
def use_render(monkeypatch, tmp_path):
    """Install ``render`` as graphscope.export.render_graph and work in a temporary directory."""
    def install(render):
        monkeypatch.setattr("graphscope.export.render_graph", render)
        monkeypatch.chdir(tmp_path)
        return tmp_path
    return install


async def _press_and_wait(pilot, *keys):
    await pilot.press(*keys)
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def test_export_writes_svg_through_the_exporter(drive, use_render):
    """e renders the graph with graphscope.export.render_graph and notifies the path."""
    calls = []

    def render(graph, path):
        calls.append(len(graph.nodes))
        path.write_text("<svg/>")
        return path

    tmp_path = use_render(render)

    async def steps(pilot):
        await _press_and_wait(pilot, "e")
        await _press_and_wait(pilot, "2", "e")  # on the neighbours tab: just the neighbourhood
        assert any(str(tmp_path / "test.svg") in n.message for n in pilot.app._notifications)
    drive(sigmoid_mlp(), steps)
    assert (tmp_path / "test.svg").read_text() == "<svg/>"
    assert (tmp_path / "test-node0.svg").exists()
    assert calls == [22, 2]


def test_export_draws_a_real_svg(drive, monkeypatch, tmp_path):
    """e writes a real SVG through the installed Graphviz engine, titled by node."""
    monkeypatch.chdir(tmp_path)

    async def steps(pilot):
        await _press_and_wait(pilot, "e")
    drive(sigmoid_mlp(), steps)
    svg = (tmp_path / "test.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<title>" in svg


def test_export_without_engine_shows_the_error(drive, use_render):
    """A missing Graphviz engine is a notification with its message; the app keeps running."""
    def render(graph, path):
        raise EngineError("no Graphviz engine: install graphviz")

    use_render(render)

    async def steps(pilot):
        await _press_and_wait(pilot, "e")
        assert any("install graphviz" in n.message for n in pilot.app._notifications)
        assert pilot.app.is_running
    drive(sigmoid_mlp(), steps)


def test_help_screen_opens_and_closes(drive):
    """? shows the key reference; escape returns to the inspector."""
    async def steps(pilot):
        await pilot.press("question_mark")
        assert isinstance(pilot.app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(pilot.app.screen, HelpScreen)
    drive(sigmoid_mlp(), steps)


def test_deep_chain_loads_a_window_around_a_far_node(drive):
    """Jumping deep into a 5,000-op chain loads a window, not the whole chain."""
    async def steps(pilot):
        tree = pilot.app.screen.query_one(GraphTree)
        assert len(tree.root.children) == CHUNK + 1  # a window and a "more" line
        await pilot.press("n")  # the only finding sits at the far end
        await pilot.pause()
        assert tree.current == 4999
        kinds = [d.kind for _, d in _lines(tree)]
        assert kinds.count("node") <= 2 * CHUNK and kinds.count("more") == 1
        await pilot.press("k", "k")
        assert tree.current == 4997
    drive(chain(5000), steps)


def test_more_line_loads_the_next_chunk(drive):
    """Enter on the "… more" line loads the next lines in place."""
    async def steps(pilot):
        tree = pilot.app.screen.query_one(GraphTree)
        tree.move_cursor(tree.root.children[-1])
        await pilot.press("enter")
        await pilot.pause()
        assert tree.current == CHUNK
        assert len(tree.root.children) == 2 * CHUNK + 1
    drive(chain(1000), steps)


def test_header_puts_the_finding_counts_first(drive):
    """The header leads with the findings by severity (worst first), so 80 columns keep them."""
    async def steps(pilot):
        assert pilot.app.sub_title == ("test: 1 error, 1 warning, 1 info · 22 nodes, "
                                       "8 parameters, 1 backward pass")
    drive(sigmoid_mlp(), steps)


def test_modules_are_named_with_their_class(drive):
    """Grouped by module, a line reads 'fc0 (Linear)  6 nodes'; the details name the class too."""
    g = sigmoid_mlp()
    g.meta["module_classes"] = {f"fc{i}": "Linear" for i in range(4)}

    async def steps(pilot):
        await pilot.press("n", "g")
        await pilot.pause()
        tree = pilot.app.screen.query_one(GraphTree)
        labels = [str(tn.label) for tn in tree.root.children]
        assert labels[0].startswith("fc0 (Linear)  ") and labels[0].endswith(" nodes"), labels
        assert "module  fc3 (Linear)" in _plain(pilot.app.screen.query_one("#details-body"))
    drive(g, steps)


def test_f_focuses_the_findings_and_enter_jumps(drive):
    """f puts the keys in the findings list (first one highlighted); enter jumps; f goes back."""
    async def steps(pilot):
        screen = pilot.app.screen
        findings, tree = screen.query_one(FindingsList), screen.query_one(GraphTree)
        assert findings.border_title == "findings (3) · key f"
        await pilot.press("f")
        assert findings.has_focus and findings.highlighted == 0
        await pilot.press("down", "enter")
        await pilot.pause()
        assert tree.current == 20  # the warning's node, fc0.weight
        await pilot.press("f")
        assert tree.has_focus
        await pilot.press("f", "escape")
        assert tree.has_focus
    drive(sigmoid_mlp(), steps)


def test_help_lists_the_findings_key_and_tab():
    """The help names f (findings) and tab (move focus), the keys a new user looks for."""
    from graphscope.tui.screens.help import KEYS

    keys = dict(KEYS)
    assert "findings" in keys["f"] and "tree" in keys["tab  shift+tab"]


def test_a_demo_lesson_is_a_banner_esc_hides(drive):
    """A graph carrying a lesson (a demo) shows it above the panes; esc from the tree hides it."""
    g = sigmoid_mlp()
    g.meta["lesson"] = "the norm falls toward the input"

    async def steps(pilot):
        banner = pilot.app.screen.query_one("#lesson", Static)
        assert "look for: the norm falls toward the input" in _plain(banner)
        assert banner.region.height >= 1
        await pilot.press("escape")
        await pilot.pause()
        assert not pilot.app.screen.query("#lesson")
    drive(g, steps)


def test_no_lesson_no_banner(drive):
    """An ordinary capture has no banner."""
    async def steps(pilot):
        assert not pilot.app.screen.query("#lesson")
    drive(sigmoid_mlp(), steps)


def test_search_counts_matches_and_says_which_is_selected(drive):
    """Typing shows how many nodes match; enter shows which of them is selected, wrapping."""
    async def steps(pilot):
        box = pilot.app.screen.query_one("#search", Input)
        await pilot.press("slash", *"fc1.")
        await pilot.pause()
        hits = pilot.app.screen._search.matches("fc1.")
        assert len(hits) == 2 and box.border_title == "2 matches"
        await pilot.press("enter")
        await pilot.pause()
        assert box.border_title == "1 of 2 matches"
        await pilot.press("enter", "enter")
        await pilot.pause()
        assert box.border_title == "1 of 2 matches"  # wrapped around
        await pilot.press(*"zzz")
        await pilot.pause()
        assert box.border_title == "no matches for 'fc1.zzz'"
        await pilot.press("enter")
        await pilot.pause()
        # The title says it; a toast would sit over the box at 80x24.
        assert box.border_title == "no matches for 'fc1.zzz'"
        assert not pilot.app._notifications
    drive(sigmoid_mlp(), steps)


@pytest.mark.parametrize("size, shown", [((80, 24), 1), ((200, 50), 3)])
def test_neighbours_fit_the_pane_width(drive, monkeypatch, size, shown):
    """A narrow pane draws compact boxes, and only the inputs that fit side by side (the rest
    one '+N more' box); a wide one draws all three inputs of an addmm with their shapes."""
    drawn = []
    real = LocalGraph.set_graph
    monkeypatch.setattr(LocalGraph, "set_graph",
                        lambda self, nodes, edges, **kw: (drawn.append(nodes), real(self, nodes, edges, **kw)))

    async def steps(pilot):
        local = pilot.app.screen.query_one(LocalGraph)
        await pilot.press("2")
        pilot.app.screen.query_one(GraphTree).reveal(2)  # addmm: fc3.bias, sigmoid, t
        await pilot.pause()
        nodes = drawn[-1]
        inputs = [k for k in nodes if k in (3, 4, 6)]
        assert len(inputs) == shown and ("more-in" in nodes) == (shown < 3)
        widest = max(len(line) for k in inputs for line in nodes[k]["text"].plain.splitlines())
        boxes = len(inputs) + ("more-in" in nodes)
        assert boxes * (widest + 4) + (boxes - 1) * 11 <= local.size.width  # box + border, gap
    drive(sigmoid_mlp(), steps, size=size)


def test_flow_axis_labels_share_one_width():
    """The y-axis labels are padded to one width, so a short one cannot keep a stray digit."""
    from graphscope.tui.widgets.flow import _PowerOfTen

    labels = _PowerOfTen().get_labels_for_ticks([-1.0, -7.0, -16.0])
    assert labels == [" 1e-1", " 1e-7", "1e-16"]


def test_export_goes_next_to_the_capture_and_never_overwrites(tmp_path, monkeypatch):
    """A capture opened from a folder exports there (not the cwd); an existing file is kept and
    the export takes the next free name, which the notification gives."""
    import asyncio

    from graphscope.tui.app import InspectorApp

    def render(graph, path):
        path.write_text("<svg/>")
        return path

    monkeypatch.setattr("graphscope.export.render_graph", render)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "step.svg").write_text("keep me")
    app = InspectorApp(sigmoid_mlp(), source=str(runs / "step.json"))

    async def main():
        async with app.run_test(size=(120, 40)) as pilot:
            await _press_and_wait(pilot, "e")
            assert app.sub_title.startswith("step.json: ")
            assert any(str(runs / "step-2.svg") in n.message for n in app._notifications)

    asyncio.run(main())
    assert (runs / "step.svg").read_text() == "keep me"
    assert (runs / "step-2.svg").read_text() == "<svg/>"
    assert list(elsewhere.iterdir()) == []


def test_export_on_the_flow_tab_writes_the_layers_as_csv(drive, use_render):
    """e on the gradient-flow tab writes what it plots: one CSV row per parameter, in order."""
    tmp_path = use_render(lambda graph, path: path)

    async def steps(pilot):
        await _press_and_wait(pilot, "3", "e")
    drive(sigmoid_mlp(), steps)
    rows = (tmp_path / "test-flow.csv").read_text().splitlines()
    assert rows[0] == "layer,parameter,rms,norm,band"
    assert rows[1].startswith("1,fc0.weight,1e-08,") and rows[1].endswith(",vanishing")
    assert len(rows) == 1 + 8
