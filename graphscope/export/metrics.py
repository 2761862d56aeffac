"""A run's per-step numbers as named series: what the TensorBoard and W&B exports write.

``run_metrics(run)`` reads a run store (no torch) and names its numbers the way both exports
tag them, so a curve is called the same in either tool:

- ``loss``, ``grad_norm``: per step, as the model computed them (a GradScaler's scale divided
  out where one was recorded, so the curve does not jump when the scale changes);
- ``grad_rms/<layer>``: per layer (a parameter's owning module; ``root`` for the model's own),
  the RMS over its parameters' gradients, unscaled likewise;
- ``update_ratio/<parameter>``: ``||w_after - w_before|| / ||w_before||`` on the steps where
  it was measured (the captured ones);
- ``lr`` (``lr/group<i>`` with several param groups) and ``loss_scale`` where recorded;
- a histogram per step, ``grad_rms/log10_params``: log10 of every parameter's gradient RMS;
- the findings over time (``graphscope.trends``), as text at the step each started.

Old steps the store decimated are one point per stretch, at its first step: the mean over it.

Imports the run store and trends; never torch, textual or an export target's package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from graphscope.runs import Run
from graphscope.trends import analyze

HISTOGRAM = "grad_rms/log10_params"


@dataclass
class Metrics:
    """A run's numbers by name.

    Attributes:
        scalars: Tag -> (step, wall time, value) points, steps ascending; only finite values.
        histograms: (step, wall time, values) per step, for ``HISTOGRAM``.
        findings: (step, text) per finding, by first step.
        wall: Step -> the wall time (Unix seconds) the step was recorded at (``steps.time``).
    """

    scalars: dict[str, list[tuple[int, float, float]]] = field(default_factory=dict)
    histograms: list[tuple[int, float, np.ndarray]] = field(default_factory=list)
    findings: list[tuple[int, str]] = field(default_factory=list)
    wall: dict[int, float] = field(default_factory=dict)

    def steps(self) -> list[int]:
        """Every step with a number, ascending."""
        seen = {s for points in self.scalars.values() for s, _, _ in points}
        seen.update(s for s, _, _ in self.histograms)
        seen.update(s for s, _ in self.findings)
        return sorted(seen)


def _layer_tag(name: str) -> str:
    return name or "root"


def run_metrics(run: Run, *, rank: int = 0) -> Metrics:
    """The numbers of one rank of ``run``, named as the exports write them."""
    out = Metrics()
    steps = run.steps(rank)
    if not len(steps):
        return out
    when = out.wall = dict(zip(steps.step.tolist(), steps.time.tolist()))
    scale = np.where(np.isfinite(steps.loss_scale) & (steps.loss_scale > 0), steps.loss_scale, 1.0)
    scale_at = dict(zip(steps.step.tolist(), scale.tolist()))

    def add(tag: str, step: int, value: float) -> None:
        if math.isfinite(value):
            out.scalars.setdefault(tag, []).append((int(step), when.get(int(step), 0.0), float(value)))

    for i, step in enumerate(steps.step.tolist()):
        add("loss", step, steps.loss[i] / scale[i])
        add("grad_norm", step, steps.grad_norm[i] / scale[i])
        lrs = steps.lrs[i]
        for g, lr in enumerate(lrs):
            add("lr" if len(lrs) == 1 else f"lr/group{g}", step, lr)
        if np.isfinite(steps.loss_scale[i]):
            add("loss_scale", step, steps.loss_scale[i])

    params = run.params(rank)
    layers = run.layer_series(rank)
    series = run.param_series(rank)
    numel = np.array([max(p.numel, 1) for p in params], dtype=float)
    for row, step in enumerate(layers.lo.tolist()):
        s = scale_at.get(step, 1.0)
        for j, name in enumerate(layers.names):
            add(f"grad_rms/{_layer_tag(name)}", step, layers.rms[row, j] / s)
        rms = series.norm[row] / np.sqrt(numel) / s
        rms = rms[np.isfinite(rms) & (rms > 0)]
        if rms.size:
            out.histograms.append((int(step), when.get(int(step), 0.0), np.log10(rms)))

    for step, ratios in run.updates(rank).items():
        for p in params:
            if p.idx < ratios.size:
                add(f"update_ratio/{p.name}", step, ratios[p.idx])

    for f in analyze(run, rank=rank):
        text = f"[{f.severity}] {f.kind}: {f.message}"
        if f.hint:
            text += f"\n\nhint: {f.hint}"
        out.findings.append((f.step, text))
    out.findings.sort(key=lambda x: x[0])
    return out
