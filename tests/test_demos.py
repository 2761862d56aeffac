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
