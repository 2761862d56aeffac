"""The built-in demos: each teaches what its catalogue entry says."""

from __future__ import annotations

from collections import Counter

from graphscope.demos import DEMOS


def test_lstm_demo_shows_the_gates_of_every_step():
    """The lstm demo is written out, so each of its 6 steps per layer shows 3 sigmoid gates, 2
    tanh and the cell-state sum, not one fused LSTM node."""
    graph = DEMOS["lstm"].build()
    ops = Counter(n.label for n in graph.nodes if n.kind == "op")
    steps = 6 * 2
    assert ops["sigmoid"] == 3 * steps and ops["tanh"] == 2 * steps and ops["add"] >= steps
    assert not any("rnn" in label or "lstm" in label for label in ops)
    assert "6 steps" in DEMOS["lstm"].description and "c = f*c + i*g" in DEMOS["lstm"].lesson


def test_every_demo_carries_its_lesson_into_the_graph():
    """Demo.build puts the lesson in graph.meta, where the inspector's banner reads it."""
    demo = DEMOS["linear_regression"]
    assert demo.build().meta["lesson"] == demo.lesson


def test_demo_inputs_and_loss_carry_the_demos_names():
    """A demo's inputs are named as its code names them (attention's ``x``, not ``leaf``), and
    its loss is ``loss``: build passes them to capture(names=), which cannot see the demo's code."""
    graph = DEMOS["attention"].build()
    leaves = [n for n in graph.nodes if n.kind == "leaf"]
    assert [(n.label, n.var_name) for n in leaves] == [("x", "x")]
    (root,) = [graph.nodes[r] for r in graph.roots]
    assert root.var_name == "loss"


def test_lstm_demo_picture_frames_every_step_of_both_layers():
    """The lstm demo's picture has one frame per time step and layer, in order, named after the
    module that ran it, with the gates named by role."""
    from graphscope.export.dot import to_dot
    from graphscope.export.recurrent import find_lstm_steps

    graph = DEMOS["lstm"].build()
    steps = find_lstm_steps(graph)
    assert [(s.chain, s.index, s.module) for s in steps] == [
        (layer, t, f"layers.{layer}") for layer in (0, 1) for t in range(1, 7)]
    text = to_dot(graph)
    for layer in (0, 1):
        for t in range(1, 7):
            assert f'label="step {t} (LSTMGates layers.{layer})\\ngrad rms at c{t} ' in text
    assert text.count("subgraph cluster_step") == 12
    assert text.count('label="forget gate f σ') == 12
