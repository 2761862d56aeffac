"""graphscope's exceptions and warning classes.

Owns every error type a user can catch. Imports nothing from graphscope and nothing heavy, so
any layer may raise these.
"""

from __future__ import annotations

from typing import Any


class GraphscopeError(Exception):
    """Base class of every error graphscope raises on purpose."""


class CaptureError(GraphscopeError, ValueError):
    """The tensor given to ``capture`` has no autograd graph to walk."""


class CaptureTypeError(GraphscopeError, TypeError):
    """``capture`` was given something that is not a tensor (or a list/tuple of tensors)."""


class LoadError(GraphscopeError, ValueError):
    """A capture file is missing, corrupt, truncated, from another tool or a newer version."""


class RunError(GraphscopeError, ValueError):
    """A run store (``watch(..., run=PATH)``) is missing, corrupt, from another tool, or has a
    schema version this graphscope cannot read."""


class EngineError(GraphscopeError, RuntimeError):
    """No Graphviz engine can produce the requested output format."""


class NonFiniteGradientError(GraphscopeError, FloatingPointError):
    """A watched backward produced NaN or Inf gradients (``watch(on_nonfinite="raise")``).

    Attributes:
        graph: The capture of the failing step, with statistics and findings.
        finding: The ``nonfinite_origin`` (or ``nonfinite_loss``) finding that names the node,
            its module and its source line.
        step: The watched backward call number (1-based).
    """

    def __init__(self, message: str, *, graph: Any, finding: Any, step: int) -> None:
        super().__init__(message)
        self.graph = graph
        self.finding = finding
        self.step = step


class GradientWarning(UserWarning):
    """Base class of the warnings graphscope issues for its findings."""


class NonFiniteGradientWarning(GradientWarning):
    """A NaN or Inf appeared in the gradients (or in the loss itself)."""


class VanishingGradientWarning(GradientWarning):
    """Gradients shrink to almost nothing on their way back to the parameters."""


class UnderflowWarning(VanishingGradientWarning):
    """float16 gradients flush to zero because no loss scale (``GradScaler``) keeps them in
    range; a ``VanishingGradientWarning``, so filters for those catch it too."""


class ExplodingGradientWarning(GradientWarning):
    """Gradients grow very large on their way back to the parameters."""


class DeadUnitWarning(GradientWarning):
    """Some units pass exactly zero gradient (e.g. ReLUs that never fire)."""


class UnusedParameterWarning(GradientWarning):
    """A parameter that requires grad got no gradient from this loss."""


class RecordingWarning(UserWarning):
    """graphscope could not record part of a backward pass (the pass itself was unaffected), or
    a capture cannot record anything (its graph was already freed by an earlier backward)."""
