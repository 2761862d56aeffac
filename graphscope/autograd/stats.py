"""Gradient statistics computed on the gradient's own device, with one host transfer per pass.

Owns the reduction kernels. ``StatsBatch.add(tensor)`` queues the reductions for one gradient and
returns a row index without synchronising; ``StatsBatch.collect()`` moves every row to the host in
one transfer per device and turns them into ``model.GradStats``. Each distinct gradient tensor is
reduced once: a producer's incoming gradient is usually the very tensor its consumer sent back,
so the cache is keyed by the tensor's identity (its TensorImpl, checked through a weak reference
so a reused address never aliases) and its version counter (an in-place accumulation is a new
value).

Imports torch; only the capture layer may import this module.
"""

from __future__ import annotations

import math

import torch

from graphscope.model import GradStats

# Row layout of one reduction: norm, mean, var, min, max, zeros, nan, inf, numel.
_ROW = 9


def _unsupported_row(numel: int) -> list[float]:
    nan = math.nan
    return [nan, nan, nan, nan, nan, 0.0, 0.0, 0.0, float(numel)]


def _dense_values(g: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The values to reduce and the number of implicit zeros (sparse layouts)."""
    if g.layout == torch.sparse_coo:
        g = g.coalesce()  # uncoalesced duplicates must be summed before any norm
        values = g._values()
        return values, g.numel() - values.numel()
    if g.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
        values = g.values()
        return values, g.numel() - values.numel()
    return g, 0


def _reduce(g: torch.Tensor) -> torch.Tensor | list[float]:
    """Queue the reductions of one gradient; returns a length-9 tensor on its device."""
    if g.is_nested:
        return _unsupported_row(0)
    values, implicit_zeros = _dense_values(g)
    if values.is_complex():
        values = values.abs()
    acc = torch.float64 if values.dtype == torch.float64 else torch.float32
    v = values.reshape(-1).to(acc)
    numel = v.numel() + implicit_zeros
    if numel == 0:
        return [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    if v.numel() == 0:  # an all-implicit sparse gradient: exactly zero everywhere
        return [0.0, 0.0, 0.0, 0.0, 0.0, float(numel), 0.0, 0.0, float(numel)]
    norm = torch.linalg.vector_norm(v)
    var, mean = torch.var_mean(v, correction=0)
    lo, hi = torch.aminmax(v)
    zeros = (v == 0).sum()
    nans = torch.isnan(v).sum()
    infs = torch.isinf(v).sum()
    if implicit_zeros:
        # Fold the implicit zeros into mean/var/min/max over all ``numel`` elements.
        n, z = v.numel(), implicit_zeros
        total = mean * n
        mean_all = total / numel
        var = (var * n + (mean - mean_all) ** 2 * n + mean_all**2 * z) / numel
        mean = mean_all
        lo = torch.clamp(lo, max=0.0)
        hi = torch.clamp(hi, min=0.0)
        zeros = zeros + z
    return torch.stack(
        [
            norm,
            mean,
            var,
            lo,
            hi,
            zeros.to(acc),
            nans.to(acc),
            infs.to(acc),
            torch.tensor(float(numel), dtype=acc, device=v.device),
        ]
    )


def row_to_stats(row: list[float]) -> GradStats:
    norm, mean, var, lo, hi, zeros, nans, infs, numel = row
    n = int(numel)
    return GradStats(
        norm=float(norm),
        mean=float(mean),
        std=math.sqrt(var) if var >= 0 else (math.nan if math.isnan(var) else 0.0),
        min=float(lo),
        max=float(hi),
        abs_max=max(abs(lo), abs(hi)) if not (math.isnan(lo) or math.isnan(hi)) else math.nan,
        zero_frac=(zeros / n) if n else 0.0,
        nan_count=int(nans),
        inf_count=int(infs),
        numel=n,
    )


def combine(stats: list[GradStats]) -> GradStats:
    """Statistics of several tensors taken together (a multi-output node's outputs)."""
    if len(stats) == 1:
        return stats[0]
    n = sum(s.numel for s in stats)
    if n == 0:
        return stats[0]
    mean = sum(s.mean * s.numel for s in stats) / n
    var = sum(s.numel * (s.std**2 + (s.mean - mean) ** 2) for s in stats) / n
    lo = min(s.min for s in stats)
    hi = max(s.max for s in stats)
    return GradStats(
        norm=math.sqrt(sum(s.norm**2 for s in stats)),
        mean=mean,
        std=math.sqrt(var) if var >= 0 else math.nan,
        min=lo,
        max=hi,
        abs_max=max(s.abs_max for s in stats),
        zero_frac=sum(s.zero_frac * s.numel for s in stats) / n,
        nan_count=sum(s.nan_count for s in stats),
        inf_count=sum(s.inf_count for s in stats),
        numel=n,
    )


class StatsBatch:
    """Collects reductions for one backward pass; ``collect`` syncs once per device."""

    def __init__(self) -> None:
        self._rows: list[torch.Tensor | list[float]] = []
        self._cache: dict[int, tuple[object, int, int]] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, g: torch.Tensor) -> int:
        """Queue the statistics of ``g``; returns its row index (shared by identical tensors)."""
        key = g._cdata
        hit = self._cache.get(key)
        version = g._version if not g.is_sparse else -1
        if hit is not None:
            ref, ver, idx = hit
            if ver == version and not ref.expired():  # type: ignore[attr-defined]
                return idx
        with torch.no_grad():
            row = _reduce(g.detach())
        self._rows.append(row)
        idx = len(self._rows) - 1
        self._cache[key] = (torch._C._WeakTensorRef(g), version, idx)
        return idx

    def collect(self) -> list[GradStats]:
        """Move every queued row to the host (one transfer per device) as ``GradStats``."""
        out: list[list[float] | None] = [None] * len(self._rows)
        by_device: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        for i, row in enumerate(self._rows):
            if isinstance(row, list):
                out[i] = row
            else:
                by_device.setdefault((row.device, row.dtype), []).append(i)
        for (_, _), idxs in by_device.items():
            stacked = torch.stack([self._rows[i] for i in idxs]).to("cpu", torch.float64)  # type: ignore[misc]
            for i, values in zip(idxs, stacked.tolist()):
                out[i] = values
        self._rows.clear()
        self._cache.clear()
        return [row_to_stats(r) for r in out]  # type: ignore[arg-type]
