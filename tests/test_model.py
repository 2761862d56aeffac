"""The model: plain-data graph operations and the networkx view."""

from __future__ import annotations

from graphscope.model import Edge, Graph, GradStats, Node


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
