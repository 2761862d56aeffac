"""Snapshot tests of the inspector's main views (pytest-textual-snapshot), by feature.

Update after an intended change with ``pytest tests/tui/test_snapshots.py --snapshot-update``
and look at the diff in the report before committing.
"""

from __future__ import annotations

from graphscope.tui.app import InspectorApp
from tests.graphs import diamond, extremes, sigmoid_mlp


def test_opens_on_the_loss(snap_compare):
    """The first screen: tree on the loss, its details, the findings list, the footer."""
    assert snap_compare(InspectorApp(sigmoid_mlp(), source="mlp"), terminal_size=(120, 40))


def test_opens_at_80_columns(snap_compare):
    """At 80x24 the tree, details and findings still fit and the footer shows its keys."""
    assert snap_compare(InspectorApp(sigmoid_mlp(), source="mlp"), terminal_size=(80, 24))


def test_finding_jump_shows_nested_node_and_hint(snap_compare):
    """n: the worst finding's node, nested under its addmm, with the finding's hint."""
    assert snap_compare(InspectorApp(sigmoid_mlp(), source="mlp"), terminal_size=(120, 40),
                        press=["n"])


def test_reference_line_for_shared_input(snap_compare):
    """A shared input's second use shows as a ↪ reference line."""
    assert snap_compare(InspectorApp(diamond(), source="diamond"), terminal_size=(120, 30),
                        press=["l", "l", "l", "l"])


def test_gradient_flow_tab(snap_compare):
    """The gradient-flow tab: per-layer RMS on a log axis with the layer legend."""
    assert snap_compare(InspectorApp(sigmoid_mlp(), source="mlp"), terminal_size=(120, 40),
                        press=["3"])


def test_help_screen(snap_compare):
    """? shows the key reference and how to read the tree."""
    assert snap_compare(InspectorApp(sigmoid_mlp(), source="mlp"), terminal_size=(100, 30),
                        press=["question_mark"])


def test_gradient_flow_with_extreme_values(snap_compare):
    """Inf, NaN, 1e300, 0 and 1e-300 layers: clipped to the plot's edges and marked ×, ▲, ▼."""
    assert snap_compare(InspectorApp(extremes(), source="extremes"), terminal_size=(120, 40),
                        press=["3"])
