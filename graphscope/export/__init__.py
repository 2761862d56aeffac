"""Draws a captured graph: DOT text (``dot``), layout through a Graphviz engine (``render``),
and the reductions that keep a big graph drawable (``collapse``).

Imports ``graphscope.model``, ``graphscope.formatting`` and ``graphscope.diagnostics`` only;
never torch, textual or the ``graphviz`` Python package (engines run as subprocesses).
"""

from graphscope.export.dot import to_dot
from graphscope.export.options import RenderOptions
from graphscope.export.render import Rendering, find_engine, render_graph

__all__ = ["RenderOptions", "Rendering", "find_engine", "render_graph", "to_dot"]
