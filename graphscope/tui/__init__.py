"""The terminal inspector: the only package that imports textual (and netext, textual-plot).

Importing ``graphscope.tui`` is cheap: the app is imported when ``inspect`` runs, so
``import graphscope`` never loads textual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from graphscope.health import Thresholds
    from graphscope.model import Graph


def inspect(graph: Graph, *, source: str = "graph", thresholds: Thresholds | None = None) -> None:
    """Open the inspector on ``graph`` in this terminal; returns when the user quits.

    Args:
        graph: A capture, from ``graphscope.capture(loss)`` or ``graphscope.load(path)``.
        source: A name for the header and for exported files.
        thresholds: Judge the gradients with these instead of the capture's own: colours,
            bands and findings are all recomputed with them (the graph is not modified).

    Raises:
        Exception: Whatever crashed the inspector, raised again once the terminal is restored
            (an unhandled error ends the app; it is not swallowed).

    Example:
        >>> graphscope.inspect(graphscope.capture(loss))  # doctest: +SKIP
    """
    import io

    from rich.console import Console

    from graphscope.tui.app import InspectorApp

    app = InspectorApp(graph, source=source, thresholds=thresholds)
    # On an unhandled error textual prints its own traceback and run() returns as if the user
    # had quit. The error is raised here instead, so the caller sees one report and a failure.
    app.error_console = Console(file=io.StringIO())
    app.run()
    if app.return_code:
        raise app.crash or RuntimeError(f"the inspector exited with status {app.return_code}")


__all__ = ["inspect"]
