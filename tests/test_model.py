"""The model: plain-data graph operations and the networkx view."""

from __future__ import annotations

from graphscope.model import Edge, Graph, GradStats, Node, TensorMeta


def test_nx_view_keeps_multiplicity_and_attributes():
    """graph.nx is a MultiDiGraph with parallel edges, node attributes and edge shapes."""
    stats = GradStats(1.0, 0.5, 0.1, 0.0, 1.0, 1.0, 0.0, 0, 0, 4)
    g = Graph(
        nodes=[
            Node(0, "MulBackward0", label="mul", grad=stats, is_root=True),
            Node(1, "AccumulateGrad", kind="leaf", label="leaf"),
        ],
        edges=[Edge(1, 0, 0, 0), Edge(1, 0, 0, 1)],
        roots=[0],
    )
    nx = g.nx
    assert nx.number_of_edges(1, 0) == 2
    assert nx.nodes[0]["grad"] is stats and nx.nodes[1]["kind"] == "leaf"
    assert g.producers(0) == [1] and g.consumers(1) == [0]


# -- short reprs: a graph prints as one screen, however big -------------------------------------


def _flagged(n_findings: int = 8) -> Graph:
    """A 480-node transformer with findings of every severity, the worst added last."""
    from graphscope.model import Finding, Severity
    from tests.graphs import transformer

    g = transformer()
    sevs = [Severity.INFO] * (n_findings - 2) + [Severity.WARNING, Severity.ERROR]
    g.findings = [Finding("vanishing", s, i, f"finding {i} <b>&", "a hint") for i, s in enumerate(sevs)]
    g.meta["title"] = "tiny transformer"
    return g


def test_graph_repr_is_one_screen_with_counts_and_the_worst_findings():
    """repr(graph) of a big graph is a short summary: counts, severities worst first, top 5."""
    g = _flagged()
    text = repr(g)
    lines = text.splitlines()
    assert len(text) < 1500 and len(lines) <= 8
    assert lines[0].startswith(f"<Graph 'tiny transformer': {len(g):,} nodes, ")
    assert "1 backward pass; 1 error, 1 warning, 6 info" in lines[0]
    assert lines[1].startswith("  <Finding error vanishing at node 7: finding 7")
    assert "3 more findings in graph.findings" in text and str(g) == text


def test_a_dataclass_subclass_keeps_the_short_repr():
    """A @dataclass subclass of Graph (as LiveGraph) gets Graph's repr, not a generated dump."""
    import dataclasses

    @dataclasses.dataclass(eq=False)
    class Sub(Graph):
        extra: int = 0

    g = Sub(nodes=_flagged().nodes)
    assert repr(g).startswith("<Graph: ") and len(repr(g)) < 1500


def test_node_and_finding_reprs_are_one_line():
    """Node and Finding reprs name what a reader needs in one line, shapes as fmt_shape writes."""
    from graphscope.model import Finding

    op = Node(3, "AddmmBackward0", label="addmm", module="layers.0",
              outputs=(TensorMeta((32, 1)),), grad=GradStats(1, 0, 0, 0, 0, 0, 0, 0, 0, 4))
    param = Node(4, "AccumulateGrad", kind="param", label="bias", names=("layers.0.bias",),
                 module="layers.0", outputs=(TensorMeta((16,)),))
    assert repr(op) == "<Node 3 addmm (AddmmBackward0), in layers.0, (32, 1), gradient>"
    assert repr(param) == "<Node 4 layers.0.bias (parameter), in layers.0, (16), no gradient>"
    f = Finding("vanishing", 1, 3, "x " * 100, nodes=(3, 4, 5))
    assert repr(f).startswith("<Finding warning vanishing at node 3 (+2 more nodes): x x")
    assert "\n" not in repr(f) and len(repr(f)) < 140


def test_repr_html_is_a_table_of_findings_escaped():
    """A notebook shows the counts and every finding in a table, worst first, HTML-escaped."""
    html = _flagged()._repr_html_()
    assert html.count("<tr><td>") == 8 and "<b>tiny transformer</b>" in html
    assert "finding 7 &lt;b&gt;&amp;" in html and "<b>&" not in html.replace("<b>tiny", "")
    assert html.index("<td>error</td>") < html.index("<td>warning</td>") < html.index("<td>info</td>")


def test_counts_are_plural_only_when_not_one():
    """fmt_count: '1 node', '0 nodes', '2 backward passes', '12,000 nodes', '3 info'."""
    from graphscope.model import fmt_count

    assert fmt_count(1, "node") == "1 node" and fmt_count(0, "node") == "0 nodes"
    assert fmt_count(2, "backward pass") == "2 backward passes"
    assert fmt_count(12000, "node") == "12,000 nodes" and fmt_count(3, "info", "info") == "3 info"


def test_modules_are_named_with_their_class_and_the_model_itself_once():
    """fmt_module: a submodule with the class the capture recorded, the model itself as its class
    and "(top level)" (not "(top level) (Net)"), an unknown path bare, no module as -."""
    from graphscope.formatting import fmt_module

    g = Graph()
    g.meta["module_classes"] = {"": "Net", "fc1": "Linear"}
    assert fmt_module("fc1", g) == "fc1 (Linear)"
    assert fmt_module("", g) == "Net (top level)"
    assert fmt_module("head", g) == "head"
    assert fmt_module(None, g) == "-"
    assert fmt_module("", Graph()) == "(top level)"
