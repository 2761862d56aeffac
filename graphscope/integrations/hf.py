"""``GraphscopeCallback`` for Hugging Face ``transformers.Trainer``: its training recorded as
``watch`` would.

``Trainer(..., callbacks=[GraphscopeCallback("runs/exp1", every=100)])`` records every
optimizer step into the run store: the watch is entered at ``on_train_begin``, given
``state.global_step + 1`` at each ``on_step_begin`` (once per optimizer step, before its first
micro-batch) and left at ``on_train_end``. Under ``gradient_accumulation_steps`` the
micro-batches of a step are one step (the row holds the accumulated gradients and the sum of
the losses the backwards started from, which the Trainer divides by the accumulation).
Mixed precision: with a GradScaler (``fp16=True`` on a GPU) its scale is read off the scaled
loss and stored with each step, so readers show true gradients, and a step whose scaled
gradients overflowed (the scaler skips it) is recorded with its non-finite gradients and finite
loss, which the run's analysis names a skipped step, not a NaN. On the CPU (transformers 5,
accelerate 1.x) ``bf16=True`` is bfloat16 autocast without a scaler (bfloat16 activations in
the captures, float32 gradients), and ``fp16=True`` gets neither autocast nor a scaler: it
trains in float32, as the captures show. ``on_nonfinite="raise"`` ends ``trainer.train()``
with ``NonFiniteGradientError``.

The Trainer has no exception hook: a watch that raises leaves itself first, and a fit that
failed otherwise (an interrupt, an error in your code) leaves its watch open until the next
``train()`` or ``callback.close()``.

Imports torch, the capture layer and transformers; never textual.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graphscope.autograd.watch import Watch
from graphscope.health import Thresholds
from graphscope.integrations.fit import TrainerWatch

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError(
        "graphscope.integrations.hf needs Hugging Face transformers: pip install "
        f"'graphscope[hf]' (or pip install transformers accelerate); {e}"
    ) from e


class GraphscopeCallback(TrainerCallback):
    """Records a ``transformers.Trainer``'s training into a run store, one step per optimizer step.

    Args:
        run: The run folder (created if missing); ``None`` records nothing to disk and keeps
            the captures in ``callback.watch.graphs``.
        every: A full graph capture every ``every`` steps (1, 1 + every, ...), and at anomalies
            (the first non-finite step, gradient-norm spikes). 100 by default.
        on_nonfinite: ``"raise"`` ends ``train()`` with ``NonFiniteGradientError`` at the first
            captured step whose gradients hold NaN/Inf; ``"warn"`` warns; ``"ignore"`` does
            neither.
        warn: Warn about the captures' other findings (vanishing, exploding, dead, unused).
        thresholds: The limits captures are judged with (the defaults when ``None``).
        keep: Captured graphs kept in memory, in ``callback.watch.graphs``.

    Raises:
        TypeError, ValueError: An argument out of range (as ``graphscope.watch``).
        RunError: At the first step, when a training starting at step 1 would write into a run
            that already holds an earlier one's steps.

    Example:
        >>> from graphscope.integrations.hf import GraphscopeCallback  # doctest: +SKIP
        >>> trainer = Trainer(model, args, train_dataset=ds,
        ...                   callbacks=[GraphscopeCallback("runs/exp1")])  # doctest: +SKIP
        >>> trainer.train()  # doctest: +SKIP
    """

    def __init__(
        self,
        run: str | Path | None = None,
        *,
        every: int = 100,
        on_nonfinite: str = "warn",
        warn: bool = True,
        thresholds: Thresholds | None = None,
        keep: int = 1,
    ) -> None:
        self._fit = TrainerWatch(run, every=every, on_nonfinite=on_nonfinite, warn=warn,
                                 thresholds=thresholds, keep=keep)

    @property
    def watch(self) -> Watch | None:
        """The training's watch (its ``graphs``, ``last``, ``steps``); ``None`` before it."""
        return self._fit.watch

    def close(self) -> None:
        """Leave the watch now (after a ``train()`` that failed); safe to call again."""
        self._fit.stop()

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        if model is None:
            raise TypeError("GraphscopeCallback needs the Trainer's model (on_train_begin got none)")
        self._fit.start(model, optimizer)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._fit.step(int(state.global_step) + 1)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._fit.stop()
