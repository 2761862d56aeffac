"""Run stores written without torch, for the timeline's tests and for trying it by hand.

``diverging_run`` writes a few hundred steps of a small model through ``RunWriter``: healthy at
first, then the gradient norm and loss growing geometrically, the last steps NaN; full captures
(``tests.graphs`` fixtures) every ``every`` steps and at the first non-finite step.

    python -m tests.tui.runs /tmp/somerun  # then: graphscope view /tmp/somerun
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from graphscope.runs import NO_GRAD, RunParam, RunWriter, StepRecord
from tests.graphs import sigmoid_mlp

LAYERS = ("embed", "fc0", "fc1", "fc2", "fc3", "head")
"""The layers of the recorded model, forward order; each has a weight (8x4) and a bias (8)."""


def params() -> list[RunParam]:
    out = []
    for layer in LAYERS:
        for kind, shape in (("weight", (8, 4)), ("bias", (8,))):
            out.append(RunParam(len(out), f"{layer}.{kind}", layer, shape, math.prod(shape)))
    return out


def rms_at(step: int, layer: int, *, diverge: int) -> float:
    """The recorded RMS of ``layer``'s parameters at ``step``: fading toward the input by a
    decade per layer, growing 1.2x a step from ``diverge`` on."""
    base = 10.0 ** -(len(LAYERS) - layer)
    return base * (1.2 ** max(0, step - diverge))


def record(step: int, ps: list[RunParam], *, diverge: int, nan_from: int) -> StepRecord:
    """The step record ``diverging_run`` writes for ``step`` (deterministic)."""
    nan = step >= nan_from
    norms, absmax, zero = [], [], []
    for p in ps:
        layer = LAYERS.index(p.module)
        r = rms_at(step, layer, diverge=diverge)
        norms.append(math.nan if nan else r * math.sqrt(p.numel))
        absmax.append(math.nan if nan else 3 * r)
        zero.append(0.5 if p.module == "fc2" and step >= 150 else 0.0)
    if step == 40:  # the head got no gradient once (a branch not taken)
        for p in ps[-2:]:
            norms[p.idx], absmax[p.idx], zero[p.idx] = NO_GRAD, NO_GRAD, NO_GRAD
    norms_a = np.array(norms)
    finite = np.where(norms_a >= 0, norms_a, 0.0)
    loss = math.nan if nan else 2.0 * (1.15 ** max(0, step - diverge)) / (1 + 0.01 * step)
    return StepRecord(
        step=step, time=1000.0 + step, loss=loss,
        grad_norm=math.nan if nan else float(np.sqrt((finite ** 2).sum())),
        norms=norms_a, absmax=np.array(absmax), zero_frac=np.array(zero),
        nonfinite=sum(p.numel for p in ps) if nan else 0,
        nonfinite_params={p.idx: p.numel for p in ps} if nan else {},
        lr=[1e-3],
    )


def diverging_run(folder: Path, *, steps: int = 300, diverge: int = 220, nan_at: int | None = None,
                  every: int = 50, window: int = 4096, bucket: int = 32) -> Path:
    """Write the run to ``folder``; returns it. The loss is NaN from ``nan_at`` (default: the
    last 5 steps)."""
    nan_from = steps - 4 if nan_at is None else nan_at
    ps = params()
    w = RunWriter(folder, ps, meta={"model": "Diverging", "every": every}, window=window, bucket=bucket)
    graph = sigmoid_mlp()
    for step in range(1, steps + 1):
        w.add_step(record(step, ps, diverge=diverge, nan_from=nan_from))
        if step % every == 0:
            w.add_capture(step, graph, "every")
            w.add_updates(step, np.array([1e-3 * (1 + i) for i in range(len(ps))]))
        if step == nan_from:
            w.add_event(step, "nonfinite", {"loss": True})
            w.add_capture(step, graph, "nonfinite")
    w.close()
    return Path(folder)


if __name__ == "__main__":
    print(diverging_run(Path(sys.argv[1]), steps=int(sys.argv[2]) if len(sys.argv) > 2 else 300))
