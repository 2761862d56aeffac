"""The records a run store holds, as plain dataclasses: what the writer takes, what readers get.

Plain data: no torch, no textual, no SQLite. Per-parameter values are numpy float64 arrays in
the order of the run's parameters (``RunParam.idx``); ``-1`` marks "no gradient at this step".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

NO_GRAD = -1.0  # a norm (abs max, zero fraction) of a parameter that got no gradient


@dataclass(frozen=True)
class RunParam:
    """One parameter of a recorded model, in the order of every per-parameter array."""

    idx: int
    name: str
    module: str
    shape: tuple[int, ...]
    numel: int
    dtype: str = "float32"
    group: int = -1  # optimizer param group, -1 for none


@dataclass
class StepRecord:
    """The numbers of one backward: what ``watch`` gives the writer on every step.

    ``norms``, ``absmax`` and ``zero_frac`` hold one value per parameter (``NO_GRAD`` where a
    parameter got no gradient); ``nonfinite_params`` maps a parameter index to its count of
    NaN/Inf gradient elements, only where there are any.
    """

    step: int
    time: float
    loss: float | None
    grad_norm: float
    norms: np.ndarray
    absmax: np.ndarray
    zero_frac: np.ndarray
    nonfinite: int = 0
    nonfinite_params: dict[int, int] = field(default_factory=dict)
    accumulating: int = 0
    lr: list[float] = field(default_factory=list)
    loss_scale: float | None = None
    rank: int = 0

    @property
    def loss_finite(self) -> bool:
        return self.loss is None or math.isfinite(self.loss)


@dataclass(frozen=True)
class CaptureInfo:
    """A full capture kept in the run (its graph is read with ``Run.capture(step)``)."""

    step: int
    reason: str  # every | nonfinite | spike | before_anomaly
    severity: str  # ok | info | warning | error: the worst finding
    findings: int
    rank: int = 0
    summary: tuple[dict, ...] = ()  # each finding: kind, severity, message, hint, names


@dataclass(frozen=True)
class Event:
    """Something the recorder noticed while training (``nonfinite``, ``spike``)."""

    step: int
    kind: str
    detail: dict
    rank: int = 0


@dataclass
class Steps:
    """The per-step columns of a run (one rank), as arrays indexed alike, steps ascending.

    ``loss`` is NaN where the loss was NaN or not recorded (``loss_nonfinite`` says which);
    ``grad_norm`` is NaN where the gradients were; ``lr`` holds the first param group's rate
    (``lrs`` all of them, per step).
    """

    step: np.ndarray
    time: np.ndarray
    loss: np.ndarray
    loss_nonfinite: np.ndarray
    grad_norm: np.ndarray
    nonfinite: np.ndarray
    accumulating: np.ndarray
    lr: np.ndarray
    lrs: list[list[float]]
    loss_scale: np.ndarray

    def __len__(self) -> int:
        return len(self.step)


@dataclass
class ParamSeries:
    """Per-parameter gradient numbers over steps: one row per stored row of the run.

    ``lo``/``hi`` are each row's first and last step and ``n`` how many steps it covers (1 for
    an exact step, more for an old, decimated stretch). ``norm``, ``absmax`` and ``zero_frac``
    are (rows, P) arrays: the value at that step, or for a decimated row the mean over its steps
    (``*_min``/``*_max`` keep the extremes; equal to the value for exact rows). ``present`` is
    False where a parameter got no gradient (its numbers are NaN there); a NaN where
    ``present`` holds is a non-finite gradient.
    """

    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray
    norm: np.ndarray
    absmax: np.ndarray
    zero_frac: np.ndarray
    norm_min: np.ndarray
    norm_max: np.ndarray
    absmax_max: np.ndarray
    zero_frac_min: np.ndarray
    zero_frac_max: np.ndarray
    present: np.ndarray

    def __len__(self) -> int:
        return len(self.lo)

    def row_of(self, step: int) -> int | None:
        """The row holding ``step``, or ``None`` when it was not recorded."""
        i = int(np.searchsorted(self.hi, step))
        return i if i < len(self.lo) and self.lo[i] <= step <= self.hi[i] else None


@dataclass
class LayerSeries:
    """Gradient RMS per layer (module) over steps: what the timeline's heatmap shows.

    ``names`` are module paths in the order the model registers them; ``rms`` is (rows, layers):
    the RMS over all of a layer's parameter gradients at that row's step (the mean for a
    decimated row, whose extremes are in ``rms_min``/``rms_max``); NaN where the layer got no
    gradient (``present`` False) or, where ``present`` holds, where a gradient was NaN.
    ``lo``/``hi``/``n`` are the rows' step ranges as in ``ParamSeries``.
    """

    names: list[str]
    lo: np.ndarray
    hi: np.ndarray
    n: np.ndarray
    rms: np.ndarray
    rms_min: np.ndarray
    rms_max: np.ndarray
    present: np.ndarray  # (rows, layers): some parameter of the layer got a gradient

    def __len__(self) -> int:
        return len(self.lo)
