"""One judgement of gradient health: the picture, the inspector and the findings agree.

Torch builds the captures (a GradScaler-scaled healthy MLP, a 20-layer sigmoid MLP whose first
layers vanish relative to the last); every view is then read back and compared.
"""

from __future__ import annotations

import math

import pytest
import torch

import graphscope
from graphscope.demos import DEMOS
from graphscope.diagnostics import diagnose
from graphscope.export import to_dot
from graphscope.formatting import BAND_COLOURS, magnitude_colour
from graphscope.health import (
    Band,
    Health,
    Thresholds,
    depth_trends,
    forward_params,
    time_trends,
)
from graphscope.model import PARAM, Graph, load
from graphscope.tui.app import InspectorApp
from graphscope.tui.widgets.local_graph import local_picture
from tests.export.dotfile import parse
from tests.graphs import Builder, stats


def _scaled_relu_mlp(scale: float) -> graphscope.Graph:
    torch.manual_seed(0)
    model, forward = DEMOS["relu_mlp"].make()
    scaled = torch.amp.GradScaler("cpu", init_scale=scale).scale(forward())
    g = graphscope.capture(scaled, model=model, warn=False)
    scaled.backward()
    return g


def _tui_colour(graph: graphscope.Graph, node_id: int, health: Health) -> str:
    """The colour the inspector's neighbours view writes the node's RMS in."""
    nodes, _ = local_picture(graph, node_id, health)
    text = nodes[node_id]["text"]
    (span,) = [s for s in text.spans if "●" in text.plain[s.start:s.end]]
    return str(span.style)


def _agree(graph: graphscope.Graph) -> dict[int, Band]:
    """Picture fill == inspector colour == the shared colour of the node's band, for every
    executed node; returns the bands."""
    health = Health.of(graph)
    fills = parse(to_dot(graph, options=graphscope.RenderOptions(max_nodes=None))).nodes
    bands = {}
    for n in graph.nodes:
        if n.grad is None:
            continue
        colour = magnitude_colour(n, health)
        assert fills[f"n{n.id}"]["fillcolor"] == colour, n.title
        assert _tui_colour(graph, n.id, health) == colour, n.title
        bands[n.id] = health.band(n)
    return bands


@pytest.mark.parametrize("scale", [2.0**24, 2.0**30])
def test_scaled_healthy_model_is_painted_healthy_everywhere(scale):
    """A GradScaler-scaled healthy model: no red node in the picture or the inspector, and no
    exploding finding, although its gradients pass the unscaled exploding limit."""
    g = _scaled_relu_mlp(scale)
    assert g.meta["loss_scale"] == scale
    assert max(n.grad.rms for n in g.nodes if n.grad is not None) >= Thresholds().exploding_rms
    bands = _agree(g)
    assert Band.EXPLODING not in bands.values()
    assert not [f for f in g.findings if f.kind == "exploding"]


def test_relative_vanishing_is_blue_exactly_where_the_findings_say():
    """Sigmoid stack: the parameters the findings call vanishing are the ones painted blue."""
    g = DEMOS["sigmoid_mlp"].build()
    bands = _agree(g)
    vanishing = {n for f in g.findings if f.kind == "vanishing" for n in f.nodes}
    blue_params = {i for i, b in bands.items() if b is Band.VANISHING and g.nodes[i].kind == PARAM}
    assert vanishing and blue_params == vanishing
    # Among them, some are vanishing only relative to the largest (above the absolute limit).
    assert any(g.nodes[i].grad.rms > Thresholds().vanishing_rms for i in vanishing)


def test_thresholds_are_stored_with_the_capture_and_in_its_file(tmp_path):
    """capture(thresholds=T) keeps T; a saved and loaded capture is judged with T again."""
    torch.manual_seed(0)
    model, forward = DEMOS["sigmoid_mlp"].make()
    t = Thresholds(vanishing_ratio=1e-2, exploding_rms=1e3)
    loss = forward()
    g = graphscope.capture(loss, model=model, warn=False, thresholds=t)
    loss.backward()
    back = load(g.save(tmp_path / "g.json"))
    assert Thresholds.of(back) == t
    assert [(f.kind, f.node) for f in diagnose(back)] == [(f.kind, f.node) for f in g.findings]
    assert diagnose(back) != diagnose(back, thresholds=Thresholds())


def test_inspector_given_thresholds_rediagnoses_without_touching_the_graph():
    """inspect(g, thresholds=T): findings and colours are T's; the user's graph is unchanged."""
    g = DEMOS["sigmoid_mlp"].build()
    before = list(g.findings)
    strict = Thresholds(vanishing_ratio=0.5)
    app = InspectorApp(g, thresholds=strict)
    assert app.graph.findings == diagnose(g, thresholds=strict) != before
    assert g.findings == before and Thresholds.of(g) == Thresholds()
    assert Thresholds.of(app.graph) == strict
    health = Health.of(app.graph)
    blue = {n.id for n in forward_params(app.graph) if health.band(n) is Band.VANISHING}
    assert blue == {n for f in app.graph.findings if f.kind == "vanishing" for n in f.nodes}


def test_render_with_thresholds_marks_the_findings_they_give():
    """A picture drawn with other thresholds colours and marks by those, not the capture's."""
    g = DEMOS["sigmoid_mlp"].build()
    strict = Thresholds(vanishing_ratio=0.5)
    text = to_dot(g, options=graphscope.RenderOptions(max_nodes=None, thresholds=strict))
    fills = parse(text).nodes
    newly = {n for f in diagnose(g, thresholds=strict) if f.kind == "vanishing" for n in f.nodes}
    newly -= {n for f in g.findings if f.kind == "vanishing" for n in f.nodes}
    assert newly
    for nid in newly:
        assert fills[f"n{nid}"]["fillcolor"] == BAND_COLOURS[Band.VANISHING]


def test_colour_scale_bands_and_shades_by_rms():
    """Bare statistics get the band their RMS falls in, and healthy ones a shade by log RMS."""
    h = Health(thresholds=Thresholds())  # limits 1e-8 and 1e6, no loss scale
    assert h.band(stats(1e-9)) is Band.VANISHING and h.band(stats(1e-8)) is Band.VANISHING
    assert h.band(stats(1e-2)) is Band.HEALTHY
    assert h.band(stats(1e6)) is Band.EXPLODING and h.band(stats(1e7)) is Band.EXPLODING
    assert magnitude_colour(stats(1e-9), h) == "#4f7fd9"
    assert magnitude_colour(stats(1e7), h) == "#e53935"
    low, high = magnitude_colour(stats(1e-2), h), magnitude_colour(stats(1e2), h)
    assert low != high and BAND_COLOURS[Band.HEALTHY] not in (low, high)
    # log10 RMS 0 is 8/14 of the way from -8 to 6: 5/7 of the way from the 2nd stop to the 3rd.
    assert magnitude_colour(stats(1.0), h) == "#b5d65c"
    # Limits 1e-3 and 1e3 put RMS 0.1 and 10 exactly on the 2nd and 3rd of the four stops.
    narrow = Health(thresholds=Thresholds(vanishing_rms=1e-3, exploding_rms=1e3))
    assert magnitude_colour(stats(0.1), narrow) == "#66bb6a"
    assert magnitude_colour(stats(10.0), narrow) == "#d4e157"


def test_bad_thresholds_are_a_clear_error():
    """A negative or inverted limit is refused, naming the field."""
    with pytest.raises(ValueError, match="exploding_rms"):
        Thresholds(exploding_rms=-1)
    with pytest.raises(ValueError, match="below exploding_rms"):
        Thresholds(vanishing_rms=1e3, exploding_rms=1e2)


def recurrence(steps: int, fade: float, *, shared: bool = True) -> Graph:
    """An unrolled tanh RNN, h_t = tanh(x_t W_ih + h_{t-1} W_hh), as autograd records it: step
    t's tanh receives a gradient of RMS ``fade ** (steps - 1 - t)`` (the last step gets 1).
    ``shared=False`` gives every step its own weight: a stack of layers, not a recurrence."""
    b = Builder()
    loss = b.add("MseLossBackward0", "mse_loss", shapes=((),), rms=1.0, root=True)
    head = b.add("AddmmBackward0", "addmm", module="head", rms=1.0)
    b.edge(head, loss)
    hw = b.add("AccumulateGrad", "head.weight", kind=PARAM, names=("head.weight",), module="head")
    b.edge(hw, head, input_nr=2)
    w_hh = None
    consumer = head
    for t in reversed(range(steps)):
        tanh = b.add("TanhBackward0", "tanh", rms=fade ** (steps - 1 - t))
        b.edge(tanh, consumer, input_nr=1)
        add = b.add("AddBackward0", "add", rms=fade ** (steps - 1 - t))
        b.edge(add, tanh)
        x_mm = b.add("AddmmBackward0", "addmm", rms=fade ** (steps - 1 - t))
        b.edge(x_mm, add, input_nr=0)
        if w_hh is None or not shared:
            name = "rnn.weight_hh_l0" if shared else f"l{t}.weight"
            w_hh = b.add("AccumulateGrad", name, kind=PARAM, names=(name,), module="rnn",
                         rms=0.05)
        h_mm = b.add("MmBackward0", "mm", rms=fade ** (steps - 1 - t))
        b.edge(h_mm, add, input_nr=1)
        b.edge(w_hh, h_mm, input_nr=1)
        consumer = h_mm
    return b.graph()


def test_a_gradient_fading_through_time_is_a_time_trend_on_the_shared_weight():
    """100 steps of a recurrence fading 0.5x a step: one vanishing time trend, first step first,
    on the weight every step shares."""
    g = recurrence(100, 0.5)
    (trend,) = time_trends(g)
    assert trend.band is Band.VANISHING and trend.label == "tanh"
    assert [g.nodes[i].title for i in trend.shared] == ["rnn.weight_hh_l0"]
    assert len(trend.steps) == 100 and g.nodes[trend.steps[0]].grad.rms < 1e-20
    assert math.isclose(trend.growth, 0.5 ** 99, rel_tol=1e-6)


def test_a_gradient_growing_through_a_stack_of_layers_is_a_depth_trend_on_all_its_weights():
    """20 tanh layers, each with its own weight, the gradient growing 2x a layer toward the
    input: one exploding depth trend over all 20 weights, first layer first; the same graph
    with one shared weight is time, not depth."""
    g = recurrence(20, 2.0, shared=False)
    (trend,) = depth_trends(g)
    assert trend.band is Band.EXPLODING and trend.label == "tanh"
    assert len(trend.steps) == 20 and math.isclose(trend.growth, 2.0 ** 19, rel_tol=1e-6)
    assert [g.nodes[i].title for i in trend.shared] == [f"l{t}.weight" for t in range(20)]
    assert g.nodes[trend.steps[0]].grad.rms == 2.0 ** 19
    assert depth_trends(recurrence(20, 2.0)) == []
    assert depth_trends(recurrence(20, 1.3, shared=False)) == []  # 190x over 20 layers
    assert depth_trends(recurrence(2, 1e3, shared=False)) == []  # too shallow for a trend


def test_no_time_trend_for_a_stack_of_layers_a_short_or_a_healthy_recurrence():
    """Distinct weights per step (depth, not time), 6 steps, or 0.9x a step over 30 (0.05 in
    all): no time trend."""
    assert time_trends(recurrence(100, 0.5, shared=False)) == []
    assert time_trends(recurrence(6, 0.01)) == []
    assert time_trends(recurrence(30, 0.9)) == []
