"""Gradient statistics for one backward pass: exact, few kernels per gradient, nothing kept.

Owns the reduction kernels. ``StatsBatch.add(tensor)`` records the statistics of one gradient
and returns a row index; ``StatsBatch.collect()`` turns every row into a ``model.GradStats``.
Each distinct gradient tensor is reduced once: a producer's incoming gradient is usually the
very tensor its consumer sent back, so the cache is keyed by the tensor's identity (its
TensorImpl, checked through a weak reference so a reused address never aliases) and its version
counter (an in-place accumulation is a new value).

Two paths, and one set of row-wise kernels for both:

- Small gradients (``SMALL`` elements or fewer) are held in a per-pass bucket per shape and
  stacked and reduced together, one row per gradient, when the bucket holds ``CHUNK`` elements
  or the pass ends. For a small tensor the per-kernel launch cost, not the data, is what a
  reduction costs; an unrolled LSTM's 6,000 nodes are mostly such tensors. The held gradients
  and the stack are the only extra memory, bounded by ``CHUNK`` elements per distinct shape
  (``_Bucket`` says why holding a reference is safe).
- Larger gradients are reduced in place as a single row, viewed in memory order (a transposed
  gradient is not copied) with broadcast dimensions read once (the gradient of a ``sum`` is one
  value expanded to the input's shape); past ``_WHOLE_MAX`` elements in cache-sized pieces.

On the CPU a row costs five vectorised passes (amin, amax, sum, norm, count of non-zeros) and the
results are read at once: a CPU read costs no device sync, so the NaN/Inf counts run only when
min/max say a non-finite value exists, and the variance is ``E[x^2] - mean^2`` unless the mean
is large enough for that to cancel (then a second, centred pass). ``torch.var_mean`` (a Welford
loop ~50x slower than a sum), ``aminmax(dim=...)`` and ``count_nonzero`` are avoided for speed.
On an accelerator every statistic stays a device tensor and ``collect`` moves them to the host in
one transfer per device, so a backward pass synchronises once.

Values are exact to float rounding against float64 references, for finite data of any magnitude:

- Sums run in float32 (float64 for float64 input) without first up-casting half-precision
  tensors; float16's squares cannot leave float32's range.
- Squares of float32, bfloat16 or float64 values can (1e18 squared, summed, overflows float32;
  1e-30 squared underflows to 0). On the CPU min/max are read first, and only a row whose sum of
  squares would leave the accumulator's normal range is scaled, by an exact power of two near
  its largest magnitude, before the sums; on an accelerator, where reading min/max would sync,
  every such row is scaled (one more elementwise pass). The scale is undone in float64.
- ``vector_norm`` accumulates each output sequentially, so its float32 error grows with the
  length (1e-5 relative at 1M elements, 6e-4 at 16M); rows are normed in blocks of ``_BLOCK``
  elements and the block norms combined the same way. ``sum`` is pairwise already.

Complex gradients are summarised by magnitude; sparse COO gradients are coalesced before any norm.

With ``StatsBatch(values=16)`` the batch also keeps a float64 copy of every real dense gradient
of at most 16 elements (a copy: autograd may accumulate into the buffer later in the pass), and
``collect`` moves them to the host in the same transfer as the statistics (``StatsBatch.values``).

Imports torch; only the capture layer may import this module.
"""

from __future__ import annotations

import math
import operator

import torch

from graphscope.model import GradStats, Values

# A row is nine floats in this order (a list on the host, a tensor row on a device); the
# positions are named so that no code indexes a row by a bare number.
NORM, MEAN, STD, MIN, MAX, ZEROS, NANS, INFS, NUMEL = range(9)
# Gradients with at most this many elements are bucketed and reduced together.
SMALL = 1 << 14
# A bucket is reduced once it holds this many elements.
CHUNK = 1 << 18
# All buckets together hold at most this many elements: past it every bucket is reduced, so a
# model with many distinct small shapes holds no more than one with a few (4 MB of float32).
HELD_MAX = 4 * CHUNK
# Gradients from this many elements on are matched by the memory they cover (``_dense_span``):
# a weight's gradient and the transposed view ``TBackward`` passes on are reduced once. Below
# it, the lookup would cost more than the reduction it saves.
SPAN_MIN = 1 << 12
# A CPU gradient longer than this is reduced in pieces of ``_PIECE`` elements, each piece's five
# passes while it sits in cache, and the pieces combined exactly (``_combined``): a 38.6M-element
# embedding gradient 112 -> 49 ms on one thread, 57 -> 25 ms on two (a whole-tensor pass reads
# it from memory five times). It also bounds the |sign(x)| temporary of the zero count.
_WHOLE_MAX = 1 << 20
_PIECE = 1 << 18
# While mean^2 is at most this share of E[x^2], ``E[x^2] - mean^2`` keeps the variance within
# 1 / (1 - _CANCEL) = 2 float roundings of E[x^2]; above it a centred second pass is exact.
_CANCEL = 0.5
# Rows are normed in blocks of this many elements: a float32 norm of 4,096 values is within
# about two roundings (1e-7) of float64, and the blocked reduction is no slower than one long one.
_BLOCK = 1 << 12

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


def _distinct_row(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``x``'s values as one row ``(1, k)``, and how many times each value repeats.

    A broadcast dimension (stride 0) holds one value many times: it is read once. The rest is
    viewed in memory order, so a transposed or permuted gradient is not copied; only a tensor
    that skips memory (a strided slice) is.
    """
    repeats = 1
    for d, (size, stride) in enumerate(zip(x.shape, x.stride())):
        if stride == 0 and size > 1:
            x = x.narrow(d, 0, 1)
            repeats *= size
    x = x.permute(sorted(range(x.dim()), key=x.stride, reverse=True))
    return (x.view(1, -1) if x.is_contiguous() else x.reshape(1, -1)), repeats


def _repeated(row: Row, repeats: int) -> Row:
    """Statistics of ``repeats`` copies of the values a row describes."""
    if repeats == 1:
        return row
    norm, mean, std, lo, hi, zeros, nans, infs, n = row
    r = float(repeats)
    return [norm * math.sqrt(r), mean, std, lo, hi, zeros * r, nans * r, infs * r, n * r]


def _fold_implicit_zeros(row: Row, zeros: int) -> Row:
    """Statistics over ``n`` stored values plus ``zeros`` implicit zeros (sparse gradients)."""
    norm, mean, std, lo, hi, nz, nans, infs, n = row
    numel = n + zeros
    stored, implicit = n / numel, zeros / numel
    mean_all = mean * stored
    # In units of the largest magnitude: squares of float64 values past 1e154 stay finite.
    c = max(abs(lo), abs(hi))
    c = c if c > 0 and math.isfinite(c) else 1.0
    spread = stored * ((std / c) ** 2 + ((mean - mean_all) / c) ** 2)
    std_all = c * math.sqrt(spread + implicit * (mean_all / c) ** 2)
    return [norm, mean_all, std_all, min(lo, 0.0), max(hi, 0.0), nz + zeros, nans, infs, numel]


def _norms(x: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """The 2-norm of each row of a 2-D ``x``, in blocks of ``_BLOCK`` (exact at any length)."""
    rows, n = x.shape
    if n <= _BLOCK:
        return torch.linalg.vector_norm(x, dim=1, dtype=acc)
    m = n // _BLOCK
    whole = x[:, : m * _BLOCK].view(rows, m, _BLOCK)  # splitting the last dimension never copies
    parts = torch.linalg.vector_norm(whole, dim=2, dtype=acc)
    if m * _BLOCK < n:
        tail = torch.linalg.vector_norm(x[:, m * _BLOCK :], dim=1, dtype=acc)
        parts = torch.cat([parts, tail[:, None]], dim=1)
    return _norms(parts, acc)


def _exponent_range(acc: torch.dtype) -> tuple[int, int]:
    """Scale exponents ``e`` for which ``2**-e`` and ``2**e`` are both normal numbers in ``acc``."""
    top = math.frexp(torch.finfo(acc).max)[1]  # 128 for float32, 1024 for float64
    return 2 - top, top - 2


def _scale_exponents(lo: list[float], hi: list[float], n: int, acc: torch.dtype) -> list[int]:
    """Per row of ``n`` values from ``lo`` to ``hi``: ``e`` such that the values times ``2**-e``
    have a sum of squares inside ``acc``'s normal range; 0 where it already is (the common case)
    and for non-finite rows.

    Squares below ``tiny`` lose bits: at most ``n`` half-spacings of subnormals in all, kept
    under 2**-9 of a rounding of the sum by asking ``abs_max**2 >= 2**8 * n * tiny``. Above,
    ``16 * n * abs_max**2 <= max`` leaves room for every partial sum.
    """
    info = torch.finfo(acc)
    floor, ceiling = 2**8 * n * info.tiny, info.max / (16 * n)
    # Python floats: a square is 0 or inf where float64 squares leave the range too.
    abs_max = list(map(max, map(operator.neg, lo), hi))
    top, bottom = max(abs_max), min(filter(None, abs_max), default=1.0)
    if top * top <= ceiling and floor <= bottom * bottom:  # every row: C loops, no Python one
        return [0] * len(abs_max)
    least, most = _exponent_range(acc)
    out = []
    for a in abs_max:
        if a == 0 or floor <= a * a <= ceiling or not math.isfinite(a):
            out.append(0)
        else:  # a * 2**-e then lies in [2**-52, 4)
            out.append(min(max(math.frexp(a)[1], least), most))
    return out


def _cpu_rows(x: torch.Tensor, *, rows: bool) -> list[Row]:
    """Exact statistics of a real 2-D CPU tensor: of each row, or (``rows=False``) of all of it.

    ``rows=False`` uses full reductions, which are 2-4x faster than ``dim=1`` ones over a single
    row. The bookkeeping per row is plain Python on host floats: a CPU op costs ~5 us to launch,
    so a dozen tiny vector ops would cost more than the loop.
    """
    acc = _acc(x.dtype)
    dim = {"dim": 1} if rows else {}
    n = x.shape[1]

    def host(t: torch.Tensor) -> list[float]:
        return t.tolist() if rows else [t.item()]

    lo = host(x.amin(**dim))  # amin and amax are vectorised; aminmax(dim=...) is not
    hi = host(x.amax(**dim))
    # count_nonzero is not vectorised; |sign(x)| summed is, exact in float32 below 2^24 (x holds
    # at most _WHOLE_MAX or CHUNK elements).
    nonzero = host(torch.sign(x).abs_().sum(**dim, dtype=acc))
    exps = _scale_exponents(lo, hi, n, acc)
    y = x
    if any(exps):  # rare: a scaled temporary (after sign's is freed); powers of two are exact
        y = x * torch.tensor([2.0**-e for e in exps], dtype=acc)[:, None]
    total = host(y.sum(**dim, dtype=acc))
    norm = _norms(y, acc).tolist()
    out = []
    centre = []  # rows whose mean dominates: E[x^2] - mean^2 would cancel
    for i in range(len(lo)):
        mean = total[i] / n  # like norm[i], in units of 2**exps[i] until the end
        nans = infs = 0
        if not (math.isfinite(lo[i]) and math.isfinite(hi[i])):
            xi = x[i]
            nans, infs = int(torch.isnan(xi).sum()), int(torch.isinf(xi).sum())
            nonzero[i] = int(torch.count_nonzero(xi))  # sign(NaN) is NaN
            std = math.nan  # what torch.var_mean gives: inf - inf, or NaN
        else:
            mean_sq = norm[i] * norm[i] / n
            std = math.sqrt(max(mean_sq - mean * mean, 0.0))
            if mean * mean > _CANCEL * mean_sq and math.isfinite(mean_sq):
                centre.append(i)
        out.append([norm[i], mean, std, lo[i], hi[i], float(n - nonzero[i]), nans, infs, float(n)])
    if centre:  # one centred second pass for all of them keeps the variance exact
        means = torch.tensor([out[i][MEAN] for i in centre], dtype=acc)
        picked = y if len(centre) == len(lo) else y[centre]
        centred = picked.to(acc) - means[:, None]
        spread = _norms(centred, acc).tolist()
        # The mean itself carries a sum's rounding: what is left of it, summed over the centred
        # values, corrects both (the corrected two-pass algorithm).
        shift = (centred.sum(1, dtype=acc).tolist() if rows else [centred.sum(dtype=acc).item()])
        for i, c, d in zip(centre, spread, shift):
            d /= n
            out[i][MEAN] += d
            out[i][STD] = math.sqrt(max(c * c / n - d * d, 0.0))
    if y is not x:
        for row, e in zip(out, exps):
            up = 2.0**e  # exact, and a float64 holds what float32 or its sums cannot
            row[NORM] *= up
            row[MEAN] *= up
            row[STD] *= up
    return out


def _cpu_row(flat: torch.Tensor) -> Row:
    """Exact statistics of a contiguous ``(1, k)`` CPU tensor, in cache-sized pieces when long."""
    if flat.shape[1] <= _WHOLE_MAX:
        return _cpu_rows(flat, rows=False)[0]
    return _combined([_cpu_rows(piece, rows=False)[0] for piece in flat.split(_PIECE, dim=1)])


def _combined(rows: list[Row]) -> Row:
    """The statistics of the values of several rows taken together (pieces of one tensor).

    Exact: norms add as squares, means weighted by count, variances by Chan's parallel formula
    (each piece's spread plus its mean's distance from the whole mean). Computed in units of the
    largest magnitude, so float64 values past 1e154 do not overflow their squares.
    """
    n = sum(r[NUMEL] for r in rows)
    los, his, norms = [r[MIN] for r in rows], [r[MAX] for r in rows], [r[NORM] for r in rows]
    lo = math.nan if any(map(math.isnan, los)) else min(los)
    hi = math.nan if any(map(math.isnan, his)) else max(his)
    counts = [sum(r[k] for r in rows) for k in (ZEROS, NANS, INFS)]
    if all(map(math.isfinite, norms)):
        c = max(norms) or 1.0
        norm = c * math.sqrt(sum((v / c) ** 2 for v in norms))
    else:
        norm = math.nan if any(map(math.isnan, norms)) else math.inf
    c = max(abs(lo), abs(hi))
    c = c if c > 0 and math.isfinite(c) else 1.0
    mean = c * sum(r[MEAN] / c * (r[NUMEL] / n) for r in rows)
    if counts[1] or counts[2] or not math.isfinite(mean):
        std = math.nan  # what torch.var_mean gives with a NaN or Inf inside
    else:
        spread = sum((r[NUMEL] / n) * ((r[STD] / c) ** 2 + ((r[MEAN] - mean) / c) ** 2)
                     for r in rows)
        std = c * math.sqrt(spread)
    return [norm, mean, std, lo, hi, *counts, float(n)]


def _pow2(e: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``2**e`` for integer ``e`` inside ``_exponent_range(dtype)``, built from its bits (exact
    on every device, where ``exp2`` may round)."""
    if dtype == torch.float64:
        return ((e.to(torch.int64) + 1023) << 52).view(torch.float64)
    return ((e.to(torch.int32) + 127) << 23).view(torch.float32)


def _device_rows(x: torch.Tensor) -> torch.Tensor:
    """Statistics of each row of a real 2-D accelerator tensor, float64 ``(rows, 9)``; no sync."""
    acc = _acc(x.dtype)
    n = x.shape[1]
    lo, hi = x.amin(1), x.amax(1)
    if x.dtype == torch.float16:  # its squares never leave float32's range
        y, up = x, None
    else:  # every row scaled near its largest magnitude: knowing which need it would sync
        e = torch.frexp(torch.maximum(lo.neg(), hi).to(acc)).exponent.clamp_(*_exponent_range(acc))
        y = x * _pow2(-e, acc)[:, None]  # a temporary in ``acc``, reused for the centred pass
        up = _pow2(e, torch.float64)
    mean = y.sum(1, dtype=acc) / n
    norm = _norms(y, acc)
    centred = y.sub_(mean[:, None]) if y is not x else x - mean[:, None]
    shift = centred.sum(1, dtype=acc) / n  # the mean's own rounding (corrected two-pass)
    mean = mean + shift
    std = (_norms(centred, acc).square() / n - shift.square()).clamp_(min=0).sqrt()
    values = torch.stack([norm, mean, std, lo.to(acc), hi.to(acc)], dim=1).double()
    if up is not None:
        values[:, :3] *= up[:, None]
    numel = torch.full_like(lo, n, dtype=torch.int64)
    counts = [(x == 0).sum(1), torch.isnan(x).sum(1), torch.isinf(x).sum(1), numel]
    return torch.cat([values, torch.stack(counts, dim=1).double()], dim=1)  # exact past 2^24


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
    """Same-shape small gradients, held until they are stacked for one row-wise reduction.

    Holding a reference, not a copy, is what makes a hook cheap (a copy per gradient cost more
    than the whole reduction). It is safe because autograd only accumulates in place into a
    gradient nobody else holds (``InputBuffer`` and ``AccumulateGrad`` check the use count):
    holding one makes the engine add out of place instead, with the same values, and a leaf's
    first ``.grad`` becomes a copy instead of this tensor (same layout, by the gradient layout
    contract). Only a user hook that changes its gradient in place, which torch forbids, could
    alter a held value: the version counters tell, and ``changed`` lists the rows.
    """

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max_rows
        self.held: list[torch.Tensor] = []
        self.versions: list[int] = []
        self.rows: list[int] = []

    def put(self, row: int, g: torch.Tensor, version: int) -> bool:
        """Hold ``g``; returns whether the bucket is now full."""
        self.held.append(g)
        self.versions.append(version)
        self.rows.append(row)
        return len(self.rows) >= self.max_rows

    def take(self) -> tuple[list[int], torch.Tensor, list[int]]:
        """The rows, their gradients stacked ``(rows, numel)``, and the rows changed in place
        since they were held."""
        rows, held, versions = self.rows, self.held, self.versions
        self.rows, self.held, self.versions = [], [], []
        changed = [r for r, g, v in zip(rows, held, versions) if g._version != v]
        # reshape, not view: stacking channels_last gradients (a conv weight's) keeps their layout
        return rows, torch.stack(held).reshape(len(rows), -1), changed


def row_to_stats(row: Row) -> GradStats:
    norm, mean, std, lo, hi, zeros, nans, infs, numel = row
    n = int(numel)
    return GradStats(
        norm=float(norm),
        mean=float(mean),
        std=float(std),
        min=float(lo),
        max=float(hi),
        abs_max=max(abs(lo), abs(hi)) if not (math.isnan(lo) or math.isnan(hi)) else math.nan,
        zero_frac=(zeros / n) if n else 0.0,
        nan_count=int(nans),
        inf_count=int(infs),
        numel=n,
    )


class StatsBatch:
    """Collects the statistics of one backward pass; ``collect`` syncs once per device.

    Args:
        small: Gradients with at most this many elements are bucketed (0: none).
        chunk: Reduce a bucket once it holds this many elements.
        held_max: Reduce every bucket once they hold this many elements together.
        values: Also keep the values of real dense gradients with at most this many elements
            (0: none); after ``collect``, ``values`` maps their row index to ``Values``.
    """

    def __init__(self, *, small: int = SMALL, chunk: int = CHUNK, values: int = 0,
                 held_max: int = HELD_MAX) -> None:
        self.small = small
        self.chunk = chunk
        self.held_max = held_max
        self._held = 0  # elements waiting in buckets
        self.values_limit = values
        self.values: dict[int, Values] = {}
        self._copies: dict[int, tuple[tuple[int, ...], torch.Tensor]] = {}
        # A host row, a device tensor row, or None while its copy waits in a bucket.
        self._rows: list[Row | torch.Tensor | None] = []
        self._cache: dict[int, tuple[object, int, int]] = {}
        # Large gradients by the memory they cover: a transposed view (what TBackward sends to
        # a weight's AccumulateGrad) holds the same values, so the same statistics.
        self._spans: dict[tuple[object, ...], tuple[object, int, int]] = {}
        self._buckets: dict[tuple[torch.device, torch.dtype, torch.Size], _Bucket] = {}
        # Rows whose held gradient was changed in place before it was reduced (see _Bucket).
        self.changed: list[int] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, g: torch.Tensor) -> int:
        """Record the statistics of ``g``; returns its row index (shared by identical tensors)."""
        key = g._cdata
        hit = self._cache.get(key)
        strided = g.layout is torch.strided
        version = g._version if strided else (-1 if g.is_sparse else g._version)
        if hit is not None:
            ref, ver, idx = hit
            if ver == version and not ref.expired():  # type: ignore[attr-defined]
                return idx
        n = g.numel()
        if (strided and self.values_limit < n < SPAN_MIN and n <= self.small
                and not g.requires_grad and not g.is_nested and not g.is_complex()):
            # The common case, most of an unrolled RNN's gradients: a small real dense tensor,
            # held for its bucket (what the general path below does, with fewer checks).
            idx = len(self._rows)
            self._rows.append(None)
            self._cache[key] = (torch._C._WeakTensorRef(g), version, idx)
            self._bucket(idx, g, version)
            return idx
        span = _dense_span(g) if n >= SPAN_MIN else None
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
        plain = g.detach() if g.requires_grad else g
        if (0 < g.numel() <= self.values_limit and g.layout == torch.strided and not g.is_nested
                and g.is_floating_point()):
            self._copies[idx] = (tuple(g.shape), plain.reshape(-1).to(torch.float64, copy=True))
        self._reduce(plain, idx)
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
            self._bucket(idx, values, values._version)  # values may be a new tensor (abs)
            return
        if values.device.type == "cpu":
            flat, repeats = _distinct_row(values)
            row: Row | torch.Tensor = _repeated(_cpu_row(flat), repeats)
        else:
            row = _device_rows(values.reshape(1, -1))[0]
            if implicit_zeros:  # rare: a large sparse gradient on an accelerator
                row = row.tolist()
        if implicit_zeros:
            row = _fold_implicit_zeros(row, implicit_zeros)  # type: ignore[arg-type]
        self._rows[idx] = row

    def _bucket(self, idx: int, g: torch.Tensor, version: int) -> None:
        key = (g.device, g.dtype, g.shape)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(max(1, self.chunk // g.numel()))
        self._held += g.numel()
        if bucket.put(idx, g, version):
            self._drain(bucket)
        if self._held > self.held_max:
            for other in self._buckets.values():
                if other.rows:
                    self._drain(other)

    def _drain(self, bucket: _Bucket) -> None:
        rows, x, changed = bucket.take()
        self._held -= x.numel()
        self.changed += changed
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
        copies: dict[torch.device, list[int]] = {}
        for i, (_, c) in self._copies.items():
            copies.setdefault(c.device, []).append(i)
        for device in by_device.keys() | copies.keys():
            idxs, kept = by_device.get(device, []), copies.get(device, [])
            # Statistics and kept values of one device leave it in one transfer.
            parts = [self._rows[i].to(torch.float64) for i in idxs]  # type: ignore[union-attr]
            flat = torch.cat(([torch.stack(parts).reshape(-1)] if parts else [])
                             + [self._copies[i][1] for i in kept])
            host = flat.tolist() if device.type == "cpu" else flat.cpu().tolist()
            width = 9 * len(idxs)
            for k, i in enumerate(idxs):
                out[i] = host[9 * k : 9 * k + 9]
            at = width
            for i in kept:
                shape, copy = self._copies[i]
                n = copy.numel()
                self.values[i] = Values(shape, tuple(host[at : at + n]))
                at += n
        self._copies.clear()
        self._rows.clear()
        self._cache.clear()
        self._spans.clear()
        self._buckets.clear()
        self._held = 0
        return [row_to_stats(r) for r in out]  # type: ignore[arg-type]
