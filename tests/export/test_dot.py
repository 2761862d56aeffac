"""DOT text checked against the model it draws: nodes, edges, labels, shapes and colours."""

from __future__ import annotations

import pytest

from graphscope.export import dot as dotmod
from graphscope.export.dot import ORIGIN_COLOUR, ORIGIN_MARK, SEVERITY_COLOURS, SHAPES, to_dot
from graphscope.export.options import RenderOptions
from graphscope.formatting import BAND_COLOURS, fmt_stats, magnitude_colour
from graphscope.health import Health
from graphscope.model import LEAF, OP, PARAM, Finding, Severity
from tests import graphs
from tests.export.dotfile import parse


def test_every_node_drawn_once_with_its_label() -> None:
    """Each graph node is one DOT node ``n<id>``; ops show their short label, params their name."""
    g = graphs.mlp()
    dot = parse(to_dot(g))
    assert set(dot.drawn) == {f"n{n.id}" for n in g.nodes}
    for n in g.nodes:
        label = dot.nodes[f"n{n.id}"]["label"]
        if n.kind == PARAM:
            assert label.splitlines()[0] == n.name
        else:
            assert label == n.label


def test_edges_match_the_model() -> None:
    """One DOT edge per model edge, producer -> consumer."""
    g = graphs.mlp()
    dot = parse(to_dot(g))
    drawn = sorted((s, d) for s, d, _ in dot.edges if not s.startswith("legend"))
    assert drawn == sorted((f"n{e.src}", f"n{e.dst}") for e in g.edges)


def test_parallel_edges_kept_apart() -> None:
    """``w * w`` draws two edges from w into mul, labelled with their input positions."""
    dot = parse(to_dot(graphs.square()))
    labels = sorted(a["label"] for a in dot.between("n2", "n1"))
    assert labels == ["(3, 4)  in 0", "(3, 4)  in 1"]


def test_multi_output_edges_name_the_output() -> None:
    """Edges out of a multi-output op say which output they carry."""
    dot = parse(to_dot(graphs.unbind()))
    labels = sorted(a["label"] for a in dot.between("n1", "n0"))
    assert labels == ["(4)  out 0  in 0", "(4)  out 1  in 1"]


def test_shapes_on_edges_can_be_switched_off() -> None:
    """Edge labels carry the tensor shape (Graph.edge_shape), unless show_shapes=False."""
    g = graphs.mlp()
    assert parse(to_dot(g)).between("n4", "n3")[0]["label"] == "(4, 4)"
    assert "label" not in parse(to_dot(g, options=RenderOptions(show_shapes=False))).between("n4", "n3")[0]


def test_fill_is_the_shared_magnitude_colour() -> None:
    """Every node is filled with formatting.magnitude_colour of its gradient."""
    g = graphs.nan_origin()
    dot = parse(to_dot(g))
    for n in g.nodes:
        if n.executed:
            assert dot.nodes[f"n{n.id}"]["fillcolor"] == magnitude_colour(n, Health.of(g))
    # The scale's own values, written out: the exporter could not agree with a broken scale.
    assert dot.nodes["n3"]["fillcolor"] == "#d500f9"  # x holds the NaN: magenta
    assert dot.nodes["n4"]["fillcolor"] == "#e53935"  # w, RMS 2e6 past the 1e6 limit: red
    assert dot.nodes["n0"]["fillcolor"] == "#b5d65c"  # RMS 1: 8/14 up the healthy log scale
    assert dot.nodes["n1"]["fillcolor"] == dot.nodes["n2"]["fillcolor"] == "#add45e"  # RMS 0.5


def test_kinds_have_distinct_shapes() -> None:
    """Ops, parameters, other leaves and the root each get their own shape."""
    g = graphs.mlp()
    dot = parse(to_dot(g))
    assert dot.nodes["n0"]["shape"] == SHAPES["root"]
    assert dot.nodes["n1"]["shape"] == SHAPES[OP]
    assert dot.nodes["n4"]["shape"] == SHAPES[PARAM]
    assert dot.nodes["n8"]["shape"] == SHAPES[LEAF]
    assert len({SHAPES[k] for k in (OP, PARAM, LEAF, "root", "group", "opaque")}) == 6


def test_nonfinite_origin_is_unmistakable() -> None:
    """The NaN origin gets a thick magenta double border and the warning mark."""
    node = parse(to_dot(graphs.nan_origin())).nodes["n2"]
    assert node["color"] == ORIGIN_COLOUR
    assert float(node["penwidth"]) >= 4
    assert node["peripheries"] == "2"
    assert node["label"].startswith(ORIGIN_MARK)


def test_findings_colour_the_border_by_severity() -> None:
    """A node with findings has a border in the colour of its worst finding's severity."""
    g = graphs.nan_origin()
    g.findings.append(Finding("vanishing", Severity.INFO, 1, "mul: a tiny gradient", "try"))
    g.findings.append(Finding("dead", Severity.WARNING, 1, "mul: dead units", "try"))
    g.findings.append(Finding("vanishing", Severity.INFO, 1, "mul: another tiny one", "try"))
    g.findings.append(Finding("opaque", Severity.INFO, 0, "sum: an opaque region", "try"))
    dot = parse(to_dot(g))
    assert dot.nodes["n4"]["color"] == SEVERITY_COLOURS[Severity.WARNING]
    assert dot.nodes["n1"]["color"] == SEVERITY_COLOURS[Severity.WARNING]
    assert dot.nodes["n0"]["color"] == SEVERITY_COLOURS[Severity.INFO]


def test_tied_weights_list_every_name() -> None:
    """A parameter shared under two names shows both."""
    assert parse(to_dot(graphs.nan_origin())).nodes["n4"]["label"].startswith("w\ndecoder.w\n")


def test_not_executed_nodes_are_dashed_grey() -> None:
    """A node backward did not run is dashed and grey; the others are not."""
    dot = parse(to_dot(graphs.nan_origin()))
    assert "dashed" in dot.nodes["n5"]["style"]
    assert dot.nodes["n5"]["fillcolor"] == dotmod.NOT_RUN["fillcolor"]
    assert "dashed" not in dot.nodes["n1"]["style"]


def test_structure_only_capture_is_plain() -> None:
    """With no backward run, nothing is dashed or coloured, and the colour scale is left out."""
    b = graphs.Builder()
    b.add("SumBackward0", "sum", root=True, executed=False)
    b.add("AccumulateGrad", "w", kind=PARAM, names=("w",), executed=False)
    b.edge(1, 0)
    text = to_dot(b.graph(passes=0))
    dot = parse(text)
    assert all("dashed" not in a["style"] and a["fillcolor"] == "#ffffff" for a in dot.drawn.values())
    assert "gradient RMS" not in text


def test_every_node_has_a_full_tooltip() -> None:
    """Tooltips carry the op, stats, dtype, device, saved tensors, module and source line."""
    g = graphs.mlp()
    dot = parse(to_dot(g))
    for n in g.nodes:
        tip = dot.nodes[f"n{n.id}"]["tooltip"]
        assert n.op in tip and fmt_stats(n.grad) in tip and "float32 cpu" in tip
        if n.module:
            assert f"module: {n.module}" in tip
        if n.source:
            assert str(n.source) in tip
        if n.saved:
            assert "saved: self (3, 4)" in tip


def test_legend_can_be_switched_off() -> None:
    """The legend cluster is drawn by default and left out with legend=False."""
    g = graphs.nan_origin()
    assert "cluster_legend" in to_dot(g)
    off = to_dot(g, options=RenderOptions(legend=False))
    assert "cluster_legend" not in off and "legend_" not in off


def test_legend_shows_only_what_is_used() -> None:
    """The legend lists the NaN origin and 'not run' marks only when the picture has them."""
    nan = to_dot(graphs.nan_origin())  # its exp node was not run by backward
    assert "NaN/Inf origin" in nan and "not run by backward" in nan
    mlp = to_dot(graphs.mlp())
    assert "NaN/Inf origin" not in mlp and "not run by backward" not in mlp


def test_module_docstring_is_the_legend() -> None:
    """Every shape, mark and colour band the drawing uses is explained in dot.py's docstring."""
    doc = dotmod.__doc__ or ""
    words = {"box": "rounded box", "cylinder": "cylinder", "ellipse": "ellipse",
             "doubleoctagon": "double octagon", "box3d": "3-D box", "tab": "tab"}
    for shape in SHAPES.values():
        assert words[shape] in doc
    for meaning in ("blue", "red", "magenta", "grey", "dashed", ORIGIN_MARK, "x12", "out 1", "in 1"):
        assert meaning in doc
    # and what an LSTM step's picture adds (tests/export/test_recurrent.py draws one)
    for meaning in ("step 3 (LSTMCell cell)", "forget gate f σ", "thick brown edges", "c_{t-1} -> f*c -> c_t"):
        assert meaning in doc


def test_quotes_and_backslashes_are_escaped() -> None:
    """Labels with quotes, backslashes and newlines survive into the DOT text intact."""
    b = graphs.Builder()
    b.add("Weird\\Backward0", 'say "hi"\\n', root=True)
    dot = parse(to_dot(b.graph()))
    assert dot.nodes["n0"]["label"] == 'say "hi"\\n'


@pytest.mark.parametrize("rankdir", ["TB", "LR"])
def test_rankdir_is_passed_through(rankdir: str) -> None:
    """The rankdir option reaches the DOT graph attributes."""
    assert f'rankdir="{rankdir}"' in to_dot(graphs.mlp(), options=RenderOptions(rankdir=rankdir))


def test_unreached_parameters_are_shown() -> None:
    """Parameters the loss never reaches get dashed cylinders in a frame of their own."""
    from graphscope.model import ParamInfo

    g = graphs.mlp()
    g.params = [ParamInfo("aux.weight", (3, 4), "unreachable", None, "aux"),
                ParamInfo("fc1.weight", (4, 4), "reached", 4, "fc1")]
    g.findings = [Finding("unreachable_param", Severity.WARNING, None, "aux.weight got no gradient", "", "aux.weight")]
    text = to_dot(g)
    dot = parse(text)
    assert "cluster_unreached" in text
    assert dot.nodes["u0"]["label"] == "aux.weight\nunreachable"
    assert "dashed" in dot.nodes["u0"]["style"]
    assert dot.nodes["u0"]["color"] == SEVERITY_COLOURS[Severity.WARNING]
    assert "u1" not in dot.nodes  # reached parameters are drawn as graph nodes only


def test_caption_carries_the_title_and_summary() -> None:
    """The picture's caption names the capture (meta title) and its summary line."""
    g = graphs.mlp()
    g.meta["title"] = "mlp: a tiny test"
    assert f'label="mlp: a tiny test\\n{g.summary()}"' in to_dot(g)


def test_tooltip_shows_saved_values() -> None:
    """Saved non-tensor values read ``name = value``; saved tensors keep their shape and dtype."""
    from graphscope.model import TensorMeta

    b = graphs.Builder()
    b.add("NllLossBackward0", "nll_loss", root=True)
    b.nodes[0].saved = (
        TensorMeta(None, name="ignore_index", value="-100"),
        TensorMeta(None, name="stride", value="(1, 1)"),
        TensorMeta(None, name="weight", value="None"),
        TensorMeta((3, 4), "float32", "cpu", "self"),
        TensorMeta(None, "float32", "cpu", "nested", value="nested tensor"),
    )
    tip = parse(to_dot(b.graph())).nodes["n0"]["tooltip"]
    saved = next(line for line in tip.splitlines() if line.startswith("saved: "))
    assert saved == (
        "saved: ignore_index = -100, stride = (1, 1), weight = None, self (3, 4) float32 cpu, "
        "nested nested tensor float32 cpu"
    )


def test_tooltip_of_a_capture_shows_what_the_user_passed() -> None:
    """A captured cross_entropy and conv show ``ignore_index = -100``, ``stride = (1, 2)``."""
    import torch
    import torch.nn.functional as F

    import graphscope

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 2, 3, stride=(1, 2), padding=1)
    logits = conv(torch.randn(2, 3, 5, 5)).mean((-1, -2))
    g = graphscope.capture(F.cross_entropy(logits, torch.tensor([1, -100]), ignore_index=-100))
    dot = parse(to_dot(g))
    tips = {n.op: dot.nodes[f"n{n.id}"]["tooltip"] for n in g.nodes}
    nll = tips["NllLossBackward0"]
    assert "ignore_index = -100" in nll and "reduction = 'mean'" in nll and "weight = None" in nll
    assert "self (2, 2) float32 cpu" in nll
    conv_tip = tips["ConvolutionBackward0"]
    assert "stride = (1, 2)" in conv_tip and "groups = 1" in conv_tip
    assert "dim = (-1, -2)" in tips["MeanBackward1"]


def test_empty_gradient_is_grey_not_vanishing() -> None:
    """A zero-element gradient (nothing flowed) is filled grey and said to be empty, not blue."""
    from graphscope.model import GradStats

    empty = GradStats(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0)
    b = graphs.Builder()
    b.add("SumBackward0", "sum", root=True, rms=1.0)
    b.add("ReluBackward0", "relu", shapes=((0, 8),), stats=empty)
    b.edge(1, 0, stats=empty)
    dot = parse(to_dot(b.graph()))
    assert dot.nodes["n1"]["fillcolor"] == BAND_COLOURS["none"]
    assert "grad: empty (0 elements): nothing flowed" in dot.nodes["n1"]["tooltip"]
    (link,) = dot.between("n1", "n0")
    assert "color" not in link and "grad sent back: empty" in link["tooltip"]


def test_module_boxes_and_tooltips_name_the_class() -> None:
    """A module box reads 'fc1 (Linear)' and counts its ops in the singular when there is one."""
    g = graphs.sigmoid_mlp()
    g.meta["module_classes"] = {f"fc{i}": "Linear" for i in range(4)}
    dot = parse(to_dot(g, options=RenderOptions(max_nodes=8, depth=1)))
    labels = [a["label"] for a in dot.nodes.values() if "label" in a]
    assert any(label.startswith("fc1 (Linear)\n") for label in labels), labels
    assert not any("1 ops" in label or "1 params" in label for label in labels)
    single = parse(to_dot(g, options=RenderOptions(max_nodes=None)))
    assert "module: fc3 (Linear)" in single.nodes["n5"]["tooltip"]


def test_caption_says_how_to_get_gradients_and_names() -> None:
    """A picture without gradients or parameter names says in its caption how to get them."""
    from graphscope.model import Edge, Graph, Node

    bare = Graph(nodes=[Node(0, "MeanBackward0", label="mean", is_root=True),
                        Node(1, "AccumulateGrad", kind=LEAF, label="leaf")],
                 edges=[Edge(1, 0)], roots=[0])
    caption = to_dot(bare).split(" label=\"", 1)[1].split("\"", 1)[0]
    assert "pass model=model to name the weights" in caption
    assert "graphscope.capture(loss, model=model) before loss.backward()" in caption
    captured = to_dot(graphs.mlp())
    assert "model=model" not in captured and "before loss.backward()" not in captured
