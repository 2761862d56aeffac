"""``graphscope.render`` and ``graphscope.to_dot``: draw a capture, a saved capture file, or a
tensor's autograd graph.

Sits above the capture and export layers: it may import ``graphscope.autograd`` (and so torch),
but only inside ``render`` and only when handed a tensor, so ``import graphscope`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphscope.errors import CaptureTypeError
from graphscope.export.dot import to_dot as _graph_to_dot
from graphscope.export.options import RenderOptions
from graphscope.export.render import Progress, Rendering, render_graph
from graphscope.model import Graph, load


def render(
    x: Any,
    path: str | Path | None = None,
    *,
    model: Any = None,
    options: RenderOptions | None = None,
    progress: Progress | None = None,
    **overrides: Any,
) -> Rendering:
    """Draw an autograd graph; save it when ``path`` is given.

    Args:
        x: A ``Graph`` (from ``graphscope.capture`` or ``graphscope.load``), the path of a saved
            capture (``.json``), or a tensor. For a tensor, the latest capture of it is drawn
            (with gradients if a backward ran); if it was never captured, its structure only,
            walked without arming anything, so drawing changes nothing a later backward sees.
        path: Where to write the picture; the suffix picks the format: ``.svg``, ``.png``,
            ``.pdf`` (system Graphviz only), ``.dot`` (no engine needed) or ``.json`` (the
            capture itself).
        model: For a tensor that was never captured: the ``nn.Module`` whose parameter names
            label the weights (as ``capture(loss, model=model)``).
        options: A ``RenderOptions``; the defaults when ``None``.
        progress: Called with a short message at each slow step (reducing, laying out,
            writing). Quiet when ``None``.
        **overrides: ``RenderOptions`` fields to change, e.g. ``max_nodes=100``,
            ``depth=2``, ``legend=False``, ``rankdir="LR"``, ``engine="graphviz-pure"``.

    Returns:
        A ``Rendering``: ``.dot``, ``.svg``, ``.save(path)``; it shows itself in Jupyter.

    Raises:
        EngineError: ``path`` needs a Graphviz engine that is not installed (the message says
            how to install one).
        CaptureTypeError: ``x`` is none of the above.
        TypeError: An override is not a ``RenderOptions`` field.

    Example:
        >>> graph = graphscope.capture(loss)  # doctest: +SKIP
        >>> loss.backward()  # doctest: +SKIP
        >>> graphscope.render(graph, "model.svg", max_nodes=200)  # doctest: +SKIP
    """
    opts = RenderOptions.of(options, **overrides)
    return render_graph(_graph(x, model), path, options=opts, progress=progress)


def to_dot(x: Any, *, model: Any = None, options: RenderOptions | None = None, **overrides: Any) -> str:
    """The Graphviz DOT text of an autograd graph, with no engine needed (torchviz's ``make_dot``).

    Args:
        x: A ``Graph``, the path of a saved capture, or a tensor (as ``render``).
        model: For a tensor never captured: the ``nn.Module`` that names the weights.
        options: A ``RenderOptions``; the defaults when ``None``.
        **overrides: ``RenderOptions`` fields to change, e.g. ``max_nodes=None``.

    Returns:
        DOT source; node ``n<id>`` is graph node ``id``.

    Raises:
        CaptureTypeError: ``x`` is not a Graph, a path or a tensor.

    Example:
        >>> print(graphscope.to_dot(loss, model=model))  # doctest: +SKIP
    """
    return _graph_to_dot(_graph(x, model), options=RenderOptions.of(options, **overrides))


def _graph(x: Any, model: Any) -> Graph:
    if isinstance(x, Graph):
        return x
    if isinstance(x, (str, Path)):
        return load(x)
    if hasattr(x, "grad_fn") and hasattr(x, "requires_grad"):  # a tensor, told without torch
        from graphscope.autograd import graph_of, structure

        return graph_of(x) or structure(x, model=model)
    raise CaptureTypeError(
        f"render() draws a graphscope Graph, the path of a saved capture, or a torch tensor; "
        f"got {type(x).__name__}. Capture one first: graph = graphscope.capture(loss)"
    )
