"""The flight recorder: every watched step's numbers into a run store, at a few kernels per step.

``watch(model, run="runs/exp1")`` makes a ``FlightRecorder``; the watch calls ``before`` right
before each backward and ``after`` right after it. Per step, over all parameter gradients at
once: the L2 norm (``torch._foreach_norm``, the kernel ``clip_grad_norm_`` uses), the abs max
(``aminmax`` per gradient) and the count of exact zeros, stacked with the loss into one tensor
that reaches the host in one transfer; the records go to the store's writer thread, so the disk
is never on the training thread. A gradient so small (or large) that its float32 squares
underflow (or overflow) is normed in float64: from the next step on at once, the first time
again (one more fused call); NaN/Inf elements are counted only for gradients whose norm is
non-finite.

It also decides which steps get a full capture beyond every ``every``-th: a step whose loss is
already non-finite before its backward (checked on the loss value, so the capture is of that
very step and says where the NaN was born), and the step after one whose gradients came out
non-finite or spiked against the run's own history (``trends.is_spike``). The update-to-weight
ratio is measured around captured steps: the parameters are copied after the captured backward
and compared at the next one, so it covers exactly the optimizer step in between.

Nothing the user owns changes: gradients and parameters are only read, and the copies are freed
at the next step.

Imports torch; only the capture layer may import this module.
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graphscope.autograd.capture import loss_scale_of, uncompiled
from graphscope.autograd.distributed import LocalCheck, backend, local_tensor, rank_info, wrapper_of
from graphscope.health import Thresholds
from graphscope.model import Graph
from graphscope.runs import NO_GRAD, RunParam, RunWriter, StepRecord
from graphscope.trends import SCALER_SKIP_LIMIT, SPIKE_HISTORY, is_spike

# Below this largest magnitude, float32 squares are subnormal or zero; above the other, they
# may overflow: such a gradient's norm is taken in float64.
_TINY_ABSMAX = 1e-18
_HUGE_ABSMAX = 1e18


def _optimizer_meta(optimizer: torch.optim.Optimizer | None) -> dict[str, Any] | None:
    """The optimizer's class and each param group's momentum (0 without), for the findings'
    hints: SGD's momentum m makes its steps lr / (1 - m) in effect."""
    if optimizer is None:
        return None
    momentum = [g.get("momentum") for g in optimizer.param_groups]
    return {"name": type(optimizer).__name__,
            "momentum": [float(m) if isinstance(m, (int, float)) else 0.0 for m in momentum]}


def _version() -> str:
    try:
        return importlib.metadata.version("graphscope")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


class FlightRecorder:
    """Records each watched step of ``model`` into the run store at ``run``.

    Args:
        model: The watched model; its named parameters that require grad are recorded.
        run: The run folder (created if missing). An existing run of the same model is
            resumed: its steps continue after the last one stored.
        optimizer: Gives the learning rate of each param group per step, and each
            parameter's group.
        every: Full captures are taken every ``every`` steps (recorded in the run's meta).
        thresholds: The limits the captures are judged with (recorded in the meta).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        run: str | Path,
        *,
        optimizer: torch.optim.Optimizer | None,
        every: int,
        thresholds: Thresholds,
    ) -> None:
        named = [(n, p) for n, p in uncompiled(model).named_parameters() if p.requires_grad]
        self.optimizer = optimizer
        group_of: dict[int, int] = {}
        if optimizer is not None:
            for g, group in enumerate(optimizer.param_groups):
                for p in group["params"]:
                    group_of[id(p)] = g
        self.params = [p for _, p in named]
        infos = [
            # numel of what this rank holds (an FSDP shard), which its norms are taken over.
            RunParam(i, n, n.rpartition(".")[0], tuple(p.shape), local_tensor(p).numel(), str(p.dtype).replace("torch.", ""),
                     group_of.get(id(p), -1))
            for i, (n, p) in enumerate(named)
        ]
        # Under torch.distributed each rank writes its own rows of the same store.
        self.rank, world = rank_info()
        self._ids = {id(p): i for i, p in enumerate(self.params)}
        self.local = LocalCheck.attach(model)
        self.writer = RunWriter(run, infos, rank=self.rank, meta={
            "graphscope_version": _version(),
            "created": time.time(),
            "model": type(uncompiled(model)).__name__,
            "argv": list(sys.argv),
            "every": every,
            "thresholds": thresholds.to_dict(),
            "optimizer": _optimizer_meta(optimizer),
            "world_size": world,
            "distributed": {"backend": backend(), "wrapper": wrapper_of(model)},
        })
        if self.local is not None:
            self.local.start()
        self._local_norms: np.ndarray | None = None
        self._local_buckets: list[list[int]] = []
        self._local_bad: dict[int, int] = {}
        self._seen_local_nonfinite = False
        self.offset = self.writer.first_step - 1  # a resumed run continues its step numbers
        # A trainer's step may run several backwards (Watch.set_step, gradient accumulation):
        # the step and loss of the latest backward, to merge the next one of the same step.
        self._last_step = 0
        self._last_loss: float | None = None
        self._history: list[float] = []
        self._seen_nonfinite = False
        self._overflows = 0  # GradScaler overflows in a row
        self._accumulating = 0
        self._loss_scale: float | None = None
        self._force_next: str | None = None
        self._loss: torch.Tensor | None = None
        self._snapshot: tuple[int, list[torch.Tensor]] | None = None
        # After each backward: per parameter, its .grad tensor, that tensor's version and the
        # parameter's version, to tell at the next backward whether .grad was carried over an
        # optimizer update (zero_grad() forgotten) or only accumulated on purpose.
        self._after: list[tuple[Any, int, int] | None] = [None] * len(self.params)
        self._wide: set[int] = set()  # the parameters whose gradient is normed in float64

    @property
    def wants_next(self) -> bool:
        """Whether the next step should be captured (after an anomaly in this one)."""
        return self._force_next is not None

    def run_step(self, step: int) -> int:
        """The run's step number of the watch's ``step``."""
        return self.offset + step

    # -- before the backward --------------------------------------------------------------------

    def before(self, step: int, outputs: list[torch.Tensor]) -> str | None:
        """Note what the backward starts from; returns a reason to capture this step
        (``nonfinite``, ``spike``) beyond the regular ones, or ``None``."""
        self._measure_updates(self.run_step(step))
        self._accumulating = self._count_accumulating()
        self._loss = outputs[0].detach() if len(outputs) == 1 and outputs[0].numel() == 1 else None
        reason, self._force_next = self._force_next, None
        self._loss_scale = None
        if self._loss is not None and self._loss.device.type == "cpu":
            self._loss_scale = loss_scale_of(outputs[0].grad_fn)
            # On the CPU reading the loss costs no device sync: a NaN loss is caught before its
            # backward, so the capture is of the very step where it was born.
            if not math.isfinite(float(self._loss)) and not self._seen_nonfinite:
                reason = "nonfinite"
        return reason

    def _count_accumulating(self) -> int:
        n = 0
        for i, p in enumerate(self.params):
            before = self._after[i]
            g = p.grad
            if g is None or before is None:
                continue
            grad, grad_version, param_version = before
            if g is grad and g._version == grad_version and p._version != param_version:
                n += 1
        return n

    def _measure_updates(self, run_step: int) -> None:
        if self._snapshot is None or self._snapshot[0] == run_step:
            return  # nothing to compare, or the optimizer has not stepped yet (same step)
        step, old = self._snapshot
        self._snapshot = None
        with torch.no_grad():
            now = [local_tensor(p.detach()) for p in self.params]
            diff = torch._foreach_sub(now, old)
            num = torch._foreach_norm(diff)
            den = torch._foreach_norm(old)
            ratios = (torch.stack([x.float() for x in num]) / torch.stack([x.float() for x in den])).tolist()
        self.writer.add_updates(step, np.array(ratios, dtype=float))

    # -- after the backward ---------------------------------------------------------------------

    def after(self, step: int, graph: Graph | None, reason: str | None) -> None:
        """Record the step's numbers (and its capture, if one was taken)."""
        run_step = self.run_step(step)
        if graph is not None and self._loss_scale is None:
            self._loss_scale = graph.meta.get("loss_scale")
        rec = self._record(run_step)
        if run_step == self._last_step:
            # Another backward of the same step: its row replaces the step's, with the gradients
            # accumulated so far, and the losses add up (the gradients are those of their sum).
            rec.loss = None if rec.loss is None or self._last_loss is None else rec.loss + self._last_loss
            if self._history:
                self._history.pop()  # the step's norm in the history is its latest one
        self._last_step, self._last_loss = run_step, rec.loss
        self.writer.add_step(rec)
        nonfinite = bool(rec.nonfinite_params) or not rec.loss_finite
        # A GradScaler's overflow (scaled loss finite, its gradients not) is a step the scaler
        # skips, not the run's first NaN: a later real one must still be caught at its birth.
        overflow = nonfinite and rec.loss_finite and rec.loss_scale is not None
        self._overflows = self._overflows + 1 if overflow else 0
        if self._overflows > SCALER_SKIP_LIMIT:
            overflow = False  # that many in a row: non-finite at any scale
        self._local_events(run_step, rec, graph is not None or (nonfinite and not self._seen_nonfinite))
        if overflow:
            pass
        elif nonfinite and not self._seen_nonfinite:
            self._seen_nonfinite = True
            self.writer.add_event(run_step, "nonfinite", {
                "loss": None if rec.loss is None else repr(rec.loss), "elements": rec.nonfinite})
            if graph is None:
                self._force_next = "nonfinite"  # born in backward: the next step shows its cause
        elif is_spike(self._history, rec.grad_norm):
            self.writer.add_event(run_step, "spike", {"grad_norm": rec.grad_norm,
                                                      "median": float(np.median(self._history[-SPIKE_HISTORY:]))})
            if graph is None:
                self._force_next = "spike"
        self._history.append(rec.grad_norm)
        del self._history[:-SPIKE_HISTORY]
        if graph is not None:
            self.writer.add_capture(run_step, graph, reason or "every")
            with torch.no_grad():
                self._snapshot = (run_step, [local_tensor(p.detach()).clone() for p in self.params])
        self._after = [
            None if p.grad is None else (p.grad, p.grad._version, p._version) for p in self.params
        ]

    def _record(self, run_step: int) -> StepRecord:
        n = len(self.params)
        grads = [p.grad for p in self.params]
        have = [i for i, g in enumerate(grads) if g is not None and g.layout == torch.strided
                and not g.is_complex() and local_tensor(g).numel()]  # an FSDP shard may be empty
        # FSDP2's gradients are DTensor shards: this rank's shard is what it holds.
        values = [local_tensor(g.detach()) for g in (grads[i] for i in have)]  # type: ignore[union-attr]
        parts: list[torch.Tensor] = []
        # Gradients that were tiny or huge at the last step are normed in float64 at once (a
        # gradient's magnitude moves slowly from step to step), so their float32 norm, whose
        # squares underflow or overflow, is not taken only to be redone.
        wide = [j for j, i in enumerate(have) if i in self._wide]
        narrow = [j for j, i in enumerate(have) if i not in self._wide]
        if values:
            if narrow:
                half = any(values[j].dtype in (torch.float16, torch.bfloat16) for j in narrow)
                some = [values[j] for j in narrow]
                parts.append(torch.stack(torch._foreach_norm(some, 2, dtype=torch.float32) if half
                                         else torch._foreach_norm(some)))
            parts.append(self._absmaxes(values))
            parts.append(torch.stack([torch.count_nonzero(v) for v in values]))
            # Last: on subnormal float32 (MLP-50's sigmoid gradients) the float64 pass is the
            # slow one, and after the other passes its data is in cache (measured: the
            # recorder's step 8.5 -> 6.5 ms, against 14 ms with this pass first).
            if wide:
                parts.append(torch.stack(
                    torch._foreach_norm([values[j] for j in wide], 2, dtype=torch.float64)))
        loss = self._loss
        if loss is not None:
            parts.append(loss.reshape(1).to(parts[0].device if parts else loss.device))
        local, self._local_buckets, self._local_bad = (
            self.local.take() if self.local is not None else (None, [], {}))
        if local is not None:
            parts.append(local)
        # One host transfer for every number of the step, in float64 (a float64 norm of a tiny
        # gradient can be below float32's range).
        device = parts[0].device if parts else None
        host = (torch.cat([x.reshape(-1).to(device, torch.float64) for x in parts]).cpu().numpy()
                if parts else np.zeros(0))
        k, m = len(have), len(narrow)
        norm_v = np.empty(k)
        norm_v[narrow] = host[:m]
        absmax_v, nonzero_v = host[m:m + k], host[m + k:m + 2 * k]
        norm_v[wide] = host[m + 2 * k:3 * k]
        loss_value = float(host[3 * k]) if loss is not None else None
        self._local_norms = host[3 * k + (loss is not None):] if local is not None else None
        numel = np.array([v.numel() for v in values], dtype=float)
        finite = np.isfinite(absmax_v)
        # float32 squares underflow below ~1e-19 and overflow above ~1e19: those norms (rare:
        # vanishing or exploding gradients, not seen so at the last step) are taken again in
        # float64, in one fused call.
        extreme = finite & (((absmax_v > 0) & (absmax_v < _TINY_ABSMAX)) | (absmax_v > _HUGE_ABSMAX))
        redo = np.array([j for j in narrow
                         if extreme[j] or (finite[j] and not math.isfinite(norm_v[j]))], dtype=int)
        if redo.size:
            exact = torch._foreach_norm([values[j] for j in redo], 2, dtype=torch.float64)
            norm_v[redo] = torch.stack(exact).cpu().numpy()
        self._wide = {have[j] for j in np.flatnonzero(extreme)}
        nonfinite_params = {have[j]: int((~torch.isfinite(values[j])).sum())
                            for j in np.flatnonzero(~finite)}
        idx = np.array(have, dtype=int)
        norms_a = np.full(n, NO_GRAD)
        absmax_a = np.full(n, NO_GRAD)
        zero_a = np.full(n, NO_GRAD)
        if k:
            norms_a[idx] = norm_v
            absmax_a[idx] = absmax_v
            zero_a[idx] = 1.0 - nonzero_v / numel
        present = norms_a >= 0
        total = float(math.sqrt(float(np.sum(norms_a[present] ** 2)))) if present.any() else 0.0
        if nonfinite_params:
            total = math.nan
        lr = []
        if self.optimizer is not None:
            lr = [float(g["lr"]) for g in self.optimizer.param_groups if "lr" in g]
        return StepRecord(
            step=run_step,
            time=time.time(),
            loss=loss_value,
            grad_norm=total,
            norms=norms_a,
            absmax=absmax_a,
            zero_frac=zero_a,
            nonfinite=sum(nonfinite_params.values()),
            nonfinite_params=nonfinite_params,
            accumulating=self._accumulating,
            lr=lr,
            loss_scale=self._loss_scale,
            rank=self.rank,
        )

    @staticmethod
    def _absmaxes(values: list[torch.Tensor]) -> torch.Tensor:
        """Every gradient's largest magnitude, in the order of ``values`` (in their promoted
        dtype: the stack of their extremes).

        ``aminmax`` per tensor: one pass each, and faster than the fused inf-norm both on
        large tensors (5.7 ms vs 133 ms over GPT-2-sized gradients) and on many small ones
        (1.0 ms vs 5.4 ms over MLP-50's 102), measured with benchmarks/bench_recorder.py's models.
        """
        lo, hi = zip(*(torch.aminmax(v) for v in values))
        return torch.maximum(-torch.stack(lo), torch.stack(hi))

    def _local_events(self, run_step: int, rec: StepRecord, wanted: bool) -> None:
        """Events from the DDP check before the all-reduce: ``local_nonfinite`` the first time
        one of this rank's own gradient buckets was non-finite (the NaN was born here), and
        ``local`` (this rank's gradient norm before the reduction) on captured steps and on the
        first non-finite one, for the cross-rank checks."""
        norms = self._local_norms
        if norms is None or not norms.size:
            return
        total = float(np.sqrt(np.sum(norms.astype(float) ** 2)))
        bad = [b for b, v in enumerate(norms) if not math.isfinite(v)]
        detail = {"norm": total if math.isfinite(total) else repr(total), "buckets": len(norms)}
        born = bool(bad) and not self._seen_local_nonfinite
        if born:
            self._seen_local_nonfinite = True
            # The parameters themselves where the check could name them, else their buckets'.
            params = sorted(self._ids[i] for i in self._local_bad if i in self._ids) or sorted(
                {self._ids[i] for b in bad for i in self._local_buckets[b] if i in self._ids})
            self.writer.add_event(run_step, "local_nonfinite", {
                **detail, "params": [self.writer.params[i].name for i in params],
                "exact": bool(self._local_bad), "loss_finite": rec.loss_finite})
        if wanted or born:
            self.writer.add_event(run_step, "local", {**detail, "finite": not bad})

    def close(self) -> None:
        if self.local is not None:
            self.local.stop()
        self._snapshot = None
        self.writer.close()
