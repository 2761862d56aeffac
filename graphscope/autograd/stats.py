"""Gradient statistics for one backward pass: exact, few kernels per gradient, nothing kept.

Owns the reduction kernels. ``StatsBatch.add(tensor)`` records the statistics of one gradient
and returns a row index; ``StatsBatch.collect()`` turns every row into a ``model.GradStats``.
Each distinct gradient tensor is reduced once: a producer's incoming gradient is usually the
very tensor its consumer sent back, so the cache is keyed by the tensor's identity (its
TensorImpl, checked through a weak reference so a reused address never aliases) and its version
counter (an in-place accumulation is a new value).

Two paths, and one set of row-wise kernels for both:

- Small gradients (``SMALL`` elements or fewer) are copied into a per-pass bucket per shape
  and reduced together, one row per gradient, when the bucket holds ``CHUNK`` elements or the
  pass ends. For a small tensor the per-kernel launch cost, not the data, is what a reduction
  costs; an unrolled LSTM's 6,000 nodes are mostly such tensors. The copies are the only extra
  memory, bounded by ``CHUNK`` elements per distinct shape.
- Larger gradients are reduced in place as a single row.

On the CPU a row costs five vectorised passes (amin, amax, sum, norm, count of non-zeros) and the
results are read at once: a CPU read costs no device sync, so the NaN/Inf counts run only when
min/max say a non-finite value exists, and the variance is ``E[x^2] - mean^2`` unless the mean
is large enough for that to cancel (then a second, centred pass). ``torch.var_mean`` (a Welford
loop ~50x slower than a sum), ``aminmax(dim=...)`` and ``count_nonzero`` are avoided for speed.
On an accelerator every statistic stays a device tensor and ``collect`` moves them to the host in
one transfer per device, so a backward pass synchronises once.

Values are exact to float rounding against torch's own reductions: sums run in float32 (float64
for float64 input) without first up-casting half-precision tensors, so float16 gradients whose
squares overflow float16 still get a finite norm; complex gradients are summarised by magnitude;
sparse COO gradients are coalesced before any norm.

Imports torch; only the capture layer may import this module.
"""

from __future__ import annotations

import math

import torch

from graphscope.model import GradStats

# A row is: norm, mean, var, min, max, zeros, nan, inf, numel.
# Gradients with at most this many elements are bucketed and reduced together.
SMALL = 1 << 16
# A bucket is reduced once it holds this many elements (bounds the copies' memory).
CHUNK = 1 << 18
# Count non-zeros through a |sign(x)| temporary up to this size (2.5x faster than
# count_nonzero); above it the temporary's page faults cost more than it saves.
_SIGN_MAX = 1 << 20
# While mean^2 is at most this share of E[x^2], ``E[x^2] - mean^2`` keeps the variance within
# 1 / (1 - _CANCEL) = 2 float roundings of E[x^2]; above it a centred second pass is exact.
_CANCEL = 0.5

Row = list[float]


def _empty_row(numel: int) -> Row:
    """A gradient with no stored values: ``numel`` implicit zeros (or no elements at all)."""
    z = float(numel)
    return [0.0, 0.0, 0.0, 0.0, 0.0, z, 0.0, 0.0, z]


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


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _fold_implicit_zeros(row: Row, zeros: int) -> Row:
    """Statistics over ``n`` stored values plus ``zeros`` implicit zeros (sparse gradients)."""
    norm, mean, var, lo, hi, nz, nans, infs, n = row
    numel = n + zeros
    mean_all = mean * n / numel
    var_all = (var * n + (mean - mean_all) ** 2 * n + mean_all**2 * zeros) / numel
    return [norm, mean_all, var_all, min(lo, 0.0), max(hi, 0.0), nz + zeros, nans, infs, numel]


def _cpu_rows(x: torch.Tensor, *, rows: bool) -> list[Row]:
    """Exact statistics of a real CPU tensor: of each row of a 2-D ``x``, or of all of ``x``.

    ``rows=False`` reduces ``x`` whole in its own layout, never copying a transposed gradient.
    The bookkeeping per row is plain Python on host floats: a CPU op costs ~5 us to launch, so
    a dozen tiny vector ops would cost more than the loop.
    """
    acc = _acc(x.dtype)
    dim = {"dim": 1} if rows else {}
    n = x.shape[1] if rows else x.numel()

    def host(t: torch.Tensor) -> list[float]:
        return t.tolist() if rows else [t.item()]

    lo = host(x.amin(**dim))  # amin and amax are vectorised; aminmax(dim=...) is not
    hi = host(x.amax(**dim))
    total = host(x.sum(**dim, dtype=acc))
    norm = host(torch.linalg.vector_norm(x, **dim, dtype=acc))
    if x.numel() <= _SIGN_MAX:
        # count_nonzero is not vectorised; |sign(x)| summed is, exact in float32 below 2^24.
        nonzero = host(torch.sign(x).abs_().sum(**dim, dtype=acc))
    else:  # no temporary the size of a large gradient
        nonzero = host(torch.count_nonzero(x, **dim))
    out = []
    centre = []  # rows whose mean dominates: E[x^2] - mean^2 would cancel
    for i in range(len(lo)):
        mean = total[i] / n
        nans = infs = 0
        if not (math.isfinite(lo[i]) and math.isfinite(hi[i])):
            xi = x[i] if rows else x
            nans, infs = int(torch.isnan(xi).sum()), int(torch.isinf(xi).sum())
            nonzero[i] = int(torch.count_nonzero(xi))  # sign(NaN) is NaN
            var = math.nan  # what torch.var_mean gives: inf - inf, or NaN
        else:
            mean_sq = norm[i] * norm[i] / n
            var = max(mean_sq - mean * mean, 0.0)
            if mean * mean > _CANCEL * mean_sq and math.isfinite(mean_sq):
                centre.append(i)
        out.append([norm[i], mean, var, lo[i], hi[i], float(n - nonzero[i]), nans, infs, float(n)])
    if centre and rows:  # one centred second pass for all of them keeps the variance exact
        means = torch.tensor([out[i][1] for i in centre], dtype=acc)
        spread = torch.linalg.vector_norm(x[centre].to(acc) - means[:, None], dim=1, dtype=acc)
        for i, c in zip(centre, spread.tolist()):
            out[i][2] = c * c / n
    elif centre:
        c = float(torch.linalg.vector_norm(x.to(acc) - out[0][1], dtype=acc))
        out[0][2] = c * c / n
    return out


def _device_rows(x: torch.Tensor) -> torch.Tensor:
    """Statistics of each row of a real 2-D accelerator tensor, as ``(rows, 9)``; no sync."""
    acc = _acc(x.dtype)
    n = x.shape[1]
    mean = x.sum(1, dtype=acc) / n
    centred = torch.linalg.vector_norm(x - mean[:, None], dim=1, dtype=acc)
    return torch.stack(
        [
            torch.linalg.vector_norm(x, dim=1, dtype=acc),
            mean,
            centred * centred / n,
            x.amin(1).to(acc),
            x.amax(1).to(acc),
            (x == 0).sum(1).to(acc),
            torch.isnan(x).sum(1).to(acc),
            torch.isinf(x).sum(1).to(acc),
            torch.full_like(mean, float(n)),
        ],
        dim=1,
    )


def _rows(x: torch.Tensor) -> list[Row] | torch.Tensor:
    """Statistics of each row of a 2-D tensor: host rows on the CPU, a device tensor elsewhere."""
    return _cpu_rows(x, rows=True) if x.device.type == "cpu" else _device_rows(x)


def _dense_span(g: torch.Tensor) -> tuple[object, ...] | None:
    """``(device, dtype, data_ptr, numel)`` when ``g`` covers exactly ``numel`` contiguous
    elements in some order (contiguous, transposed, permuted), else ``None``.

    Two such tensors with the same span hold the same multiset of values, and every statistic
    here is order-free. Views share their base's version counter, so the version check that
    guards the identity cache guards this one too.
    """
    if g.layout != torch.strided or g.is_nested:
        return None
    expected = 1
    for size, stride in sorted(zip(g.shape, g.stride()), key=lambda p: p[1]):
        if size != 1 and stride != expected:
            return None
        expected *= size
    return (g.device, g.dtype, g.data_ptr(), g.numel())


class _Bucket:
    """Copies of same-shape small gradients, stacked for one row-wise reduction."""

    def __init__(self, like: torch.Tensor, max_rows: int) -> None:
        self.shape = like.shape
        self.max_rows = max_rows
        self.buf = like.new_empty((1, *like.shape))  # grows by doubling, up to max_rows
        self.rows: list[int] = []

    def put(self, row: int, g: torch.Tensor) -> bool:
        """Copy ``g`` in; returns whether the bucket is now full."""
        k = len(self.rows)
        if k == self.buf.shape[0]:
            grown = self.buf.new_empty((min(2 * k, self.max_rows), *self.shape))
            grown[:k].copy_(self.buf)
            self.buf = grown
        self.buf[k].copy_(g)
        self.rows.append(row)
        return k + 1 >= self.max_rows

    def take(self) -> tuple[list[int], torch.Tensor]:
        rows, self.rows = self.rows, []
        return rows, self.buf[: len(rows)].view(len(rows), -1)


def row_to_stats(row: Row) -> GradStats:
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
    """Collects the statistics of one backward pass; ``collect`` syncs once per device.

    Args:
        small: Gradients with at most this many elements are bucketed (0: none).
        chunk: Reduce a bucket once it holds this many elements.
    """

    def __init__(self, *, small: int = SMALL, chunk: int = CHUNK) -> None:
        self.small = small
        self.chunk = chunk
        # A host row, a device tensor row, or None while its copy waits in a bucket.
        self._rows: list[Row | torch.Tensor | None] = []
        self._cache: dict[int, tuple[object, int, int]] = {}
        # Large gradients by the memory they cover: a transposed view (what TBackward sends to
        # a weight's AccumulateGrad) holds the same values, so the same statistics.
        self._spans: dict[tuple[object, ...], tuple[object, int, int]] = {}
        self._buckets: dict[tuple[torch.device, torch.dtype, torch.Size], _Bucket] = {}

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, g: torch.Tensor) -> int:
        """Record the statistics of ``g``; returns its row index (shared by identical tensors)."""
        key = g._cdata
        hit = self._cache.get(key)
        version = g._version if not g.is_sparse else -1
        if hit is not None:
            ref, ver, idx = hit
            if ver == version and not ref.expired():  # type: ignore[attr-defined]
                return idx
        span = _dense_span(g) if g.numel() > self.small else None
        if span is not None:
            hit = self._spans.get(span)
            if hit is not None:
                ref, ver, idx = hit
                if ver == version and not ref.expired():  # type: ignore[attr-defined]
                    self._cache[key] = (torch._C._WeakTensorRef(g), version, idx)
                    return idx
        idx = len(self._rows)
        self._rows.append(None)
        # Only under create_graph=True does a gradient require grad; detached, nothing records.
        self._reduce(g.detach() if g.requires_grad else g, idx)
        entry = (torch._C._WeakTensorRef(g), version, idx)
        self._cache[key] = entry
        if span is not None:
            self._spans[span] = entry
        return idx

    def _reduce(self, g: torch.Tensor, idx: int) -> None:
        if g.is_nested:
            nan = math.nan
            self._rows[idx] = [nan, nan, nan, nan, nan, 0.0, 0.0, 0.0, 0.0]
            return
        values, implicit_zeros = _dense_values(g)
        n = values.numel()
        if n == 0:
            self._rows[idx] = _empty_row(implicit_zeros)
            return
        if values.is_complex():
            values = values.abs()
        if n <= self.small and not implicit_zeros:
            self._bucket(idx, values)
            return
        if values.device.type == "cpu":
            row: Row | torch.Tensor = _cpu_rows(values, rows=False)[0]
        else:
            row = _device_rows(values.reshape(1, -1))[0]
            if implicit_zeros:  # rare: a large sparse gradient on an accelerator
                row = row.tolist()
        if implicit_zeros:
            row = _fold_implicit_zeros(row, implicit_zeros)  # type: ignore[arg-type]
        self._rows[idx] = row

    def _bucket(self, idx: int, g: torch.Tensor) -> None:
        key = (g.device, g.dtype, g.shape)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(g, max(1, self.chunk // g.numel()))
        # A copy: autograd may accumulate into this very gradient buffer later in the pass.
        if bucket.put(idx, g):
            self._drain(bucket)

    def _drain(self, bucket: _Bucket) -> None:
        rows, x = bucket.take()
        stats = _rows(x)
        for i, values in zip(rows, stats):
            self._rows[i] = values

    def collect(self) -> list[GradStats]:
        """Every recorded row as ``GradStats``, after one host transfer per device."""
        for bucket in self._buckets.values():
            if bucket.rows:
                self._drain(bucket)
        out: list[Row | None] = [None] * len(self._rows)
        by_device: dict[torch.device, list[int]] = {}
        for i, row in enumerate(self._rows):
            if isinstance(row, list):
                out[i] = row
            else:
                assert row is not None, "a gradient's statistics were never computed"
                by_device.setdefault(row.device, []).append(i)
        for idxs in by_device.values():
            rows = [self._rows[i].to(torch.float64) for i in idxs]  # type: ignore[union-attr]
            for i, values in zip(idxs, torch.stack(rows).cpu().tolist()):
                out[i] = values
        self._rows.clear()
        self._cache.clear()
        self._spans.clear()
        self._buckets.clear()
        return [row_to_stats(r) for r in out]  # type: ignore[arg-type]
