"""The capture layer: the only package that walks torch autograd.

Exports ``capture``, ``graph_of``, ``watch`` and ``record``; the rest (walk, hooks, stats,
recording) are their parts.
"""

from graphscope.autograd.capture import LiveGraph, capture, graph_of, structure
from graphscope.autograd.hooks import active_hook_count
from graphscope.autograd.recording import record
from graphscope.autograd.watch import watch

__all__ = [
    "LiveGraph",
    "active_hook_count", "capture", "graph_of", "record", "structure", "watch"]
