"""One finding per cause, on hand-built graphs (no torch): depth trends, grouped limits,
structural zeros, op-aware dead units and float16 underflow, and every view marking each node a
finding names."""

from __future__ import annotations

import asyncio
import math

from graphscope.diagnostics import diagnose
from graphscope.export import to_dot
from graphscope.export.dot import SEVERITY_COLOURS
from graphscope.export.options import RenderOptions
from graphscope.health import Health
from graphscope.model import (
    OP,
    PARAM,
    Edge,
    Finding,
    GradStats,
    Graph,
    Node,
    Severity,
    TensorMeta,
    load,
)
from graphscope.tui.app import InspectorApp
from graphscope.tui.widgets.details import describe
from graphscope.tui.widgets.graph_tree import GraphTree
from tests.export.dotfile import parse


def _stats(rms: float, *, numel: int = 64, zero: float = 0.0, const: bool = False) -> GradStats:
    """Statistics with RMS ``rms``; ``const``: every element equal (min == max)."""
    lo = rms if const else -rms
    return GradStats(rms * math.sqrt(numel), 0.0, 0.0 if const else rms, lo, rms, rms, zero, 0, 0,
                     numel)


class _Net:
    """Nodes added root first (ids and backward order agree), edges producer -> consumer."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.edges: list[Edge] = []

    def add(self, label: str, grad: GradStats | None, *, kind: str = OP, name: str = "",
            shape: tuple[int, ...] = (4, 16), dtype: str = "float32") -> int:
        i = len(self.nodes)
        op = "AccumulateGrad" if kind != OP else "".join(p.title() for p in label.split("_")) + "Backward0"
        self.nodes.append(Node(i, op, kind=kind, label=name or label, names=(name,) if name else (),
                               outputs=(TensorMeta(shape, dtype, "cpu"),), grad=grad,
                               grads=(grad,) if grad else (), executed=True, is_root=i == 0,
                               exec_order=i))
        return i

    def link(self, src: int, dst: int, grad: GradStats | None = None, input_nr: int = 0) -> None:
        self.edges.append(Edge(src, dst, 0, input_nr, grad if grad else self.nodes[src].grad))

    def graph(self, **meta) -> Graph:
        return Graph(nodes=self.nodes, edges=self.edges, roots=[0], passes=1, meta=meta)


def _stack(param_rms: list[float], *, activation: str = "sigmoid") -> Graph:
    """loss <- addmm <- activation <- addmm ... one weight per layer; ``param_rms`` input first."""
    net = _Net()
    prev = net.add("mse_loss", _stats(1.0, numel=1), shape=())
    for layer in reversed(range(len(param_rms))):
        mm = net.add("addmm", _stats(0.1))
        net.link(mm, prev)
        w = net.add("", _stats(param_rms[layer]), kind=PARAM, name=f"{2 * layer}.weight")
        net.link(w, mm, input_nr=2)
        prev = mm
        if layer:
            act = net.add(activation, _stats(0.1))
            net.link(act, mm, input_nr=1)
            prev = act
    return net.graph()


def _one(graph: Graph, kind: str):
    (found,) = [f for f in graph.findings if f.kind == kind]
    return found


def _judged(graph: Graph) -> Graph:
    graph.findings = diagnose(graph)
    return graph


# -- depth trends and grouped magnitudes ---------------------------------------------------------


def test_depth_fade_is_one_warning_listing_the_faded_parameters():
    """A 12-layer fade is one vanishing warning naming every parameter below 1e-4 of the last
    layer, in forward order, with the worst as its node."""
    rms = [10.0 ** (0.9 * (i - 11)) for i in range(12)]
    rms[0], rms[1] = rms[1], rms[0]  # the worst is the second layer
    g = _judged(_stack(rms))
    f = _one(g, "vanishing")
    names = [g.nodes[i].name for i in f.nodes]
    assert f.severity == Severity.WARNING and f.param == "2.weight"
    assert names == [f"{2 * i}.weight" for i in range(7)]  # 10^-9.9 .. 10^-4.5 of the last
    assert "through 11 sigmoid layers: 7 parameters" in f.message
    assert "0.25" in f.hint and "removing" not in f.hint


def test_tanh_fade_hint_names_saturation_and_init():
    """A tanh stack's fade is blamed on tanh saturation and the default init, with its rate."""
    g = _judged(_stack([0.5 ** (20 - i) for i in range(21)], activation="tanh"))
    f = _one(g, "vanishing")
    assert f.severity == Severity.WARNING and "tanh layers" in f.message
    assert "saturates" in f.hint and "xavier" in f.hint and "2x per layer" in f.hint


def test_a_cliff_is_not_a_fade():
    """Ten tiny layers then ten healthy ones: no single-step fade; the tiny ones are one INFO."""
    g = _judged(_stack([1e-7] * 10 + [0.1] * 10))
    assert Health.of(g).trend is None
    f = _one(g, "vanishing")
    assert f.severity == Severity.INFO and len(f.nodes) == 10
    assert "layer by layer" not in f.message and "by design" in f.hint
    assert "removing" not in f.hint


def test_tiny_everywhere_is_a_warning_and_never_calls_neighbours_healthy():
    """When every gradient is below the limit, that is the loss's scale: one warning."""
    g = _judged(_stack([3e-10] * 8))
    f = _one(g, "vanishing")
    assert f.severity == Severity.WARNING and len(f.nodes) == 8
    assert "healthy" not in f.message and "loss" in f.hint


def test_exploding_limit_is_one_finding_per_kind():
    """Ten parameters past the exploding limit (no trend) are one exploding warning naming all."""
    g = _judged(_stack([1e7 * (1 + (i % 2)) for i in range(10)], activation="linear"))
    f = _one(g, "exploding")
    assert f.severity == Severity.WARNING and len(f.nodes) == 10
    assert g.nodes[f.node].grad.rms == 2e7 and "10 parameters" in f.message


def test_growth_through_depth_is_one_exploding_warning():
    """Gradients growing 10x per layer toward the input: one exploding trend, its nodes those
    above 1e4x the last layer."""
    g = _judged(_stack([10.0 ** (9 - i) for i in range(10)], activation="linear"))
    f = _one(g, "exploding")
    assert [g.nodes[i].name for i in f.nodes] == [f"{2 * i}.weight" for i in range(6)]
    assert "Exploding gradient through 10 layers" in f.message
    assert not [x for x in g.findings if x.kind == "vanishing"]


# -- structural zeros ----------------------------------------------------------------------------


def _conv_bn(bias_rms: float) -> Graph:
    """loss <- relu <- native_batch_norm(bn.weight, bn.bias) <- convolution(w, b) <- x, with a
    healthy head and stem so the depth rule has layers around the conv."""
    net = _Net()
    loss = net.add("sum", _stats(1.0, numel=1), shape=())
    head = net.add("mul", _stats(0.1))
    net.link(head, loss)
    hw = net.add("", _stats(0.1), kind=PARAM, name="head.weight")
    net.link(hw, head, input_nr=1)
    bn = net.add("native_batch_norm", _stats(0.1))
    net.link(bn, head)
    for p in ("bn.weight", "bn.bias"):
        net.link(net.add("", _stats(0.05), kind=PARAM, name=p, shape=(16,)), bn, input_nr=1)
    conv = net.add("convolution", _stats(0.1))
    net.link(conv, bn)
    net.link(net.add("", _stats(0.1), kind=PARAM, name="conv.weight", shape=(16, 16)), conv, input_nr=1)
    bias = net.add("", _stats(bias_rms), kind=PARAM, name="conv.bias", shape=(16,))
    net.link(bias, conv, input_nr=2)
    stem = net.add("mul", _stats(0.1))
    net.link(stem, conv)
    net.link(net.add("", _stats(0.2), kind=PARAM, name="stem.weight"), stem, input_nr=1)
    return net.graph()


def test_bias_before_batch_norm_is_a_structural_info_not_vanishing():
    """A conv bias feeding a batch norm has a ~0 gradient by construction: one structural INFO
    that says why, and no vanishing finding."""
    g = _judged(_conv_bn(2e-9))
    f = _one(g, "structural_zero")
    assert f.severity == Severity.INFO and f.param == "conv.bias"
    assert "batch mean" in f.message and "bias=False" in f.hint
    assert not [x for x in g.findings if x.kind == "vanishing"]


def test_bias_not_before_batch_norm_stays_a_vanishing_info():
    """The same tiny bias feeding a plain mul is an isolated vanishing INFO, not structural."""
    g = _conv_bn(2e-9)
    bn = next(n for n in g.nodes if n.label == "native_batch_norm")
    g.nodes[bn.id] = Node(bn.id, "MulBackward0", label="mul", outputs=bn.outputs, grad=bn.grad,
                          grads=bn.grads, executed=True, exec_order=bn.exec_order)
    g.invalidate()
    f = _one(_judged(g), "vanishing")
    assert f.severity == Severity.INFO and f.param == "conv.bias"
    assert not [x for x in g.findings if x.kind == "structural_zero"]


def _softmax_sum(received: GradStats) -> Graph:
    """sum <- softmax <- addmm(fc.weight, fc.bias): softmax gets ``received``, sends rounding."""
    net = _Net()
    loss = net.add("sum", _stats(1.0, numel=1), shape=())
    soft = net.add("softmax", received)
    net.link(soft, loss)
    mm = net.add("addmm", _stats(1e-8))
    net.link(mm, soft)
    for name, nr in (("fc.bias", 0), ("fc.weight", 2)):
        net.link(net.add("", _stats(3e-9), kind=PARAM, name=name), mm, input_nr=nr)
    return net.graph()


def test_constant_gradient_into_softmax_is_structural_and_nothing_else():
    """softmax(z).sum(): the softmax gets the same gradient everywhere, so its input gradient is
    zero by mathematics; one INFO naming it and the parameters behind it, no warning."""
    g = _judged(_softmax_sum(_stats(1.0, const=True)))
    f = _one(g, "structural_zero")
    assert f.severity == Severity.INFO and g.nodes[f.node].label == "softmax"
    assert {g.nodes[i].name for i in f.nodes[1:]} == {"fc.weight", "fc.bias"}
    assert [x.kind for x in g.findings] == ["structural_zero"]


def test_softmax_with_a_varying_gradient_is_judged_as_usual():
    """A softmax receiving a varying gradient explains nothing: the tiny parameters are vanishing."""
    g = _judged(_softmax_sum(_stats(1.0)))
    assert "structural_zero" not in {f.kind for f in g.findings}
    assert "vanishing" in {f.kind for f in g.findings}


# -- dead units ----------------------------------------------------------------------------------


def _relu_below(received_zero: float, sent_zero: float, *, shape=(4, 8, 12, 12)) -> Graph:
    """loss <- relu <- convolution(conv.weight): the relu receives and sends these zero shares."""
    net = _Net()
    loss = net.add("max_pool2d", _stats(1.0, numel=1), shape=(4, 8, 1, 1))
    relu = net.add("relu", _stats(0.01, zero=received_zero), shape=shape)
    net.link(relu, loss)
    conv = net.add("convolution", _stats(0.01, zero=sent_zero), shape=shape)
    net.link(conv, relu)
    net.link(net.add("", _stats(0.1), kind=PARAM, name="conv.weight"), conv, input_nr=1)
    return net.graph()


def test_relu_after_max_pool_passes_on_zeros_it_did_not_make():
    """A ReLU that receives 99.2% zeros from a max-pool and sends 99.4% blocks only a quarter of
    the units that got a gradient: not dead. One that receives none and sends 99.5% is dead."""
    assert not _judged(_relu_below(0.992, 0.994)).findings
    dead = _one(_judged(_relu_below(0.0, 0.995)), "dead")
    assert "99.5% exact zeros" in dead.message and "negative" in dead.hint


def test_relu_zeros_are_its_own_when_shapes_differ():
    """Zeros received cannot be mapped onto an input of another shape: they count as sent."""
    g = _relu_below(0.992, 0.994)
    g.edges[1] = Edge(2, 1, 0, 0, _stats(0.01, zero=0.994, numel=10))
    g.nodes[2].outputs = (TensorMeta((4, 8, 24, 6), "float32", "cpu"),)
    assert _one(_judged(g), "dead").node == 1


def _zero_state(*, absorbed: bool) -> Graph:
    """An LSTM-like first step: mul(f, c0) with c0 = 0 sends zeros to sigmoid(f), which gets
    nothing else; its producer, the gates' split, also gets the other gates' gradient when
    ``absorbed``, else the zeros reach the gate weight."""
    net = _Net()
    loss = net.add("sum", _stats(1.0, numel=1), shape=())
    mul = net.add("mul", _stats(0.1))
    net.link(mul, loss)
    sig = net.add("sigmoid", _stats(0.0, zero=1.0))
    net.link(sig, mul, _stats(0.0, zero=1.0))
    split = net.add("unsafe_split", _stats(0.05, zero=0.25) if absorbed else _stats(0.0, zero=1.0))
    net.link(split, sig, _stats(0.0, zero=1.0))
    if absorbed:
        other = net.add("tanh", _stats(0.1))
        net.link(other, loss)
        net.link(split, other, _stats(0.05))
    w = net.add("", _stats(0.05) if absorbed else _stats(0.0, zero=1.0), kind=PARAM, name="gates.weight")
    net.link(w, split)
    return net.graph()


def test_product_with_a_zero_state_is_not_dead_when_its_zeros_are_absorbed():
    """mul by a zero initial state sends zeros, but everything below still learns: no finding."""
    assert _judged(_zero_state(absorbed=True)).findings == []


def test_product_whose_zeros_starve_a_parameter_is_dead_and_names_it():
    """When those zeros are all a parameter gets, the mul is dead: one finding naming the mul and
    the starved weight, with the product's hint; the weight is not warned about twice."""
    g = _judged(_zero_state(absorbed=False))
    f = _one(g, "dead")
    assert g.nodes[f.node].label == "mul" and g.nodes[f.nodes[-1]].name == "gates.weight"
    assert "other factor is all zeros" in f.hint and "'gates.weight'" in f.message


def test_dead_relu_carries_every_parameter_it_starves():
    """A fully dead ReLU: the weights below it and the next layer's weight (whose input it
    zeroes) are in its finding, not in findings of their own."""
    net = _Net()
    loss = net.add("mse_loss", _stats(1.0, numel=1), shape=())
    out = net.add("addmm", _stats(0.5))
    net.link(out, loss)
    ow = net.add("", _stats(0.0, zero=1.0), kind=PARAM, name="out.weight")
    net.link(ow, out, input_nr=2)
    relu = net.add("relu", _stats(0.3))
    net.link(relu, out, input_nr=1)
    hidden = net.add("addmm", _stats(0.0, zero=1.0))
    net.link(hidden, relu)
    for name, nr in (("hidden.bias", 0), ("hidden.weight", 2)):
        net.link(net.add("", _stats(0.0, zero=1.0), kind=PARAM, name=name), hidden, input_nr=nr)
    g = _judged(net.graph())
    f = _one(g, "dead")
    assert f.node == relu and {g.nodes[i].name for i in f.nodes[1:]} == {
        "out.weight", "hidden.bias", "hidden.weight"}


# -- float16 underflow ---------------------------------------------------------------------------


def _half(*, dtype: str = "float16", **meta) -> Graph:
    """loss <- addmm(out.*) <- relu <- addmm(hid.*): the first addmm receives 7e-8 and flushes
    everything it sends toward the hidden layer to zero."""
    net = _Net()
    loss = net.add("mse_loss", _stats(1e-6, numel=1), shape=(), dtype=dtype)
    out = net.add("addmm", _stats(7e-8, zero=0.2), dtype=dtype)
    net.link(out, loss)
    net.link(net.add("", _stats(6e-7), kind=PARAM, name="out.bias", dtype=dtype), out)
    relu = net.add("relu", _stats(0.0, zero=1.0), dtype=dtype)
    net.link(relu, out, input_nr=1)
    hid = net.add("addmm", _stats(0.0, zero=1.0), dtype=dtype)
    net.link(hid, relu)
    for name, nr in (("hid.bias", 0), ("hid.weight", 2)):
        net.link(net.add("", _stats(0.0, zero=1.0), kind=PARAM, name=name, dtype=dtype), hid,
                 input_nr=nr)
    return net.graph(**meta)


def test_float16_gradients_flushed_to_zero_are_underflow_not_dead_units():
    """Tiny float16 gradients and the zeros below them: one underflow warning naming the op
    where zeros appear and the starved parameters; no dead-unit finding."""
    g = _judged(_half())
    f = _one(g, "underflow")
    assert f.severity == Severity.WARNING and g.nodes[f.node].label == "addmm"
    assert {g.nodes[i].name for i in f.nodes if g.nodes[i].kind == PARAM} == {
        "out.bias", "hid.bias", "hid.weight"}
    assert "GradScaler" in f.hint and "bfloat16" in f.hint
    assert [x.kind for x in g.findings] == ["underflow"]


def test_float32_cast_of_a_float16_output_is_where_underflow_is_born():
    """out.float() under autocast: the cast gets a float32 gradient of 1e-9 and sends float16
    zeros back; that cast is where the underflow finding points."""
    net = _Net()
    loss = net.add("mse_loss", _stats(1.0, numel=1), shape=())
    cast = net.add("to_copy", _stats(1e-9))
    net.link(cast, loss)
    mm = net.add("addmm", _stats(0.0, zero=1.0), dtype="float16")
    net.link(mm, cast)
    net.link(net.add("", _stats(0.0, zero=1.0), kind=PARAM, name="fc.weight"), mm, input_nr=2)
    g = _judged(net.graph())
    f = _one(g, "underflow")
    assert g.nodes[f.node].label == "to_copy" and "sends back 100% zeros" in f.message
    assert [x.kind for x in g.findings] == ["underflow"]


def test_underflow_needs_float16_without_a_loss_scale():
    """With a GradScaler loss scale, or in bfloat16, the same zeros are not underflow."""
    assert "underflow" not in {f.kind for f in diagnose(_half(loss_scale=65536.0))}
    assert "underflow" not in {f.kind for f in diagnose(_half(dtype="bfloat16"))}
    assert "dead" in {f.kind for f in diagnose(_half(dtype="bfloat16"))}


# -- every view marks every node a finding names -------------------------------------------------


def test_findings_for_and_file_round_trip_keep_every_node(tmp_path):
    """graph.findings_for(n) finds a multi-node finding at each of its nodes, and save/load keeps
    its nodes (a one-node finding stores none and loads as (node,))."""
    g = _judged(_stack([10.0 ** (0.9 * (i - 11)) for i in range(12)]))
    f = _one(g, "vanishing")
    assert all(g.findings_for(i) == [f] for i in f.nodes)
    g.findings.append(Finding("opaque", Severity.INFO, 0, "one node"))
    back = load(g.save(tmp_path / "g.json"))
    assert back.findings == g.findings and back.findings[-1].nodes == (0,)
    assert '"nodes"' not in (tmp_path / "g.json").read_text().split('"opaque"')[1]


def test_subgraph_keeps_the_findings_nodes_inside_it():
    """A neighbourhood export keeps a finding when any of its nodes is inside, renumbered."""
    g = _judged(_stack([10.0 ** (0.9 * (i - 11)) for i in range(12)]))
    f = _one(g, "vanishing")
    inside = [0, f.nodes[-1]]
    sub = g.subgraph(inside)
    (kept,) = sub.findings
    assert kept.nodes == (1,) and kept.node == 1


def test_picture_marks_every_node_of_a_finding():
    """The DOT export gives each node a finding names the warning border."""
    g = _judged(_stack([10.0 ** (0.9 * (i - 11)) for i in range(12)]))
    f = _one(g, "vanishing")
    nodes = parse(to_dot(g, options=RenderOptions(max_nodes=None))).nodes
    assert {nodes[f"n{i}"].get("color") for i in f.nodes} == {SEVERITY_COLOURS[Severity.WARNING]}


def test_inspector_marks_every_node_and_n_steps_through_them():
    """n visits every node of the fade (its worst first) before moving on, N steps back; each
    of those tree lines carries the warning mark and each node's details show the finding."""
    g = _judged(_stack([10.0 ** (0.9 * (i - 11)) for i in range(12)]))
    f = _one(g, "vanishing")
    app = InspectorApp(g, source="test")
    visited: list[int | None] = []
    marked: list[bool] = []

    async def main() -> None:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.pause()
            tree = app.screen.query_one(GraphTree)
            for _ in range(len(f.nodes) + 1):
                await pilot.press("n")
                visited.append(tree.current)
                marked.append(tree.cursor_node is not None and "⚠" in tree.cursor_node.label.plain)
            await pilot.press("N")
            visited.append(tree.current)

    asyncio.run(main())
    count = len(f.nodes)
    assert visited[0] == f.node and sorted(visited[:count]) == sorted(f.nodes)
    assert visited[count] == f.node  # one finding: n wraps round to its first stop
    assert visited[-1] == visited[count - 1] and all(marked)
    for nid in f.nodes:
        shown = describe(g, nid, Health.of(g)).renderables
        assert any(f.message in getattr(r, "plain", "") for r in shown)
