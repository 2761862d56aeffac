"""One ``Watch`` over a trainer's fit: what every trainer callback in this package shares.

A trainer owns the training loop, so the watch cannot be a ``with`` block around it: the
callback opens it when training starts (``start``), tells it the trainer's step before each
batch (``step``) and closes it when training ends or fails (``stop``). Steps are the trainer's
global step as it reads once that step's optimizer step is taken (the first step is 1, as in
the run store): every backward of a step under gradient accumulation is that one step.

A trainer without an exception hook (``transformers``) would leave a watch that raised open,
with ``torch.autograd`` still patched, so the watch leaves itself before raising graphscope's
``NonFiniteGradientError``; any other failure is closed by the callback's exception hook where
the trainer has one, or at the next fit's start.

Imports torch and the capture layer; never textual, never a trainer package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from graphscope.autograd.watch import ON_NONFINITE, Watch
from graphscope.errors import NonFiniteGradientError, RunError
from graphscope.health import Thresholds
from graphscope.runs import is_run, open_run


class _FitWatch(Watch):
    """A ``Watch`` that leaves itself before raising graphscope's error out of a backward."""

    def _run(self, original: Callable[..., Any], outputs: Any, args: tuple, kwargs: dict) -> Any:
        try:
            return super()._run(original, outputs, args, kwargs)
        except NonFiniteGradientError:
            self._leave()
            raise


def _optimizer_of(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer behind a trainer's wrapper (accelerate's ``AcceleratedOptimizer``,
    Lightning's ``LightningOptimizer``), or ``None``."""
    while optimizer is not None and not type(optimizer).__module__.startswith("torch."):
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


class TrainerWatch:
    """The watch a trainer callback holds over one fit at a time.

    Args:
        run: The run folder to record into (``None``: captures only, in ``watch.graphs``).
        every: A full capture every ``every`` trainer steps (and at anomalies).
        on_nonfinite: ``"raise"``, ``"warn"`` or ``"ignore"``, as in ``graphscope.watch``.
        warn: Warn about the captures' other findings.
        thresholds: The limits captures are judged with.
        keep: Captured graphs kept in memory (``watch.graphs``).

    Attributes:
        watch: The latest fit's ``Watch`` (kept after the fit for its graphs), or ``None``.

    Raises:
        TypeError, ValueError: As ``graphscope.watch`` does, here rather than at the fit's start.
    """

    def __init__(
        self,
        run: str | Path | None,
        *,
        every: int,
        on_nonfinite: str,
        warn: bool,
        thresholds: Thresholds | None,
        keep: int,
    ) -> None:
        if run is not None and not isinstance(run, (str, Path)):
            raise TypeError(f"run= must be a folder path (str or Path), got {type(run).__name__}")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every= must be a positive int (capture every N-th step), got {every!r}")
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(
                f"on_nonfinite= must be one of {', '.join(map(repr, ON_NONFINITE))}, "
                f"got {on_nonfinite!r}"
            )
        if not isinstance(keep, int) or keep < 0:
            raise ValueError(f"keep= must be an int >= 0 (graphs kept in memory), got {keep!r}")
        self.run = None if run is None else Path(run)
        self.every = every
        self.on_nonfinite = on_nonfinite
        self.warn = warn
        self.thresholds = thresholds
        self.keep = keep
        self.watch: Watch | None = None
        self._checked = False

    def start(self, model: torch.nn.Module, optimizer: Any) -> Watch:
        """Enter a new watch over ``model`` (closing one an interrupted fit left open)."""
        self.stop()
        w = _FitWatch(
            model, every=self.every, keep=self.keep, on_nonfinite=self.on_nonfinite,
            warn=self.warn, thresholds=self.thresholds, optimizer=_optimizer_of(optimizer),
            run=self.run,
        )
        self._checked = False
        self.watch = w.__enter__()
        return w

    def step(self, step: int) -> None:
        """Number the backwards that follow as the trainer's ``step`` (from 1)."""
        w = self.watch
        if w is None or not w.active:
            return
        if not self._checked:
            self._checked = True
            try:
                self._check_store(step)
            except BaseException:
                self.stop()
                raise
        w.set_step(step)

    def stop(self) -> None:
        """Leave the watch (committing the run), if one is open; safe to call again."""
        if self.watch is not None and self.watch.active:
            self.watch.__exit__(None, None, None)  # kept afterwards, for its graphs

    def _check_store(self, first: int) -> None:
        """Refuse a fit that starts at step 1 into a run already holding steps: it would
        replace them. A fit resumed from its checkpoint (first step > 1) continues its run."""
        if first != 1 or self.run is None or not is_run(self.run):
            return
        with open_run(self.run) as run:
            last = max((s[0] for s in (run.last_step(r) for r in run.ranks()) if s), default=None)
        if last is not None:
            raise RunError(
                f"the run {self.run} already holds steps up to {last} of an earlier fit, and this "
                f"fit starts at step 1: give the callback a new run folder (e.g. "
                f"{self.run.parent / (self.run.name + '-2')}), or resume the earlier fit from its "
                f"checkpoint so that its steps continue"
            )
