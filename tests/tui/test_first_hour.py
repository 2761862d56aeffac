"""What a new user met in a first hour with the inspector (issue 15), each fixed and kept so:
the tree's gradient before the module (a narrow tree cut it off), the help of the screen it
opens over (and scrollable at 80x24), an empty findings panel as one line, search over what the
tree shows, a run's capture titled with its step, the source line folded whole, the timeline's
y axis numbered at 80x24, and an LSTM node's role in the details."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console
from textual.containers import VerticalScroll
from textual.geometry import Region
from textual.widgets import Input

from graphscope.export import recurrent
from graphscope.model import LEAF, PARAM, Source
from graphscope.runs import open_run
from graphscope.tui.app import InspectorApp
from graphscope.tui.screens.help import KEYS, HelpScreen
from graphscope.tui.screens.main import MainScreen
from graphscope.tui.screens.timeline import TIMELINE_KEYS, TimelineScreen
from graphscope.tui.widgets.curves import Curves
from graphscope.tui.widgets.details import NodeDetails, _source, describe, lstm_roles
from graphscope.tui.widgets.findings import FindingsList
from graphscope.tui.widgets.flow import _PowerOfTen
from graphscope.tui.widgets.graph_tree import GraphTree
from tests.graphs import Builder, mlp, sigmoid_mlp
from tests.tui.runs import diverging_run


def _plain(renderable, width: int = 100) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(renderable)
    return console.export_text()


def lstm_cell(steps: int = 2):
    """An LSTM cell written as ops over ``steps`` steps, the shape ``recurrent`` recognises:
    per step a split of the gate vector into sigmoid i, f, o and tanh g, c_t = f*c_{t-1} + i*g,
    h_t = o * tanh(c_t), fed to the next step's gates; the loss sums the last h. Step t's nodes
    come before step t-1's (the walk meets later ops first), c_0 is a leaf. Returns the graph and, per step from the first,
    the ids ``{role: node}``."""
    b = Builder()
    loss = b.add("SumBackward0", "sum", shapes=((),), root=True, rms=1.0)
    below, ids = loss, []
    for t in range(steps, 0, -1):
        m = "cell"
        h = b.add("MulBackward0", "mul", module=m, rms=0.5)
        o = b.add("SigmoidBackward0", "sigmoid", module=m, rms=0.1)
        th = b.add("TanhBackward0", "tanh", module=m, rms=0.2)
        c = b.add("AddBackward0", "add", module=m, rms=0.3)
        mf = b.add("MulBackward0", "mul", module=m, rms=0.3)
        mi = b.add("MulBackward0", "mul", module=m, rms=0.3)
        f = b.add("SigmoidBackward0", "sigmoid", module=m, rms=0.05)
        i = b.add("SigmoidBackward0", "sigmoid", module=m, rms=0.05)
        g = b.add("TanhBackward0", "tanh", module=m, rms=0.05)
        split = b.add("SplitBackward0", "split", module=m, rms=0.02)
        if below is not None:
            b.edge(h, below)
        b.edge(o, h), b.edge(th, h, input_nr=1)
        b.edge(c, th)
        b.edge(mf, c), b.edge(mi, c, input_nr=1)
        b.edge(f, mf)
        b.edge(i, mi), b.edge(g, mi, input_nr=1)
        for k, gate in enumerate((i, f, g, o)):
            b.edge(split, gate, output_nr=k)
        ids.append({"hidden": h, "output_gate": o, "cell_tanh": th, "cell": c, "forget_mul": mf,
                    "input_mul": mi, "forget_gate": f, "input_gate": i, "candidate": g,
                    "split": split})
        below = None
    # c_{t-1} of each step is the cell of the step before, h_{t-1} feeds its gate vector.
    for later, earlier in zip(ids, ids[1:]):
        b.edge(earlier["cell"], later["forget_mul"], input_nr=1)
        b.edge(earlier["hidden"], later["split"], input_nr=1)
    c0 = b.add("AccumulateGrad", "c0", kind=LEAF, rms=0.01)
    b.edge(c0, ids[-1]["forget_mul"], input_nr=1)
    x = b.add("AccumulateGrad", "gates", kind=LEAF, rms=0.01)
    for step in ids:
        b.edge(x, step["split"])
    graph = b.graph()
    graph.meta["module_classes"] = {"cell": "LSTMCell"}
    return graph, ids[::-1]


# -- the tree ------------------------------------------------------------------------------------


def test_tree_line_puts_the_gradient_before_the_module(drive):
    """At 80x24 a long op, shape or module cut the RMS off the line: the number comes right after
    the op's name, and grouped by module (the module is the heading) the lines leave the module out."""
    async def steps(pilot):
        tree = pilot.app.screen.query_one(GraphTree)
        line = tree._label_for(1).plain  # addmm in fc2
        assert line.index("● 0.3") < line.index("(3, 4)") < line.index("fc2")
        await pilot.press("g")
        await pilot.pause()
        assert tree.grouping == "module"
        assert "fc2" not in tree._label_for(1).plain
        assert "● 0.3" in tree._label_for(1).plain
    drive(mlp(), steps, size=(80, 24))


def test_tree_line_names_the_modules_class(drive):
    """A Sequential's ops showed their module as a bare '38'; with the class recorded the line
    ends '38 (Linear)'."""
    graph = mlp()
    graph.nodes[1].module = "38"
    graph.meta["module_classes"] = {"38": "Linear"}

    async def steps(pilot):
        line = pilot.app.screen.query_one(GraphTree)._label_for(1).plain
        assert line.endswith("  38 (Linear)")
    drive(graph, steps)


# -- help ----------------------------------------------------------------------------------------


def test_help_on_the_timeline_lists_the_timeline_keys(tmp_path, drive):
    """? on the timeline listed the graph tree's keys (/, f, g ...); it lists its own."""
    path = diverging_run(tmp_path / "run")

    async def steps(pilot):
        assert isinstance(pilot.app.screen, TimelineScreen)
        await pilot.press("question_mark")
        await pilot.pause()
        help_ = pilot.app.screen
        assert isinstance(help_, HelpScreen)
        assert help_.keys == TIMELINE_KEYS
        assert "c  C" in dict(help_.keys) and "/" not in dict(help_.keys)
        assert "timeline" in help_.reading
    with open_run(path) as run:
        drive(InspectorApp.for_run(run, source="run"), steps, size=(80, 24))


def test_help_scrolls_with_j_at_80x24(drive):
    """At 80x24 the help is taller than its box: it has the focus, j scrolls it, and the border
    says how; the graph's help lists the graph's keys."""
    async def steps(pilot):
        await pilot.press("question_mark")
        await pilot.pause()
        assert pilot.app.screen.keys == KEYS
        box = pilot.app.screen.query_one("#help", VerticalScroll)
        assert box.has_focus
        assert box.max_scroll_y > 0
        assert "scroll" in box.border_subtitle
        await pilot.press("j", "j", "j")
        await pilot.pause()
        assert box.scroll_y == 3
        await pilot.press("k")
        await pilot.pause()
        assert box.scroll_y == 2
    drive(sigmoid_mlp(), steps, size=(80, 24))


# -- findings ------------------------------------------------------------------------------------


def test_no_findings_is_one_line_not_an_empty_box(drive):
    """A capture without findings showed a 5-9 row empty box: it is 3 rows with one line saying
    so, and f says there is nothing rather than focusing an empty list."""
    async def steps(pilot):
        box = pilot.app.screen.query_one(FindingsList)
        assert not box.findings and box.has_class("-empty")
        assert box.size.height == 1 and box.outer_size.height == 3
        assert "flagged nothing" in str(box.get_option_at_index(0).prompt)
        await pilot.press("f")
        await pilot.pause()
        assert not box.has_focus
        assert [n.message for n in pilot.app._notifications] == ["no findings in this capture"]
        await pilot.press("enter")  # on the tree: nothing chosen, nothing crashes
        await pilot.pause()
    app = drive(mlp(), steps, size=(80, 24))
    assert app.crash is None


def test_findings_box_keeps_its_size_with_findings(drive):
    """With findings the list keeps its rows (the -empty size is only for none)."""
    async def steps(pilot):
        box = pilot.app.screen.query_one(FindingsList)
        assert box.findings and not box.has_class("-empty")
        assert box.outer_size.height == 5
    drive(sigmoid_mlp(), steps, size=(80, 24))


# -- search --------------------------------------------------------------------------------------


def test_search_finds_module_classes_titles_and_variables(drive):
    """'linear' found nothing in a model of nn.Linear layers: the module's class, the title the
    tree shows and the variable name are searched too."""
    graph = mlp()
    graph.meta["module_classes"] = {"fc1": "Linear", "fc2": "Linear", "act": "Sigmoid"}
    graph.nodes[0].var_name = "loss"

    async def steps(pilot):
        box = pilot.app.screen.query_one("#search", Input)
        search = pilot.app.screen._search
        # ops and parameters of fc1 and fc2: the two addmm and the four parameters
        assert search.matches("linear") == [1, 3, 4, 5, 6, 7]
        assert search.matches("mse_loss") == [0]
        assert search.matches("loss") == [0]
        await pilot.press("slash", *"linear")
        await pilot.pause()
        assert box.border_title == "6 matches"
    drive(graph, steps)


# -- a run's capture -----------------------------------------------------------------------------


def test_a_runs_capture_is_titled_with_its_step(tmp_path, drive):
    """The graph opened from the timeline kept the run's header (steps, captures): it names the
    step and the capture's own counts; back on the timeline the run's header returns."""
    path = diverging_run(tmp_path / "run")

    async def steps(pilot):
        run_title = pilot.app.sub_title
        await pilot.press("home", "c")
        await pilot.pause()
        step = pilot.app.screen.query_one("#heatmap").cursor
        await pilot.press("enter")
        await pilot.pause()
        screen = pilot.app.screen
        assert isinstance(screen, MainScreen)
        assert screen.sub_title.startswith(f"run step {step}: ")
        assert "node" in screen.sub_title and "steps" not in screen.sub_title
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(pilot.app.screen, TimelineScreen)
        assert pilot.app.screen.sub_title is None and pilot.app.sub_title == run_title
    with open_run(path) as run:
        drive(InspectorApp.for_run(run, source="run"), steps)


# -- details -------------------------------------------------------------------------------------


def test_source_keeps_file_and_line_together():
    """'graphscope/demos/models.py:65' folded as 'models.py:6' / '5 in' in a narrow panel: the
    file's name, line and function come first, its folder under them."""
    text = _source(Source("graphscope/demos/models.py", 65, "forward"))
    first, folder = text.plain.split("\n")
    assert first == "models.py:65 in forward"
    assert folder.rstrip("/\\") == str(Path("graphscope/demos"))
    assert _source(Source("train.py", 3, "f")).plain == "train.py:3 in f"


def test_details_name_an_lstm_nodes_role_and_step():
    """A node of an LSTM cell written as ops says what it is in its step: 'forget gate f
    (sigmoid), step 2 of 2'; the cell state adds its gradient and what it carries back."""
    graph, ids = lstm_cell(2)
    steps = recurrent.find_lstm_steps(graph)
    assert [(s.index, s.forget_gate) for s in steps] == [(1, ids[0]["forget_gate"]),
                                                          (2, ids[1]["forget_gate"])]
    roles = lstm_roles(graph)
    text = _plain(describe(graph, ids[1]["forget_gate"], lstm=roles))
    assert "LSTM" in text and "forget gate f (sigmoid), step 2 of 2" in text
    assert "in cell" not in text  # the module row above already says cell (LSTMCell)
    text = _plain(describe(graph, ids[0]["cell"], lstm=roles))
    assert "cell state c1 = f*c0 + i*g, step 1 of 2" in text
    assert "gradient at c1: rms 0.3" in text
    text = _plain(describe(graph, ids[1]["hidden"], lstm=roles))
    assert "h2 = o * tanh(c2), step 2 of 2" in text
    # a node of no step has no LSTM row
    assert "LSTM" not in _plain(describe(graph, 0, lstm=roles))


def test_details_panel_shows_the_lstm_role(drive):
    """The panel finds the steps once and shows the role of the node under the cursor."""
    graph, ids = lstm_cell(2)

    async def steps(pilot):
        pilot.app.screen.query_one(GraphTree).reveal(ids[0]["input_gate"])
        await pilot.pause()
        body = pilot.app.screen.query_one("#details-body")
        assert "input gate i (sigmoid), step 1 of 2" in _plain(body.content)
    drive(graph, steps)


def test_no_lstm_no_row():
    """An MLP's nodes have no LSTM row."""
    graph = mlp()
    assert lstm_roles(graph) == {}
    assert "LSTM" not in _plain(describe(graph, 2, lstm=lstm_roles(graph)))


# -- the timeline's axis -------------------------------------------------------------------------


@pytest.mark.parametrize("lo, hi, labels", [
    (-0.6, 0.1, ["5e-1", "1e+0"]),  # a loss between 0.25 and 1.2: under one decade
    (2.1, 2.9, ["2e+2", "5e+2"]),
    (-6.2, 1.3, ["1e-6", "1e-5", "1e-4", "1e-3", "1e-2", "1e-1", "1e+0", "1e+1"]),
])
def test_y_axis_has_numbers_under_a_decade(lo, hi, labels):
    """A window of less than two decades had one power of ten or none: 1, 2, 5 of each."""
    ticks = _PowerOfTen()
    got = ticks.get_ticks(lo, hi)
    assert [t.strip() for t in ticks.get_labels_for_ticks(got)] == labels


def test_timeline_curves_have_y_numbers_at_80x24(tmp_path, drive, monkeypatch):
    """At 80x24 the curves' y axis had tick marks and no numbers: they were drawn before the
    margin took the width of the heatmap's names (16 for a model's 'layers.3.norm'), and the
    widened margin came up blank. The labels are there."""
    import graphscope.tui.widgets.curves as curves_module

    monkeypatch.setattr(curves_module, "label_width", lambda width, names: 16)
    path = diverging_run(tmp_path / "run", steps=30, diverge=10**6, nan_at=10**6)  # healthy

    async def steps(pilot):
        await pilot.pause(0.2)
        curves = pilot.app.screen.query_one(Curves)
        assert curves.margin_left == 16
        margin = curves.query_one("#margin-left")
        lines = ["".join(seg.text for seg in strip)
                 for strip in margin.render_lines(Region(0, 0, margin.size.width, margin.size.height))]
        numbers = [line.strip() for line in lines if line.strip()]
        assert len(numbers) >= 2 and all("e" in n for n in numbers)
    with open_run(path) as run:
        drive(InspectorApp.for_run(run, source="run"), steps, size=(80, 24))


def test_details_lstm_roles_found_once(drive, monkeypatch):
    """Moving the cursor does not search the graph for LSTM steps again."""
    calls = []
    real = recurrent.find_lstm_steps
    monkeypatch.setattr(recurrent, "find_lstm_steps", lambda g: calls.append(1) or real(g))
    graph, _ = lstm_cell(2)

    async def steps(pilot):
        await pilot.press("j", "j", "j")
        await pilot.pause()
        assert pilot.app.screen.query_one(NodeDetails)._lstm
    drive(graph, steps)
    assert len(calls) == 1


def test_flow_legend_cuts_long_names_at_their_start(drive):
    """At 80x24 'encoder.layers.0.self_attn.in_proj_weight' and its bias were both cut to
    'encoder.layers.0.…': names lose their start, where a layer's parameters agree, so each
    parameter's own ending shows (and at 200 columns the whole name)."""
    b = Builder()
    loss = b.add("SumBackward0", "sum", shapes=((),), root=True, rms=1.0)
    mm = b.add("AddmmBackward0", "addmm", module="encoder.layers.0.self_attn", rms=0.1)
    b.edge(mm, loss)
    for k, p in enumerate(("in_proj_weight", "in_proj_bias")):
        name = f"encoder.layers.0.self_attn.{p}"
        b.edge(b.add("AccumulateGrad", name, kind=PARAM, names=(name,),
                     module="encoder.layers.0.self_attn", rms=0.01), mm, input_nr=k + 1)
    graph = b.graph()

    def check(size, whole):
        async def steps(pilot):
            await pilot.press("3")
            await pilot.pause()
            legend = _plain(pilot.app.screen.query_one("#flow-names").content, width=size[0])
            if whole:
                assert "encoder.layers.0.self_attn.in_proj_weight" in legend, legend
            else:
                assert "…" in legend and "in_proj_weight" in legend and "in_proj_bias" in legend, legend
                assert "encoder.layers.0.…" not in legend
            assert "dotted lines: vanishing ≤" in legend  # the plot's limit lines have a key
        drive(graph, steps, size=size)
    check((80, 24), whole=False)
    check((200, 50), whole=True)
