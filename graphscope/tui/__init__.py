"""The terminal inspector: the only package that imports textual (and netext, textual-plot).

Importing ``graphscope.tui`` is cheap: the app is imported when ``inspect`` runs, so
``import graphscope`` never loads textual.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from graphscope.health import Thresholds
    from graphscope.model import Graph
    from graphscope.tui.app import InspectorApp


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
    from graphscope.tui.app import InspectorApp

    _run_app(InspectorApp(graph, source=source, thresholds=thresholds))


def inspect_run(path: str | Path, *, follow: bool = False, thresholds: Thresholds | None = None) -> None:
    """Open the inspector on a recorded run's timeline; returns when the user quits.

    Args:
        path: The run folder given to ``graphscope.watch(..., run=...)``.
        follow: Read the run again every second while training writes it.
        thresholds: Judge the gradients with these instead of the run's own.

    Raises:
        RunError: No run there, or it cannot be read.
        Exception: Whatever crashed the inspector, as for ``inspect``.

    Example:
        >>> graphscope.tui.inspect_run("runs/exp1", follow=True)  # doctest: +SKIP
    """
    from graphscope.runs import open_run
    from graphscope.tui.app import InspectorApp

    with open_run(path) as run:
        _run_app(InspectorApp.for_run(run, source=Path(path).name or str(path), follow=follow,
                                      thresholds=thresholds))


def _run_app(app: InspectorApp) -> None:
    import io

    from rich.console import Console

    # On an unhandled error textual prints its own traceback and run() returns as if the user
    # had quit. The error is raised here instead, so the caller sees one report and a failure.
    app.error_console = Console(file=io.StringIO())
    app.run()
    if app.return_code:
        raise app.crash or RuntimeError(f"the inspector exited with status {app.return_code}")


__all__ = ["inspect", "inspect_run"]
