"""The capture layer: the only package that walks torch autograd.

Exports ``capture`` and ``graph_of``; the rest (walk, hooks, stats) are its parts.
"""

from graphscope.autograd.capture import capture, graph_of
from graphscope.autograd.hooks import active_hook_count

__all__ = ["active_hook_count", "capture", "graph_of"]
