"""Gradient statistics are exact against torch, for every dtype, layout and path: the kernels
on their own, and as recorded by a real capture and backward (complex, float16 and bfloat16
without overflow, float32 and float64 range edges, uncoalesced sparse and nested tensors)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import graphscope
from graphscope.autograd import stats as statsmod
from graphscope.autograd.stats import SMALL, StatsBatch
from graphscope.model import GradStats
from tests.models import (
    assert_grads_identical,
    assert_norm,
    assert_same_structure,
    assert_stats,
    node_by_op,
    twins,
)

# (StatsBatch options, name): every gradient through the bucketed path, or through the single one.
PATHS = [({"small": 1 << 30}, "bucketed"), ({"small": 0}, "single")]


def _oracle(t: torch.Tensor) -> dict[str, float]:
    """What torch says, in float64 (magnitudes for complex, dense for sparse).

    The values are first divided by a power of two near their largest finite magnitude (exact),
    so that float64 squares neither overflow nor underflow even for float64 data.
    """
    if t.is_sparse:
        t = t.to_dense()
    v = (t.abs() if t.is_complex() else t).double().reshape(-1)
    if v.numel() == 0:
        return {"norm": 0.0, "mean": 0.0, "std": 0.0, "zero_frac": 0.0, "nan": 0, "inf": 0}
    top = float(v[v.isfinite()].abs().max()) if v.isfinite().any() else 0.0
    c = 2.0 ** (math.frexp(top)[1] - 1) if top > 0 else 1.0
    u = v / c
    var, mean = torch.var_mean(u, correction=0)
    return {
        "norm": float(torch.linalg.vector_norm(u)) * c,
        "mean": float(mean) * c,
        "std": float(var.sqrt()) * c,
        "min": float(v.min()),
        "max": float(v.max()),
        "zero_frac": float((v == 0).sum()) / v.numel(),
        "nan": int(v.isnan().sum()),
        "inf": int(v.isinf().sum()),
    }


def _stats(t: torch.Tensor, **options: int) -> GradStats:
    batch = StatsBatch(**options)
    batch.add(t)
    (s,) = batch.collect()
    return s


def _assert_exact(s: GradStats, t: torch.Tensor, rtol: float = 1e-5) -> None:
    want = _oracle(t)
    rms = want["norm"] / math.sqrt(max(t.numel(), 1))  # the tolerance's unit: no absolute floor
    assert s.numel == t.numel()
    assert s.nan_count == want["nan"] and s.inf_count == want["inf"]
    assert s.zero_frac == pytest.approx(want["zero_frac"], abs=1e-12)
    if want["nan"] or want["inf"]:
        return
    assert s.norm == pytest.approx(want["norm"], rel=rtol)
    assert s.rms == pytest.approx(rms, rel=rtol)
    assert s.mean == pytest.approx(want["mean"], rel=rtol, abs=rtol * rms)
    assert s.std == pytest.approx(want["std"], rel=rtol, abs=rtol * rms)
    if t.numel():
        assert s.min == pytest.approx(want["min"], rel=rtol)
        assert s.max == pytest.approx(want["max"], rel=rtol)
        assert s.abs_max == pytest.approx(max(abs(want["min"]), abs(want["max"])), rel=rtol)


@pytest.mark.parametrize(("options", "path"), PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_real_dtypes_match_torch(options: dict, path: str, dtype: torch.dtype) -> None:
    """norm/mean/std/min/max/zeros of each float dtype equal torch's (float64 oracle)."""
    g = torch.Generator().manual_seed(0)
    t = torch.randn(37, 53, generator=g).to(dtype)
    t[0, :5] = 0
    _assert_exact(_stats(t, **options), t, rtol=1e-5 if dtype.itemsize >= 4 else 1e-3)


@pytest.mark.parametrize(("options", "path"), PATHS)
def test_float16_squares_do_not_overflow(options: dict, path: str) -> None:
    """float16 values above sqrt(65504) (whose squares overflow float16) keep a finite norm."""
    t = torch.full((64,), 300.0, dtype=torch.float16)
    t[::2] = -1000.0
    s = _stats(t, **options)
    assert math.isfinite(s.norm) and s.inf_count == 0
    assert s.norm == pytest.approx(float(t.float().norm()), rel=1e-6)
    _assert_exact(s, t)


@pytest.mark.parametrize(("options", "path"), PATHS)
def test_complex_by_magnitude(options: dict, path: str) -> None:
    """Complex gradients are summarised by |z|; the norm equals torch's complex norm."""
    g = torch.Generator().manual_seed(1)
    t = torch.randn(40, dtype=torch.complex64, generator=g)
    s = _stats(t, **options)
    assert s.norm == pytest.approx(float(t.norm()), rel=1e-6)
    _assert_exact(s, t)


@pytest.mark.parametrize(("options", "path"), PATHS)
def test_nan_and_inf_counts_exact(options: dict, path: str) -> None:
    """NaN and Inf are counted exactly and propagate into norm/mean/std as in torch."""
    t = torch.arange(20, dtype=torch.float32)
    t[[1, 4, 9]] = float("nan")
    t[[2, 3]] = float("inf")
    t[7] = float("-inf")
    s = _stats(t, **options)
    assert (s.nan_count, s.inf_count) == (3, 3)
    assert math.isnan(s.norm) and math.isnan(s.mean) and math.isnan(s.std)
    assert s.zero_frac == pytest.approx(1 / 20)
    only_inf = torch.tensor([1.0, float("inf"), 0.0])
    s = _stats(only_inf, **options)
    assert (s.nan_count, s.inf_count) == (0, 1) and s.norm == math.inf and s.max == math.inf
    assert s.zero_frac == pytest.approx(1 / 3) and not s.finite


@pytest.mark.parametrize(("options", "path"), PATHS)
def test_large_mean_keeps_std_exact(options: dict, path: str) -> None:
    """A gradient dominated by its mean (every element ~1/n) still gets torch's std, not noise."""
    t = torch.full((1000,), 1e-3) + torch.linspace(-1e-7, 1e-7, 1000)
    s = _stats(t, **options)
    assert s.std == pytest.approx(float(t.double().std(correction=0)), rel=1e-3)
    assert _stats(torch.full((50,), 0.01), **options).std == 0.0


def _assert_finite(s: GradStats) -> None:
    assert s.inf_count == 0 and s.nan_count == 0
    for name in ("norm", "mean", "std", "rms", "min", "max", "abs_max"):
        assert math.isfinite(getattr(s, name)), (name, s)


@pytest.mark.parametrize(("options", "path"), PATHS)
@pytest.mark.parametrize("magnitude", [1e18, 1e30, 3e38])
def test_huge_float32_gradients_have_finite_exact_stats(
    options: dict, path: str, magnitude: float
) -> None:
    """float32 values up to 3e38, whose squares overflow float32, give a finite norm, std and rms
    equal to float64's (and a finite mean when all share a sign)."""
    g = torch.Generator().manual_seed(4)
    for t in (torch.randn(5000, generator=g).clamp(-1, 1), torch.rand(5000, generator=g)):
        t = (t * magnitude).float()
        s = _stats(t, **options)
        _assert_finite(s)
        _assert_exact(s, t, rtol=1e-6)


@pytest.mark.parametrize(("options", "path"), PATHS)
def test_range_edges_of_every_float_dtype(options: dict, path: str) -> None:
    """Values at the top and bottom (subnormal) of float16, bfloat16, float32 and float64 range,
    mixed-sign and all positive, give finite stats equal to float64's (scaled where needed)."""
    base = torch.linspace(-1, 1, 2 * 4096 + 7, dtype=torch.float64)
    failures = []
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        info = torch.finfo(dtype)
        for scale in (info.max * 0.99, info.smallest_normal, info.smallest_normal * info.eps * 64):
            for values in (base, base.abs()):
                t = (values * scale).to(dtype)
                assert t.count_nonzero() > t.numel() // 4, (dtype, scale)  # not flushed to zero
                s = _stats(t, **options)
                want = _oracle(t)
                if not math.isfinite(want["norm"]):  # float64 max * sqrt(n): float64 cannot hold it
                    assert s.norm == math.inf and math.isfinite(s.std) and s.inf_count == 0
                    continue
                try:
                    _assert_finite(s)
                    _assert_exact(s, t, rtol=1e-6)
                except AssertionError as e:
                    signs = "positive" if values is not base else "mixed"
                    failures.append(f"{dtype} scale={scale:g} {signs}: {e}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(("options", "path"), PATHS)
@pytest.mark.parametrize("magnitude", [1e-30, 1e-40, 1e-44])
def test_tiny_gradients_keep_nonzero_rms(options: dict, path: str, magnitude: float) -> None:
    """float32 values whose squares underflow (1e-30) or that are subnormal (1e-40) keep a
    non-zero norm, std and rms equal to float64's."""
    t = (torch.linspace(-1, 1, 3001) * magnitude).float()
    s = _stats(t, **options)
    assert s.norm > 0 and s.rms > 0 and s.std > 0
    _assert_exact(s, t, rtol=1e-6)


@pytest.mark.parametrize(("options", "path"), PATHS)
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "mean-dominated"])
def test_large_gradient_std_exact(options: dict, path: str, layout: str) -> None:
    """A gradient of over four million elements gets norm and std within 1e-6 of float64's
    (float32 norms drift by 1e-4 at this size), transposed or dominated by its mean too."""
    g = torch.Generator().manual_seed(5)
    t = torch.randn(2048, 2051, generator=g)
    if layout == "transposed":
        t = t.t()
    elif layout == "mean-dominated":
        t = t * 1e-3 + 1.0
    s = _stats(t, **options)
    want = _oracle(t)
    assert s.norm == pytest.approx(want["norm"], rel=1e-6)
    assert s.std == pytest.approx(want["std"], rel=1e-6)
    assert s.std == pytest.approx(float(t.double().std(correction=0)), rel=1e-6)
    assert s.mean == pytest.approx(want["mean"], rel=1e-6, abs=1e-6 * want["std"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_long_gradient_reduced_in_pieces_is_exact(dtype: torch.dtype) -> None:
    """A gradient longer than one piece whose pieces differ wildly (1e-20 next to 1e20 values,
    a run of zeros, a mean-dominated stretch) gets the float64 oracle's statistics, and a NaN in
    one piece is counted with the rest."""
    g = torch.Generator().manual_seed(7)
    piece = statsmod._PIECE
    t = torch.randn(4 * piece + 123, generator=g, dtype=torch.float64)
    t[:piece] *= 1e-20
    t[piece : 2 * piece] *= 1e20 if dtype == torch.float32 else 1e300
    t[2 * piece : 2 * piece + 1000] = 0
    t[2 * piece + 1000 :] = t[2 * piece + 1000 :] * 1e-3 + 5.0
    t = t.to(dtype)
    assert t.numel() > statsmod._WHOLE_MAX
    _assert_exact(_stats(t), t, rtol=1e-6)
    t[piece + 5] = float("nan")
    s = _stats(t)
    assert (s.nan_count, s.inf_count, s.numel) == (1, 0, t.numel())
    assert s.zero_frac == pytest.approx(1000 / t.numel(), abs=1e-12)
    assert math.isnan(s.norm) and math.isnan(s.std)


def test_broadcast_gradient_exact_and_counted() -> None:
    """A large expanded gradient (stride 0, as from a sum) gets float64-exact stats, with zeros
    and NaNs counted once per element it stands for."""
    row = torch.tensor([0.0, 0.1, -0.3, 0.7])
    t = row.expand(1 << 20, 4)
    s = _stats(t)
    assert s.numel == 1 << 22 and s.zero_frac == 0.25
    _assert_exact(s, t, rtol=1e-6)
    nan_row = torch.tensor([float("nan"), 1.0, 0.0])
    s = _stats(nan_row[:, None].expand(3, 30000).t())
    assert (s.nan_count, s.inf_count, s.numel) == (30000, 0, 90000)
    assert s.zero_frac == pytest.approx(1 / 3)
    assert math.isnan(s.norm) and math.isnan(s.max)


def test_sparse_huge_values_fold_exactly() -> None:
    """A sparse gradient with 1e30 values keeps finite, exact stats once its implicit zeros are
    folded in."""
    idx = torch.arange(0, 4000, 2)
    t = torch.sparse_coo_tensor(
        idx[None], torch.linspace(-1e30, 3e30, 2000), (4000,), check_invariants=True
    )
    s = _stats(t)
    _assert_finite(s)
    _assert_exact(s, t, rtol=1e-6)


@pytest.mark.parametrize(("options", "path"), PATHS)
def test_empty_tensor(options: dict, path: str) -> None:
    """An empty gradient gives zeros, not NaN or an error."""
    s = _stats(torch.empty(0, 4), **options)
    assert s.numel == 0 and s.norm == 0.0 and s.zero_frac == 0.0 and s.finite


def test_sparse_all_implicit() -> None:
    """A sparse gradient with no stored values is all zeros."""
    t = torch.sparse_coo_tensor(
        torch.empty(2, 0, dtype=torch.long), torch.empty(0), (3, 4), check_invariants=True
    )
    s = _stats(t)
    assert s.numel == 12 and s.zero_frac == 1.0 and s.norm == 0.0


def test_bucketed_and_single_paths_agree() -> None:
    """The small-gradient bucket and the one-tensor path give the same numbers."""
    g = torch.Generator().manual_seed(2)
    tensors = [torch.randn(16, 128, generator=g) * 10**i for i in range(-3, 4)]
    tensors += [torch.randn(7, generator=g), torch.randn(3, 5, generator=g).t()]
    a, b = StatsBatch(small=1 << 30, chunk=4096), StatsBatch(small=0)
    for t in tensors:
        a.add(t)
        b.add(t)
    for x, y in zip(a.collect(), b.collect()):
        for name in ("norm", "mean", "std", "min", "max", "zero_frac", "nan_count", "inf_count"):
            assert getattr(x, name) == pytest.approx(getattr(y, name), rel=1e-5, abs=1e-12), name


def test_default_threshold_routes_by_size() -> None:
    """Gradients up to SMALL elements are bucketed, larger ones reduced alone; both exact."""
    small, large = torch.randn(SMALL), torch.randn(SMALL + 1)
    batch = StatsBatch()
    batch.add(small)
    batch.add(large)
    assert len(batch._buckets) == 1
    s_small, s_large = batch.collect()
    _assert_exact(s_small, small)
    _assert_exact(s_large, large)


def test_bucket_is_bounded_and_reports_in_place_changes() -> None:
    """A full bucket is reduced at once (it holds at most ``chunk`` elements), and a gradient
    changed in place after it was added is listed in ``changed`` (a new version gets a row)."""
    batch = StatsBatch(chunk=64)
    t = torch.ones(16)
    batch.add(t)
    t.mul_(3)  # a new version: recorded again; the first row's tensor has changed under it
    batch.add(t)
    for _ in range(6):
        batch.add(torch.ones(16))
        bucket = batch._buckets[(t.device, t.dtype, t.shape)]
        assert sum(g.numel() for g in bucket.held) <= 64
    stats = batch.collect()
    assert batch.changed == [0]
    assert stats[1].mean == 3.0 and [s.mean for s in stats[2:]] == [1.0] * 6


def test_a_complex_gradient_edited_before_it_was_added_is_not_reported_changed() -> None:
    """A complex gradient is held as its magnitudes (a new tensor): an in-place edit made
    before ``add`` is not an in-place change after it."""
    t = torch.randn(5, dtype=torch.complex64)
    t.mul_(2)
    batch = StatsBatch()
    batch.add(t)
    (s,) = batch.collect()
    assert batch.changed == []
    assert s.norm == pytest.approx(float(t.abs().double().norm()), rel=1e-6)


def test_many_shapes_hold_no_more_than_the_budget() -> None:
    """Gradients of many distinct small shapes are held no longer than the batch's element
    budget allows (every bucket reduced past it), and each keeps its exact statistics."""
    batch = StatsBatch(chunk=1 << 12, held_max=1000)
    g = torch.Generator().manual_seed(3)
    ts = [torch.randn(10 + k, generator=g) for k in range(60)]
    for t in ts:
        batch.add(t)
        held = sum(x.numel() for b in batch._buckets.values() for x in b.held)
        assert held <= 1000 + t.numel()
    for s, t in zip(batch.collect(), ts):
        _assert_exact(s, t)


def test_same_tensor_reduced_once() -> None:
    """The same gradient tensor queued twice shares one row; a new version gets a new one."""
    batch = StatsBatch()
    t = torch.randn(5)
    assert batch.add(t) == batch.add(t)
    t.add_(1)
    assert batch.add(t) != 0
    assert len(batch) == 2


def test_norm_equals_parameter_grad_norm() -> None:
    """A capture's parameter gradient norm equals p.grad.norm() for a real backward."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(300, 200), torch.nn.ReLU(), torch.nn.Linear(200, 1))
    loss = model(torch.randn(64, 300)).square().mean()
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    for name, p in model.named_parameters():
        s = graph.find(name).grad
        assert s.norm == pytest.approx(float(p.grad.norm()), rel=1e-6), name
        assert s.zero_frac == pytest.approx(float((p.grad == 0).double().mean()))


def test_channels_last_gradients_are_stacked_and_exact() -> None:
    """Small channels_last gradients (a conv net run in channels_last, as vision models are)
    stack into a non-contiguous block: the capture still gives every parameter the statistics
    of its p.grad (it once failed the whole pass with a view error)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 2))
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    loss = model(x).square().mean()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RecordingWarning (a failed pass) fails the test
        graph = graphscope.capture(loss, model=model, warn=False)
        loss.backward()
    assert not model[2].weight.grad.is_contiguous()  # the case: channels_last weight gradients
    for name, p in model.named_parameters():
        _assert_exact(graph.find(name).grad, p.grad)


def test_exploding_capture_norm_equals_float64_grad_norm() -> None:
    """A real capture + backward whose parameter gradients are ~1e18 records each norm as
    p.grad.double().norm() (finite; float32 sums of squares overflow), std as torch's, no Inf."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Tanh(), torch.nn.Linear(64, 64))
    loss = model(torch.randn(32, 64)).sum() * 1e18
    graph = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    for name, p in model.named_parameters():
        s = graph.find(name).grad
        want = p.grad.double()
        assert s.inf_count == 0 and s.nan_count == 0, name
        assert math.isfinite(s.norm) and s.norm == pytest.approx(float(want.norm()), rel=1e-6), name
        assert s.std == pytest.approx(float(want.std(correction=0)), rel=1e-6), name
        assert s.rms == pytest.approx(float(want.square().mean().sqrt()), rel=1e-6), name
    assert not [f for f in graph.findings if f.kind.startswith("nonfinite")]


def test_combine_matches_concatenation() -> None:
    """combine() of per-output stats equals the stats of the outputs taken together."""
    a, b = torch.randn(30), torch.randn(50) + 2
    a[:12] = 0  # zeros in one part only: the shares must be weighted by size
    together = _stats(torch.cat([a, b]))
    merged = GradStats.combine([_stats(a), _stats(b)])
    for name in ("norm", "mean", "std", "min", "max", "zero_frac"):
        assert getattr(merged, name) == pytest.approx(getattr(together, name), rel=1e-5), name


def test_combine_keeps_huge_and_tiny_float64_finite() -> None:
    """combine() of float64 outputs near 1e200 or 1e-200, whose squares leave float64's range,
    equals the stats of the outputs taken together."""
    g = torch.Generator().manual_seed(6)
    for magnitude in (1e200, 1e-200):
        a = torch.randn(30, generator=g, dtype=torch.float64) * magnitude
        b = (torch.randn(50, generator=g, dtype=torch.float64) + 2) * magnitude
        merged = GradStats.combine([_stats(a), _stats(b)])
        _assert_finite(merged)
        _assert_exact(merged, torch.cat([a, b]), rtol=1e-12)


def test_accelerator_rows_agree_with_cpu_rows() -> None:
    """The no-sync device kernel (run here on CPU tensors) gives the CPU path's numbers."""
    from graphscope.autograd.stats import _cpu_rows, _device_rows

    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 50, generator=g) * torch.logspace(-3, 3, 6)[:, None]
    x[1, :10] = 0
    x[2] += 100.0  # mean-dominated row
    x[3, 4] = float("nan")
    x[4, 5] = float("inf")
    host = _cpu_rows(x, rows=True)
    device = _device_rows(x).double().tolist()
    for a, b in zip(host, device):
        assert a[5:] == b[5:]  # zeros, NaN, Inf, numel: exact counts
        if a[6] or a[7]:
            continue
        assert a[:5] == pytest.approx(b[:5], rel=1e-5)
    for dtype in (torch.float16, torch.bfloat16, torch.float64):
        y = x[[0, 1, 2, 5]].to(dtype)
        for a, b in zip(_cpu_rows(y, rows=True), _device_rows(y).double().tolist()):
            assert a == pytest.approx(b, rel=1e-3)


def test_transposed_view_shares_the_row() -> None:
    """A large gradient and its transpose (same memory) are reduced once; a strided slice
    of the same memory is not mistaken for them."""
    t = torch.randn(300, 400)
    batch = StatsBatch()
    a = batch.add(t)
    assert batch.add(t.t()) == a
    assert batch.add(t.t().contiguous()) != a
    assert batch.add(t[:, ::2]) != a
    t.add_(1)  # views share the version counter: a changed value is a new row
    assert batch.add(t.t()) != a
    stats = batch.collect()
    _assert_exact(stats[a], t - 1, rtol=1e-4)


def test_accelerator_rows_scale_huge_and_tiny_values() -> None:
    """The device kernel (run here on CPU tensors) gives float64-exact norm, mean and std for
    rows whose squares overflow or underflow: 1e18 and 1e-40 float32, 3e38 bfloat16 (3 x 1e38),
    1e300 and 1e-300 float64."""
    from graphscope.autograd.stats import _device_rows

    base = torch.linspace(-1, 3, 5003, dtype=torch.float64)
    for dtype, magnitude in [
        (torch.float32, 1e18),
        (torch.float32, 1e-40),
        (torch.bfloat16, 1e38),
        (torch.float64, 1e300),
        (torch.float64, 1e-300),
    ]:
        x = (base * magnitude).to(dtype)
        norm, mean, std, *_ = _device_rows(torch.stack([x, x.abs()])).tolist()[0]
        want = _oracle(x)
        got = {"norm": norm, "mean": mean, "std": std}
        for name in got:
            assert got[name] == pytest.approx(want[name], rel=1e-6), (dtype, magnitude, name)


def test_accelerator_rows_count_exactly_past_float32() -> None:
    """The device kernel's zero count and numel stay exact past 2^24 elements, where float32
    integers round."""
    from graphscope.autograd.stats import _device_rows

    x = torch.zeros(1, (1 << 24) + 1)
    x[0, 0] = 1.0
    (row,) = _device_rows(x).tolist()
    assert row[5:] == [float(1 << 24), 0.0, 0.0, float((1 << 24) + 1)]


# -- recorded by a capture (issue 5.7) ------------------------------------------------------------


def test_captured_complex_gradients_summarised_by_magnitude():
    """A complex parameter's recorded norm equals p.grad.norm(); stats describe |grad|."""
    torch.manual_seed(0)
    w = torch.randn(6, dtype=torch.cfloat, requires_grad=True)
    x = torch.randn(6, dtype=torch.cfloat)
    loss = (x * w).abs().pow(2).sum() + (w * w).real.sum()
    g = graphscope.capture(loss, warn=False)
    assert_same_structure(g, [loss])
    loss.backward()
    leaf = node_by_op(g, "AccumulateGrad")
    assert leaf.dtype == "complex64"
    assert_norm(leaf.grad.norm, w.grad)
    assert_stats(leaf.grad, w.grad)
    assert graphscope.active_hook_count() == 0


def test_captured_float16_stats_do_not_overflow():
    """float16 gradients whose squares overflow fp16 still get a finite, exact norm."""
    w = torch.ones(1000, dtype=torch.float16, requires_grad=True)
    loss = (w * 60000.0).float().sum()  # the fp16 product is finite, its fp32 sum too
    g = graphscope.capture(loss, warn=False)
    loss.backward()
    assert torch.isinf(w.grad.norm())  # what a naive fp16 reduction gives
    leaf = node_by_op(g, "AccumulateGrad")
    assert leaf.grad.finite and leaf.grad.inf_count == 0
    assert_norm(leaf.grad.norm, w.grad)
    assert_stats(leaf.grad, w.grad)
    assert not [f for f in g.findings if f.kind.startswith("nonfinite")]


def test_captured_bfloat16_near_max_stats_do_not_overflow():
    """bfloat16 gradients near 1e38 (float32's range, whose squares and sums overflow float32)
    get a finite norm, mean and std equal to float64's."""
    w = torch.ones(1000, dtype=torch.bfloat16, requires_grad=True)
    scale = torch.linspace(0.5, 3.0, 1000)
    loss = (w.double() * scale * 1e38).sum()  # finite in float64; float32 sums would overflow
    g = graphscope.capture(loss, warn=False)
    loss.backward()
    assert torch.isinf(w.grad.float().norm())  # what a float32 reduction gives
    leaf = node_by_op(g, "AccumulateGrad")
    assert leaf.grad.finite and math.isfinite(leaf.grad.mean) and math.isfinite(leaf.grad.std)
    assert_norm(leaf.grad.norm, w.grad)
    assert_stats(leaf.grad, w.grad, rel=1e-6)
    assert not [f for f in g.findings if f.kind.startswith("nonfinite")]


@pytest.mark.parametrize("magnitude", [1e-30, 1e-40])
def test_captured_float32_tiny_gradients_keep_nonzero_norm(magnitude):
    """float32 gradients of 1e-30 (squares underflow) or 1e-40 (subnormal) record a non-zero
    norm and rms equal to float64's, not 0."""
    w = torch.zeros(500, requires_grad=True)
    loss = (w * torch.linspace(-1.0, 2.0, 500) * magnitude).sum()
    g = graphscope.capture(loss, warn=False)
    loss.backward()
    leaf = node_by_op(g, "AccumulateGrad")
    want = w.grad.double()
    assert leaf.grad.norm > 0 and leaf.grad.rms > 0
    assert leaf.grad.norm == pytest.approx(float(want.norm()), rel=1e-6)
    assert leaf.grad.rms == pytest.approx(float(want.square().mean().sqrt()), rel=1e-6)
    assert leaf.grad.std == pytest.approx(float(want.std(correction=0)), rel=1e-6)


@pytest.mark.parametrize("magnitude", [1e200, 1e-200])
def test_captured_float64_extreme_gradients_exact(magnitude):
    """float64 gradients near 1e200 or 1e-200, whose squares leave float64's range, record
    finite, non-zero stats equal to torch's (computed on the scaled-back gradient)."""
    w = torch.zeros(400, dtype=torch.float64, requires_grad=True)
    loss = (w * torch.linspace(-1.0, 2.0, 400, dtype=torch.float64) * magnitude).sum()
    g = graphscope.capture(loss, warn=False)
    loss.backward()
    s = node_by_op(g, "AccumulateGrad").grad
    unit = w.grad / magnitude  # torch's own float64 norm of w.grad is inf or 0
    assert s.finite and 0 < s.norm < math.inf
    assert s.norm == pytest.approx(float(unit.norm()) * magnitude, rel=1e-12)
    assert s.std == pytest.approx(float(unit.std(correction=0)) * magnitude, rel=1e-12)
    assert s.rms == pytest.approx(float(unit.square().mean().sqrt()) * magnitude, rel=1e-12)


def test_captured_sparse_embedding_uncoalesced_gradient():
    """An uncoalesced sparse gradient (repeated indices) gets exact stats over the dense
    tensor, and the user's sparse gradient is left exactly as torch made it."""
    model, twin = twins(lambda: nn.Embedding(10, 3, sparse=True))
    idx = torch.tensor([1, 1, 2, 1, 7])
    weights = torch.linspace(-2, 2, 15).reshape(5, 3)
    loss = (model(idx) * weights).sum()
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    (twin(idx) * weights).sum().backward()
    assert model.weight.grad.is_sparse and not model.weight.grad.is_coalesced()
    assert_grads_identical(model, twin)
    node = g.find("weight")
    # torch's own norm of the sparse gradient sums the duplicates first (coalesces).
    assert_norm(node.grad.norm, model.weight.grad)
    assert node.grad.norm == pytest.approx(float(model.weight.grad.to_dense().norm()), rel=1e-6)
    assert_stats(node.grad, model.weight.grad)
    assert node.grad.zero_frac == pytest.approx(21 / 30)
    assert graphscope.active_hook_count() == 0


@pytest.mark.parametrize("layout", [torch.jagged, torch.strided], ids=["jagged", "strided"])
def test_captured_nested_tensors_supported_or_clearly_marked(layout):
    """Nested-tensor gradients never crash a capture; each is summarised exactly, or its node
    says plainly that the layout is unsupported (never an unexplained NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: strided nested is a prototype
        nt = torch.nested.nested_tensor(
            [torch.linspace(0, 1, 6).reshape(2, 3), torch.linspace(1, 2, 12).reshape(4, 3)],
            layout=layout,
            requires_grad=True,
        )
    y = (nt * 2).sin()
    loss = y.values().sum() if layout == torch.jagged else torch.nested.to_padded_tensor(y, 0.0).sum()
    g = graphscope.capture(loss, warn=False)
    assert_same_structure(g, [loss])
    loss.backward()
    assert graphscope.active_hook_count() == 0
    assert not g.findings
    leaf = node_by_op(g, "AccumulateGrad")
    values = torch.cat([t.reshape(-1) for t in nt.grad.unbind()])
    for node in g.nodes:
        s = node.grad
        assert s is not None and node.executed, node.op
        exact = s.numel > 0 and s.norm == s.norm  # a real number
        marked = any("nested" in (m.value or "") or "unsupported" in (m.value or "") for m in node.outputs)
        assert exact or marked, f"{node.op}: {s} with outputs {node.outputs}"
    if leaf.grad.numel:
        assert_stats(leaf.grad, values)
