"""The terminal inspector: the only package that imports textual (and netext, textual-plot).

Importing ``graphscope.tui`` is cheap: the app is imported when ``inspect`` runs, so
``import graphscope`` never loads textual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from graphscope.diagnostics import Thresholds
    from graphscope.model import Graph


def inspect(graph: Graph, *, source: str = "graph", thresholds: Thresholds | None = None) -> None:
    """Open the inspector on ``graph`` in this terminal; returns when the user quits.

    Args:
        graph: A capture, from ``graphscope.capture(loss)`` or ``graphscope.load(path)``.
        source: A name for the header and for exported files.
        thresholds: The vanishing/exploding limits used for colours and bands.

    Example:
        >>> graphscope.inspect(graphscope.capture(loss))  # doctest: +SKIP
    """
    from graphscope.tui.app import InspectorApp

    InspectorApp(graph, source=source, thresholds=thresholds).run()


__all__ = ["inspect"]
