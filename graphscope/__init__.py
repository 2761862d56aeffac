"""graphscope: see and debug PyTorch's autograd graph.

Public API only. ``import graphscope`` loads neither torch, textual nor graphviz: the capture
layer (torch) is imported the first time ``capture``, ``watch``, ``record``, ``graph_of`` or
``active_hook_count`` is used, so ``graphscope.load`` and the inspector open saved captures without paying for torch.
"""

from __future__ import annotations

from typing import Any

from graphscope.diagnostics import diagnose
from graphscope.errors import (
    CaptureError,
    CaptureTypeError,
    DeadUnitWarning,
    EngineError,
    ExplodingGradientWarning,
    GradientWarning,
    GraphscopeError,
    LoadError,
    ModeWarning,
    NonFiniteGradientError,
    NonFiniteGradientWarning,
    RecordingWarning,
    RunError,
    UnderflowWarning,
    UnusedParameterWarning,
    VanishingGradientWarning,
    explain,
)
from graphscope.drawing import render, to_dot
from graphscope.export.options import RenderOptions
from graphscope.health import Thresholds
from graphscope.model import Edge, Finding, GradStats, Graph, Node, ParamInfo, Severity, load
from graphscope.tui import inspect

__version__ = "0.1.0"

_TORCH_SIDE = {"capture", "graph_of", "active_hook_count", "watch", "record"}


def __getattr__(name: str) -> Any:
    if name in _TORCH_SIDE:
        import graphscope.autograd as _autograd

        return getattr(_autograd, name)
    raise AttributeError(f"module 'graphscope' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _TORCH_SIDE)


__all__ = [
    "CaptureError",
    "CaptureTypeError",
    "DeadUnitWarning",
    "Edge",
    "EngineError",
    "ExplodingGradientWarning",
    "Finding",
    "GradStats",
    "GradientWarning",
    "Graph",
    "GraphscopeError",
    "LoadError",
    "ModeWarning",
    "Node",
    "NonFiniteGradientError",
    "NonFiniteGradientWarning",
    "ParamInfo",
    "RecordingWarning",
    "RenderOptions",
    "RunError",
    "Severity",
    "Thresholds",
    "UnderflowWarning",
    "UnusedParameterWarning",
    "VanishingGradientWarning",
    "active_hook_count",
    "capture",
    "diagnose",
    "explain",
    "graph_of",
    "inspect",
    "load",
    "record",
    "render",
    "to_dot",
    "watch",
]
