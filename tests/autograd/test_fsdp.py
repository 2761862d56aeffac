"""watch(run=) inside FSDP2 (``fully_shard``), with real processes over gloo on 127.0.0.1: the
capture names the parameters whose unsharded copies the backward reaches, its gradient numbers
are the rank's own (torch's, on the same weights unsharded), the store's are the rank's shard
of the reduced gradient, and a parameter no rank uses is named by its qualified name and rank."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import graphscope
from graphscope.model import ParamStatus
from graphscope.ranks import analyze_ranks, first_rank, full_grad_norms, nonfinite_birth
from graphscope.runs import open_run
from tests.autograd.test_distributed import Pre, launch

fsdp = pytest.importorskip("torch.distributed.fsdp")
pytestmark = pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available() or not hasattr(fsdp, "fully_shard"),
    reason="needs torch.distributed with gloo and FSDP2's fully_shard")

STEPS = 3
UNUSED = ("spare.weight", "spare.bias")


class MLP(nn.Module):
    """Two sharded layers and a head in the root's group, beside a layer nothing uses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, 1)
        self.spare = nn.Linear(4, 4)

    def forward(self, x):
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _sharded() -> MLP:
    torch.manual_seed(0)
    model = MLP()
    fsdp.fully_shard(model.fc1)
    fsdp.fully_shard(model.fc2)
    fsdp.fully_shard(model)  # head and spare: the root's own group
    return model


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 * rank + step)
    return torch.randn(8, 6, generator=g), torch.randn(8, 1, generator=g)


def _train(model: MLP, rank: int, run: str | None) -> tuple[list[dict], list[dict]]:
    """SGD for STEPS steps (under watch(run=) when ``run``). Per step, the oracle: the gradient
    torch gives this rank's batch on the same weights in a plain, unsharded MLP (what this rank's
    backward computes before the reduce-scatter), and after the step the full reduced gradient
    and this rank's shard of it."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    weights, reduced = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = graphscope.watch(model, optimizer=opt, run=run, every=1, keep=0) if run else None
        if block is not None:
            block.__enter__()
        try:
            for step in range(1, STEPS + 1):
                x, y = _batch(rank, step)
                # A collective: every rank, in the same order.
                weights.append({n: p.full_tensor().detach() for n, p in model.named_parameters()})
                opt.zero_grad()
                ((model(x) - y) ** 2).mean().backward()
                reduced.append({n: {"full": p.grad.full_tensor().tolist(),
                                    "shard": float(p.grad.to_local().norm())}
                                for n, p in model.named_parameters() if p.grad is not None})
                opt.step()
        finally:
            if block is not None:
                block.__exit__(None, None, None)
    # Outside the watch (whose every backward is a step): the plain MLP on the same weights.
    plain, local = MLP(), []
    for step, w in enumerate(weights, 1):
        x, y = _batch(rank, step)
        plain.load_state_dict(w)
        plain.zero_grad()
        ((plain(x) - y) ** 2).mean().backward()
        local.append({n: q.grad.tolist() for n, q in plain.named_parameters() if q.grad is not None})
    return local, reduced


def _fsdp_scenario(rank, world, run, out):
    """The same sharded MLP trained twice, unwatched and watched: the gradients must not differ."""
    _, plain = _train(_sharded(), rank, None)
    local, watched = _train(_sharded(), rank, run)
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "local": local, "reduced": watched, "same": plain == watched,
        "wrapper": graphscope.autograd.distributed.wrapper_of(_sharded())}))


def test_fully_shard_capture_names_every_parameter_and_the_unused_one(tmp_path):
    """Two FSDP2 ranks: each capture reaches every used parameter by its qualified name (no
    false unreachable), with torch's numbers for the rank's own gradient; the store holds each
    rank's shard of the reduced gradient, and its shards add up to the full gradient's norm;
    the spare layer is the one unreachable finding, named with its rank; training unchanged."""
    run, results = launch(_fsdp_scenario, 2, tmp_path)
    assert all(r["same"] for r in results)
    assert results[0]["wrapper"] == "fsdp"
    used = [n for n in results[0]["local"][0]]
    assert used and not set(used) & set(UNUSED)
    # The ranks read different batches: their own gradients differ, so each is checked.
    assert results[0]["local"][0][used[0]] != results[1]["local"][0][used[0]]
    with open_run(run) as store:
        assert store.ranks() == [0, 1] and store.meta["distributed"]["wrapper"] == "fsdp"
        names = [p.name for p in store.params(0)]
        assert names == [*used, *UNUSED]
        for r in (0, 1):
            assert [c.step for c in store.captures(r)] == list(range(1, STEPS + 1))
            for step in range(1, STEPS + 1):
                g = store.capture(step, r)
                status = {p.name: p.status for p in g.params}
                assert status == {n: ParamStatus.UNREACHABLE if n in UNUSED
                                  else ParamStatus.REACHED for n in names}
                for name in used:
                    got = g.find(name).grad
                    want = np.array(results[r]["local"][step - 1][name])
                    assert got.norm == pytest.approx(np.linalg.norm(want), rel=1e-5), (r, step, name)
                    assert got.abs_max == pytest.approx(np.abs(want).max(), rel=1e-6), (r, step, name)
                    assert got.numel == int(np.prod(g.find(name).outputs[0].shape))
                unreachable = [f.param for f in g.findings if f.kind == "unreachable_param"]
                assert unreachable == list(UNUSED)
            # The flight recorder's per-step norms: this rank's shard of the reduced gradient.
            # A shard can be empty (head's one row on rank 1): it has no numbers.
            series = store.param_series(r)
            numel = {p.name: p.numel for p in store.params(r)}
            for step in range(1, STEPS + 1):
                shard = results[r]["reduced"][step - 1]
                np.testing.assert_allclose(
                    series.norm[step - 1][: len(used)],
                    [shard[n]["shard"] if numel[n] else np.nan for n in used], rtol=1e-6)
            assert not series.present[:, len(used):].any()  # the spare layer never had one
        full = full_grad_norms(store)
        findings = analyze_ranks(store)
    assert list(full.step) == list(range(1, STEPS + 1)) and list(full.names) == names
    for step in range(1, STEPS + 1):
        want = [float(np.linalg.norm(results[0]["reduced"][step - 1][n]["full"])) for n in used]
        np.testing.assert_allclose(full.norm[step - 1][: len(used)], want, rtol=1e-6)
        # The reduced gradient is the mean of the ranks' own (the plain, unsharded oracle's).
        for n in used:
            mean = np.mean([results[r]["local"][step - 1][n] for r in (0, 1)], axis=0)
            np.testing.assert_allclose(results[0]["reduced"][step - 1][n]["full"], mean,
                                       rtol=1e-5, atol=1e-7)
    assert np.isnan(full.norm[:, len(used):]).all()
    unused = sorted((f.rank, f.params) for f in findings if f.kind == "unreachable_param")
    assert unused == sorted((r, (n,)) for r in (0, 1) for n in UNUSED)
    assert all("spare" in f.message for f in findings if f.kind == "unreachable_param")


def _nan_scenario(rank, world, run, out):
    """Rank 1 reads a 0 at step 4: sqrt(0) gives pre's scale a NaN gradient in its element 0,
    which the reduce-scatter puts in rank 0's shard only."""
    torch.manual_seed(0)
    model = nn.Sequential(Pre("sqrt"), nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    fsdp.fully_shard(model[1])
    fsdp.fully_shard(model[3])
    fsdp.fully_shard(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    shards = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with graphscope.watch(model, optimizer=opt, run=run, every=1, keep=0):
            for step in range(1, 7):
                g = torch.Generator().manual_seed(10 * rank + step)
                x, y = torch.rand(8, 6, generator=g) + 0.5, torch.randn(8, 1, generator=g)
                if rank == 1 and step == 4:
                    x[0, 0] = 0.0
                opt.zero_grad()
                ((model(x) - y) ** 2).mean().backward()
                shards.append(bool(torch.isfinite(model[0].scale.grad.to_local()).all()))
                opt.step()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"finite_scale_shard": shards}))


def test_nan_born_on_one_rank_is_traced_there_under_fully_shard(tmp_path):
    """FSDP2: the NaN born in rank 1's backward lands in rank 0's shard only; the check on the
    unsharded gradients still names rank 1 (its parameter, op and module) and says rank 0
    received it."""
    run, results = launch(_nan_scenario, 2, tmp_path)
    # What the stored (sharded, reduced) gradients alone would say: rank 0 went bad, rank 1 not.
    assert [r["finite_scale_shard"][3] for r in results] == [False, True]
    with open_run(run) as store:
        birth = nonfinite_birth(store)
        findings = analyze_ranks(store)
    assert (birth.step, birth.born, birth.received) == (4, (1,), (0,))
    assert birth.params[1] == ("0.scale",)
    # Rank 1's own shard stayed finite: its finding comes from its check and its capture.
    born = {f.kind: f for f in findings if f.rank == 1 and f.step == 4}
    assert born["nonfinite"].severity == graphscope.Severity.ERROR
    assert "born on this rank, before the reduce-scatter" in born["nonfinite"].message
    assert "0.scale" in born["nonfinite"].message
    assert "rank 0 received it through the reduce-scatter" in born["nonfinite"].message
    origin = born["nonfinite_origin"].message
    assert born["nonfinite_origin"].severity == graphscope.Severity.ERROR
    assert "SqrtBackward0" in origin and "module 0" in origin
    got = next(f for f in findings if f.rank == 0 and f.step == 4 and f.kind == "nonfinite")
    assert got.severity == graphscope.Severity.INFO
    assert "received through the reduce-scatter from rank 1" in got.message
    # From step 5 every rank is non-finite through the weights: information, one cause.
    later = [f for f in findings if f.kind.startswith("nonfinite") and f.step > 4]
    assert {f.rank for f in later} == {0, 1}
    assert all(f.severity == graphscope.Severity.INFO for f in later)
    assert first_rank(findings) == 1


def test_capture_reads_no_value_of_a_freed_parameter():
    """A leaf whose storage is freed (as FSDP2 frees an unsharded parameter between forward and
    backward) is captured by its shape, its value not read (reading it is a segfault)."""
    w = nn.Parameter(torch.ones(3))
    loss = (w * 2).sum()
    w.untyped_storage().resize_(0)
    g = graphscope.capture(loss, warn=False)
    (leaf,) = [n for n in g.nodes if n.op == "AccumulateGrad"]
    assert leaf.value is None and leaf.outputs[0].shape == (3,)
    kept = nn.Parameter(torch.ones(3))
    assert next(n for n in graphscope.capture((kept * 2).sum(), warn=False).nodes
                if n.op == "AccumulateGrad").value is not None
