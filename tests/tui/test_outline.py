"""The tree plans, search and layer order, without textual."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from graphscope.model import Edge, Graph, Node
from graphscope.tui.outline import (
    BackwardPlan,
    Members,
    ModuleItem,
    ModulePlan,
    RefItem,
    SearchIndex,
    SeqItem,
    UnderNode,
)
from tests.graphs import chain, diamond, sigmoid_mlp


def _resolve(plan, node_id):
    """Follow ``locate`` and return the node its last step points at."""
    steps = plan.locate(node_id)
    last = steps[-1]
    assert isinstance(last.item, SeqItem)
    for s in steps[:-1]:
        assert s.item in plan.items(s.container) or isinstance(s.item, SeqItem)
    return plan.seq(last.item.key)[last.index]


def test_main_path_lists_the_backward_spine_flat():
    """The loss's list walks backward through sigmoid/addmm pairs without nesting."""
    g = sigmoid_mlp()
    plan = BackwardPlan(g)
    spine = plan.seq(plan.top()[0].key)
    assert [g.nodes[i].label for i in spine[:5]] == ["mse_loss", "sigmoid", "addmm", "sigmoid", "addmm"]


def test_side_inputs_nest_under_their_consumer():
    """An addmm's bias and transposed weight are nested under it, the input chain is not."""
    g = sigmoid_mlp()
    plan = BackwardPlan(g)
    items = plan.items(UnderNode(2))
    titles = [g.nodes[plan.seq(i.key)[0]].title for i in items]
    assert titles == ["fc3.bias", "t"]
    assert plan.seq(items[1].key) == [4, 5]  # t, then the weight it reads


def test_shared_node_expands_once_and_is_referenced_elsewhere():
    """x feeds exp and sin: one of them shows it, the other holds a reference line."""
    g = diamond()
    plan = BackwardPlan(g)
    assert plan.items(UnderNode(2)) == [RefItem(3)]
    assert 3 in plan.seq(plan.top()[0].key)


def test_every_node_located_exactly_where_it_lives():
    """locate() leads to each node's own line, in both groupings."""
    for g in (sigmoid_mlp(), diamond(), chain(300)):
        for plan in (BackwardPlan(g), ModulePlan(g)):
            for n in g.nodes:
                assert _resolve(plan, n.id) == n.id


@st.composite
def _dags(draw):
    n = draw(st.integers(2, 40))
    edges = []
    for dst in range(n - 1):
        srcs = draw(st.lists(st.integers(dst + 1, n - 1), max_size=3, unique=True))
        edges += [Edge(s, dst, 0, k) for k, s in enumerate(srcs)]
    nodes = [Node(id=i, op="Op", label=f"op{i}") for i in range(n)]
    return Graph(nodes=nodes, edges=edges, roots=[0])


@settings(max_examples=60, deadline=None)
@given(_dags())
def test_backward_plan_covers_each_node_once_with_log_depth(g):
    """Each node has one canonical line, and nesting stays within log2(nodes) + 1."""
    plan = BackwardPlan(g)
    seen: list[int] = []
    stack = [(0, it) for it in plan.top()]
    max_depth = 0
    while stack:
        depth, item = stack.pop()
        if isinstance(item, SeqItem):
            for u in plan.seq(item.key):
                seen.append(u)
                max_depth = max(max_depth, depth)
                stack += [(depth + 1, it) for it in plan.items(UnderNode(u))]
    assert sorted(seen) == list(range(len(g.nodes)))
    assert max_depth <= math.log2(len(g.nodes)) + 1


def test_module_plan_groups_by_module_path():
    """Nodes sit under their module; nodes without one under '(no module)', last."""
    g = sigmoid_mlp()
    plan = ModulePlan(g)
    top = plan.top()
    assert [i.path for i in top] == ["fc0", "fc1", "fc2", "fc3", "(no module)"]
    assert all(isinstance(i, ModuleItem) for i in top)
    assert {g.nodes[i].module for i in plan.seq(Members("fc1"))} == {"fc1"}


def test_search_wraps_and_matches_names_and_ops():
    """Search finds parameter names and op class names, after the current node, wrapping."""
    g = sigmoid_mlp()
    idx = SearchIndex(g)
    first = idx.next("weight", None)
    assert g.nodes[first].name.endswith("weight")
    assert idx.next("AddmmBackward", 3) == 7
    assert idx.next("mse", 5) == 0
    assert idx.next("no-such-thing", 0) is None


def test_subgraph_renumbers_and_keeps_inner_edges():
    """A neighbourhood export holds just those nodes, renumbered, with their findings."""
    g = sigmoid_mlp()
    sub = g.subgraph([20, 19, 17])
    assert [n.id for n in sub.nodes] == [0, 1, 2]
    assert {(e.src, e.dst) for e in sub.edges} == {(1, 0), (2, 1)}
    assert [f.node for f in sub.findings] == [2]
