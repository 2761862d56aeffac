"""``GraphscopeCallback`` for PyTorch Lightning: a ``Trainer``'s fit recorded as ``watch`` would.

``Trainer(callbacks=[GraphscopeCallback("runs/exp1", every=100)])`` records every training step
into the run store: the watch is entered at ``on_train_start`` (after the sanity check), given
``trainer.global_step + 1`` at each batch start (the step the batch's gradients go into), and
left at ``on_train_end``, ``on_exception`` and ``teardown``. Under ``accumulate_grad_batches``
the batches of one optimizer step are one step (the row holds the accumulated gradients and the
sum of the losses Lightning's backwards started from, which it divides by the accumulation).
Mixed precision: with a GradScaler (``precision="16-mixed"`` on a GPU, or
``plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))]``) the
scale is read off the scaled loss and stored with each step, so readers show true gradients,
and a step whose scaled gradients overflowed (the scaler skips it) is recorded with its
non-finite gradients and finite loss, which the run's analysis names a skipped step, not a NaN.
On the CPU Lightning turns ``precision="16-mixed"`` into ``"bf16-mixed"`` (it warns):
bfloat16 autocast without a scaler, float32 parameters and gradients, bfloat16 activations in
the captures; ``"bf16-true"`` records bfloat16 parameters. ``on_nonfinite="raise"`` fails the
fit with ``NonFiniteGradientError`` out of the backward, as Lightning re-raises a callback's error.
Under ``strategy="ddp"`` each process records its rank into the one run, and the watch checks
each rank's gradients before the all-reduce of the DDP wrapper Lightning made (so a NaN is traced
to the rank where it was born), with the parameters named as in the ``LightningModule``.

Works with ``lightning`` (``lightning.pytorch``) and the standalone ``pytorch_lightning``: the
callback derives from the ``Callback`` of each one installed, so either ``Trainer`` takes it.

Imports torch, the capture layer and Lightning; never textual.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from graphscope.autograd.distributed import reduced_by
from graphscope.autograd.watch import Watch
from graphscope.health import Thresholds
from graphscope.integrations.fit import TrainerWatch


def _callback_bases() -> tuple[type, ...]:
    bases = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            bases.append(importlib.import_module(name).Callback)
        except ImportError:
            continue
    if not bases:
        raise ImportError(
            "graphscope.integrations.lightning needs PyTorch Lightning: pip install "
            "'graphscope[lightning]' (or pip install lightning)"
        )
    return tuple(dict.fromkeys(bases))


class GraphscopeCallback(*_callback_bases()):  # type: ignore[misc]
    """Records a Lightning fit into a run store, one step per optimizer step.

    Args:
        run: The run folder (created if missing); ``None`` records nothing to disk and keeps
            the captures in ``callback.watch.graphs``.
        every: A full graph capture every ``every`` steps (1, 1 + every, ...), and at anomalies
            (the first non-finite step, gradient-norm spikes). 100 by default: a capture costs
            a full graph walk, the per-step numbers almost nothing.
        on_nonfinite: ``"raise"`` stops the fit with ``NonFiniteGradientError`` at the first
            captured step whose gradients hold NaN/Inf, naming where the NaN was born;
            ``"warn"`` warns; ``"ignore"`` does neither.
        warn: Warn about the captures' other findings (vanishing, exploding, dead, unused).
        thresholds: The limits captures are judged with (the defaults when ``None``).
        keep: Captured graphs kept in memory, in ``callback.watch.graphs``.

    Raises:
        TypeError, ValueError: An argument out of range (as ``graphscope.watch``).
        RunError: At the first step, when a fit starting at step 1 would write into a run
            that already holds an earlier fit's steps.

    Example:
        >>> from graphscope.integrations.lightning import GraphscopeCallback  # doctest: +SKIP
        >>> trainer = L.Trainer(callbacks=[GraphscopeCallback("runs/exp1", every=100)])  # doctest: +SKIP
        >>> trainer.fit(model, loader)  # doctest: +SKIP
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
        super().__init__()
        self._fit = TrainerWatch(run, every=every, on_nonfinite=on_nonfinite, warn=warn,
                                 thresholds=thresholds, keep=keep)

    @property
    def watch(self) -> Watch | None:
        """The fit's watch (its ``graphs``, ``last``, ``steps``); ``None`` before the first fit."""
        return self._fit.watch

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        # The first optimizer is the one whose learning rates are recorded.
        optimizers = list(getattr(trainer, "optimizers", None) or [])
        wrapper = getattr(getattr(trainer, "strategy", None), "model", None)
        if isinstance(wrapper, torch.nn.parallel.DistributedDataParallel):
            reduced_by(pl_module, wrapper)  # checked before its all-reduce, named as pl_module
        self._fit.start(pl_module, optimizers[0] if optimizers else None)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        self._fit.step(int(trainer.global_step) + 1)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._fit.stop()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self._fit.stop()

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._fit.stop()
