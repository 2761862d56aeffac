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


class ModeWarning(UserWarning):
    """A model with dropout or batch norm is trained in eval mode, or evaluated in train mode:
    ``model.train()`` / ``model.eval()`` changes what those layers compute."""


# (what torch says, what a teacher would say): the first line of torch's message is matched.
_LESSONS: tuple[tuple[str, str], ...] = (
    (
        "grad can be implicitly created only for scalar outputs",
        "backward() with no argument starts the chain rule from d(out)/d(out) = 1, which only "
        "means something for a single number, such as a loss. Your tensor has several elements, "
        "so autograd does not know how to weigh them. Reduce it first (out.sum().backward() or "
        "out.mean().backward()), or pass gradient=: out.backward(gradient=v) computes the "
        "vector-Jacobian product v^T J, where v has out's shape and says how much each element "
        "of out counts (torch.ones_like(out) gives the same as out.sum().backward()).",
    ),
    (
        "Trying to backward through the graph a second time",
        "The first backward() freed the values the graph had saved for it (to save memory), so "
        "there is nothing left to run the chain rule on. Usually you meant to build the graph "
        "again: run the forward pass once per backward (in a training loop, compute the loss "
        "inside the loop). If you really need two backward passes through one graph, call the "
        "first one as backward(retain_graph=True).",
    ),
    (
        "does not require grad and does not have a grad_fn",
        "Autograd records operations only on tensors that require grad, and nothing this tensor "
        "was computed from does: it is a constant as far as autograd knows, so there is no "
        "graph to run backward on. Create your inputs or weights with requires_grad=True "
        "(torch.tensor(2.0, requires_grad=True), or w.requires_grad_()), and make sure the "
        "forward pass did not run under torch.no_grad() or after .detach().",
    ),
    (
        "a leaf Variable that requires grad is being used in an in-place operation",
        "This tensor is a leaf (you created it, with requires_grad=True) and autograd "
        "accumulates its gradient into .grad; changing it in place (w += 1, w.add_(1), "
        "w[0] = 0) would change the value the graph used, so autograd refuses. To update "
        "weights, do it outside the graph: with torch.no_grad(): w -= lr * w.grad (that is "
        "what optimizer.step() does); to compute with a changed copy, write w = w + 1.",
    ),
    (
        "has been modified by an inplace operation",
        "An op saved this tensor to compute its gradient later, and the tensor was changed in "
        "place afterwards (x += 1, relu_(), x[0] = 0), so backward would use a wrong value. "
        "Replace the in-place op by its out-of-place form (x = x + 1, torch.relu(x)), or "
        "clone() the tensor before changing it.",
    ),
    (
        "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed",
        "Only leaves (tensors you created with requires_grad=True, and parameters) keep a "
        ".grad: the gradients of intermediate results are passed on by the chain rule and then "
        "dropped to save memory, so y.grad is None. Call y.retain_grad() before backward() to "
        "keep it, or capture the graph: graphscope.capture(loss) records every node's "
        "gradient (node.grad, and node.grad_value for small tensors) without changing yours.",
    ),
)


def explain(error: BaseException | str) -> str | None:
    """What autograd did and why, in a teacher's words, for the mistakes learners make most.

    Args:
        error: An exception torch raised (or a warning's text): non-scalar ``backward()``, a
            second backward without ``retain_graph``, a tensor with no grad_fn, an in-place
            op on a leaf or on a saved tensor, ``.grad`` of a non-leaf.

    Returns:
        The explanation, or ``None`` for an error this table does not know.

    Example:
        >>> explain("grad can be implicitly created only for scalar outputs")[:40]
        'backward() with no argument starts the c'
    """
    text = str(error)
    for said, lesson in _LESSONS:
        if said in text:
            return lesson
    return None
