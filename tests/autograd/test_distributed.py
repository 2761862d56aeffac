"""watch(run=) inside DistributedDataParallel, with real processes over gloo on 127.0.0.1: every
rank records into one store, a NaN is traced to the rank where it was born, and the ranks'
disagreements (a rank's data, a rank's code path, a parameter DDP does not reduce) are found."""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import graphscope
from graphscope.cli import EXIT_FINDINGS, main
from graphscope.ranks import analyze_ranks, first_rank, nonfinite_birth
from graphscope.runs import open_run
from tests.processes import free_port, run_session

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

JOIN_TIMEOUT = 90  # seconds for all ranks of one run, start-up included


class Pre(nn.Module):
    """The inputs' preprocessing, with a scale parameter: log (a 0 in the data makes -inf in
    the forward) or sqrt (a 0 makes a finite forward and a NaN gradient of ``scale``)."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.scale = nn.Parameter(torch.ones(6))

    def forward(self, x):
        return torch.log(x * self.scale) if self.how == "log" else torch.sqrt(x * self.scale)


class Net(nn.Module):
    def __init__(self, how: str = "log") -> None:
        super().__init__()
        self.pre = Pre(how)
        self.fc1 = nn.Linear(6, 16)
        self.branch = nn.Linear(16, 16)
        self.fc2 = nn.Linear(16, 16)
        self.head = nn.Linear(16, 1)

    def forward(self, x, branch: bool = True):
        h = torch.relu(self.fc1(self.pre(x)))
        if branch:
            h = h + torch.relu(self.branch(h))
        return self.head(torch.relu(self.fc2(h)))


def _batch(rank: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.rand(8, 6, generator=g) + 0.5, torch.randn(8, 1, generator=g)


def _loop(ddp, rank, steps, *, run=None, every=1, branch=True, y_scale=1.0, zero_at=None, lr=0.01):
    """SGD over ``steps`` steps (under watch(run=) when ``run``); returns each step's grads."""
    opt = torch.optim.SGD(ddp.parameters(), lr=lr)
    grads = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        block = graphscope.watch(ddp, optimizer=opt, run=run, every=every, keep=0) if run else None
        if block is not None:
            block.__enter__()
        try:
            for step in range(1, steps + 1):
                x, y = _batch(rank, step)
                if zero_at == step:
                    x[0, 0] = 0.0
                loss = ((ddp(x, branch=branch) - y * y_scale) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                grads.append([None if p.grad is None else p.grad.clone() for p in ddp.parameters()])
                opt.step()
        finally:
            if block is not None:
                block.__exit__(None, None, None)
    return grads


def _nan_scenario(rank, world, run, out):
    """Rank 1 reads a 0 at step 5 (log(0) = -inf): compared with the same loop unwatched."""
    zero_at = 5 if rank == 1 else None
    torch.manual_seed(0)
    plain = nn.parallel.DistributedDataParallel(Net("log"))
    torch.manual_seed(0)
    watched = nn.parallel.DistributedDataParallel(Net("log"))
    a = _loop(plain, rank, 8, zero_at=zero_at)
    # every=1: the forward of each step is recorded, so the capture names the source line too
    # (a capture taken at an unrecorded step's backward names its op and module only).
    b = _loop(watched, rank, 8, run=run, every=1, zero_at=zero_at)
    same = all(
        (ga is None and gb is None) or torch.equal(ga, gb) or (
            torch.isnan(ga).any() and torch.equal(torch.nan_to_num(ga), torch.nan_to_num(gb)))
        for sa, sb in zip(a, b) for ga, gb in zip(sa, sb))
    finite = [all(g is None or bool(torch.isfinite(g).all()) for g in s) for s in b]
    Path(out, f"rank{rank}.json").write_text(json.dumps({"same": same, "finite": finite}))


def _ranks_scenario(rank, world, run, out):
    """Four ranks: rank 2 skips the branch (another code path), rank 3's targets are 1000x
    larger (its data; a small learning rate keeps the run finite until step 6), head.bias is left out of DDP (never all-reduced), and rank 1 reads a 0
    at step 6 (sqrt(0): a NaN born in the backward)."""
    torch.manual_seed(0)
    model = Net("sqrt")
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ["head.bias"])
    ddp = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
    grads = _loop(ddp, rank, 7, run=run, every=2, branch=rank != 2,
                  y_scale=1000.0 if rank == 3 else 1.0, zero_at=6 if rank == 1 else None, lr=1e-6)
    names = [n for n, _ in ddp.named_parameters()]
    Path(out, f"rank{rank}.json").write_text(json.dumps({
        "names": names,
        "norms": [[None if g is None else float(g.norm()) for g in s] for s in grads],
    }))


def _worker(rank, world, port, run, out, scenario):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        scenario(rank, world, run, out)
    finally:
        dist.destroy_process_group()


def launch(scenario: Callable[[int, int, str, str], None], world: int,
           tmp_path: Path) -> tuple[Path, list[dict]]:
    """Run ``scenario(rank, world, run, out)`` (a module-level function: spawn pickles it by
    name) on ``world`` spawned ranks over gloo, each writing ``out/rank{rank}.json``; every
    process is joined (or killed at the deadline) before this returns."""
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    ctx = mp.start_processes(_worker, args=(world, free_port(), str(run), str(out), scenario),
                             nprocs=world, join=False, start_method="spawn")
    deadline = time.monotonic() + JOIN_TIMEOUT
    try:
        # join() returns at each process's exit (raising if it failed): until all have.
        while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                pytest.fail(f"{world} ranks did not finish {scenario.__name__} in {JOIN_TIMEOUT} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
            p.join(5)
    assert all(p.exitcode == 0 for p in ctx.processes)
    return run, [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


def test_nan_born_on_one_rank_is_traced_there_and_training_is_unchanged(tmp_path):
    """Two ranks: gradients stay bit-identical to unwatched DDP; each rank's steps are in one
    store under its rank; the NaN is born on rank 1 at step 5 (its op, module and line named) and
    rank 0's finding says it received it through the all-reduce."""
    run, results = launch(_nan_scenario, 2, tmp_path)
    assert all(r["same"] for r in results)
    # DDP put the NaN in both ranks' reduced gradients at step 5: what the reports must untangle.
    assert [r["finite"].index(False) + 1 for r in results] == [5, 5]
    with open_run(run) as store:
        assert store.ranks() == [0, 1]
        assert [list(store.steps(r).step) for r in (0, 1)] == [list(range(1, 9))] * 2
        assert store.meta["world_size"] == 2 and store.meta["distributed"]["wrapper"] == "ddp"
        birth = nonfinite_birth(store)
        assert (birth.step, birth.born, birth.received) == (5, (1,), (0,))
        assert [c.reason for c in store.captures(1) if c.step == 5] == ["nonfinite"]
        findings = analyze_ranks(store)
    born = next(f for f in findings if f.kind == "nonfinite" and f.rank == 1)
    assert born.severity == graphscope.Severity.ERROR and born.step == 5
    assert "born on this rank" in born.message and "rank 0 received it" in born.message
    assert "at log (LogBackward0) in module module.pre" in born.message
    assert "test_distributed.py" in born.message  # the line of Pre.forward
    got = next(f for f in findings if f.kind == "nonfinite" and f.rank == 0)
    assert got.severity == graphscope.Severity.INFO and "received through the all-reduce from rank 1" in got.message
    assert first_rank(findings) == 1


def test_four_ranks_data_code_path_and_unreduced_parameter_are_found(tmp_path):
    """Four ranks writing one store at once: rank 3's wild local gradient norm, the branch rank 2
    never reaches, head.bias's gradients differing across ranks (not all-reduced), and the NaN
    born in rank 1's backward at step 6 are each a finding on the right rank."""
    run, results = launch(_ranks_scenario, 4, tmp_path)
    with open_run(run) as store:
        assert store.ranks() == [0, 1, 2, 3]
        names = [p.name for p in store.params(0)]
        assert names == results[0]["names"]
        for r in range(4):
            # Torch is the oracle: the stored norms are each rank's p.grad norms.
            series = store.param_series(r)
            want = np.array([[np.nan if v is None else v for v in s] for s in results[r]["norms"]])
            np.testing.assert_allclose(series.norm[:5], want[:5], rtol=1e-6)
        birth = nonfinite_birth(store)
        findings = analyze_ranks(store)
    assert (birth.step, birth.born) == (6, (1,))
    assert birth.params[1] == ("module.pre.scale",)
    by_kind = {}
    for f in findings:
        by_kind.setdefault(f.kind, []).append(f)
    assert [f.rank for f in by_kind["rank_grad_norm"]] == [3]
    (unused,) = by_kind["rank_unused"]
    assert unused.rank == 2 and set(unused.params) == {"module.branch.weight", "module.branch.bias"}
    desync = by_kind["rank_desync"]
    assert [(f.params, f.rank) for f in desync] == [(("module.head.bias",), 0)]
    nonfinite = {f.rank: f for f in by_kind["nonfinite"]}
    assert nonfinite[1].severity == graphscope.Severity.ERROR and "module.pre.scale" in nonfinite[1].message
    assert all(nonfinite[r].severity == graphscope.Severity.INFO for r in (0, 2, 3))
    # After the birth, every rank's NaN is through the weights: information, one cause.
    assert all(f.severity == graphscope.Severity.INFO for f in findings
               if f.kind.startswith("nonfinite") and f.step > 6)
    assert first_rank(findings) == 2  # its code path, at step 1


def test_torchrun_script_report_names_the_birth_rank(tmp_path, capsys):
    """A DDP script launched by torchrun (2 ranks, gloo) under watch(run=): every rank's steps are
    in the store, and `graphscope report` says the NaN was born on rank 1 at step 4 and that rank 0
    received it; torchrun and all its workers have exited when the test ends."""
    script = Path(__file__).with_name("torchrun_nan.py")
    run = tmp_path / "run"
    run_session([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                 "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(script),
                 str(run)], timeout=JOIN_TIMEOUT * 2)
    with open_run(run) as store:
        assert store.ranks() == [0, 1]
        assert [list(store.steps(r).step) for r in (0, 1)] == [list(range(1, 7))] * 2
    capsys.readouterr()
    assert main(["report", str(run), "--json"]) == EXIT_FINDINGS
    report = json.loads(capsys.readouterr().out)
    assert report["ranks"] == [0, 1] and report["first_rank_wrong"] == 1
    nonfinite = {f["rank"]: f for f in report["findings"] if f["kind"] == "nonfinite" and f["step"] == 4}
    assert nonfinite[1]["severity"] == "error" and "born on this rank" in nonfinite[1]["message"]
    assert "rank 0 received it" in nonfinite[1]["message"] and "module.0.scale" in nonfinite[1]["message"]
    assert "received through the all-reduce from rank 1" in nonfinite[0]["message"]
    assert main(["report", str(run)]) == EXIT_FINDINGS
    assert "rank 1 went wrong first" in capsys.readouterr().out
