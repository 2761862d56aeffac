"""The reductions that keep a big graph drawable: budget, module groups, folded repeats, chains."""

from __future__ import annotations

import pytest

from graphscope.export.collapse import CHAIN, MODULE, REST, SINGLE, View, build_view
from graphscope.export.dot import to_dot
from graphscope.export.options import RenderOptions
from graphscope.formatting import BAND_COLOURS
from graphscope.model import Graph
from tests import graphs
from tests.export.dotfile import parse


def _check_quotient(g: Graph, view: View) -> None:
    """Every node in exactly one box; every edge between boxes in exactly one link."""
    where: dict[int, str] = {}
    for box in view.boxes:
        for m in box.members:
            assert m not in where, f"node {m} is in two boxes"
            where[m] = box.name
    assert sorted(where) == list(range(len(g)))
    linked = [i for link in view.links for i in link.edges]
    assert len(linked) == len(set(linked))
    for i, e in enumerate(g.edges):
        if where[e.src] != where[e.dst]:
            assert i in linked, f"edge {e.src}->{e.dst} is lost"


def test_small_graph_is_drawn_in_full() -> None:
    """A graph within the budget gets one box per node and one link per edge."""
    g = graphs.mlp()
    view = build_view(g)
    assert [b.kind for b in view.boxes] == [SINGLE] * len(g) and len(view.links) == len(g.edges)
    assert view.note == ""


@pytest.mark.parametrize("modules", [False, True])
def test_big_graph_default_stays_under_budget(modules: bool) -> None:
    """A 10,000-node graph, with or without module info, is reduced to at most 300 boxes."""
    g = graphs.random_dag(10_000, modules=modules)
    view = build_view(g)
    assert len(view.boxes) <= 300
    assert "10,000 nodes drawn as" in view.note
    _check_quotient(g, view)


@pytest.mark.parametrize("budget", [5, 20, 60])
def test_any_budget_holds(budget: int) -> None:
    """The box count never exceeds max_nodes, however small."""
    for g in (graphs.transformer(), graphs.random_dag(3000), graphs.random_dag(3000, modules=True)):
        view = build_view(g, max_nodes=budget)
        assert len(view.boxes) <= budget
        _check_quotient(g, view)


def test_max_nodes_none_draws_everything() -> None:
    """max_nodes=None keeps the full graph, however big."""
    g = graphs.random_dag(2000)
    assert len(build_view(g, max_nodes=None).boxes) == 2000


def test_repeated_blocks_are_folded_once_with_count() -> None:
    """Twelve identical encoder layers are drawn once, framed and marked x12."""
    g = graphs.transformer(layers=12, ops_per_layer=40)
    view = build_view(g, max_nodes=300)
    _check_quotient(g, view)
    assert len(view.boxes) == 1 + 1 + 42 + 2  # loss, head, one block (40 ops, 2 params), embed+weight
    repeats = {b.repeat for b in view.boxes if b.repeat is not None}
    assert [(r.span, r.count) for r in repeats] == [("encoder.layers.0-11", 12)]
    assert sum(link.repeat for link in view.links) == 1  # the block's output feeds its next copy
    text = to_dot(g)
    assert "encoder.layers.0-11  x12 identical blocks" in text and "next copy" in text


def test_different_blocks_are_not_folded() -> None:
    """A block whose ops differ from its neighbours' breaks the run of repeats."""
    g = graphs.transformer(layers=4, ops_per_layer=10)
    odd = next(n for n in g.nodes if n.module == "encoder.layers.2.attn")
    odd.op = "DivBackward0"
    view = build_view(g, max_nodes=30)
    spans = sorted({b.repeat.span for b in view.boxes if b.repeat is not None})
    assert spans == ["encoder.layers.0-1"]
    _check_quotient(g, view)


def test_folding_can_be_switched_off() -> None:
    """fold_repeats=False groups by module instead of folding copies."""
    g = graphs.transformer()
    view = build_view(g, max_nodes=300, fold_repeats=False)
    assert all(b.repeat is None for b in view.boxes)
    assert len(view.boxes) <= 300


def test_explicit_depth_groups_by_module_path() -> None:
    """depth=2 draws one box per module path cut to two parts."""
    g = graphs.transformer(layers=3, ops_per_layer=6)
    view = build_view(g, depth=2, fold_repeats=False)
    titles = sorted(b.title for b in view.boxes if b.kind == MODULE)
    assert titles == ["embed", "encoder.layers", "head"]
    assert view.depth == 2


def test_depth_is_chosen_to_fit_the_budget() -> None:
    """With no depth given, the finest module depth that fits the budget is used."""
    g = graphs.random_dag(3000, modules=True)  # blocks.<k>.part<j>
    assert build_view(g, max_nodes=200).depth == 3
    assert build_view(g, max_nodes=100).depth == 2


def test_no_module_info_collapses_chains() -> None:
    """Without module paths, linear chains of ops become one box that lists its ops."""
    b = graphs.Builder()
    b.add("SumBackward0", "sum", root=True)
    for i in range(1, 400):
        b.add("AddBackward0" if i % 2 else "MulBackward0", "add" if i % 2 else "mul")
        b.edge(i, i - 1)
    view = build_view(b.graph(), max_nodes=10)
    kinds = sorted(box.kind for box in view.boxes)
    assert kinds == [CHAIN, SINGLE]
    label = parse(to_dot(b.graph(), options=RenderOptions(max_nodes=10))).nodes["g1"]["label"]
    assert label == "399 ops: add, mul, add, ..."


def test_beyond_chains_the_part_nearest_the_output_is_kept() -> None:
    """When chains are not enough, the boxes nearest the root stay and the rest is one box."""
    g = graphs.random_dag(10_000)
    view = build_view(g, max_nodes=50)
    assert any(b.kind == REST for b in view.boxes)
    assert "n0" in {b.name for b in view.boxes}  # the loss is always kept


def test_group_is_filled_like_its_worst_member() -> None:
    """A group holding a NaN gradient is filled magenta."""
    b = graphs.Builder()
    b.add("SumBackward0", "sum", root=True)
    b.add("AddBackward0", "add", module="block", rms=0.1)
    b.add("LogBackward0", "log", module="block", stats=graphs.stats(1.0, nan=2))
    b.edge(1, 0)
    b.edge(2, 1)
    dot = parse(to_dot(b.graph(), options=RenderOptions(depth=1)))
    group = next(a for name, a in dot.drawn.items() if name.startswith("g"))
    assert group["fillcolor"] == BAND_COLOURS["nonfinite"]
    assert group["label"] == "block\n2 ops"


def test_collapsed_view_is_deterministic() -> None:
    """The same graph and options give the same DOT text."""
    assert to_dot(graphs.random_dag(3000)) == to_dot(graphs.random_dag(3000))
