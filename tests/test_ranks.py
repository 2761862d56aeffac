"""Cross-rank judgement on stores written without torch: where a NaN was born and who received
it, a rank's wild local gradient norm, parameters one rank never reaches, and reduced gradients
that differ across DDP ranks."""

from __future__ import annotations

import numpy as np

from graphscope.model import Graph, ParamInfo, Severity
from graphscope.ranks import analyze_ranks, first_rank, full_grad_norms, nonfinite_birth
from graphscope.runs import RunParam, RunWriter, StepRecord, open_run

PARAMS = [RunParam(0, "fc.weight", "fc", (4, 4), 16), RunParam(1, "fc.bias", "fc", (4,), 4),
          RunParam(2, "extra.weight", "extra", (4, 4), 16)]


def _graph(reached: set[str]) -> Graph:
    return Graph(params=[ParamInfo(p.name, p.shape, "reached" if p.name in reached else "unreachable")
                         for p in PARAMS])


def _write(path, world, *, nan_rank=None, nan_step=6, big_rank=None, skip_rank=None,
           desync=None, steps=8):
    """Each rank's writer in turn into one store: DDP-reduced norms (the same on every rank
    unless ``desync`` names a parameter index), local norms on captured steps 1 and 5."""
    for rank in range(world):
        w = RunWriter(path, PARAMS, rank=rank, meta={"world_size": world,
                                                     "distributed": {"wrapper": "ddp"}})
        for step in range(1, steps + 1):
            bad = nan_rank is not None and step >= nan_step
            norms = np.array([1.0, 0.5, 0.2]) * (1 + 0.01 * step)
            if desync is not None:
                norms[desync] *= 1 + rank
            if bad:
                norms[:] = np.nan
            w.add_step(StepRecord(step, 0.0, 1.0, float("nan") if bad else 1.2, norms,
                                  norms, np.zeros(3), nonfinite=36 if bad else 0,
                                  nonfinite_params={0: 16, 1: 4, 2: 16} if bad else {}, rank=rank))
            if step in (1, 5):
                local = 1.0 * (300 if rank == big_rank else 1 + 0.1 * rank)
                w.add_event(step, "local", {"norm": local, "finite": True})
                reached = {p.name for p in PARAMS} - ({"extra.weight"} if rank == skip_rank else set())
                w.add_capture(step, _graph(reached), "every")
            if bad and step == nan_step:
                if rank == nan_rank:
                    w.add_event(step, "local_nonfinite", {"norm": "nan", "params": ["fc.bias"]})
                w.add_event(step, "nonfinite", {})
        w.close()
    return open_run(path)


def test_nan_is_born_on_the_rank_whose_own_gradients_were_nonfinite(tmp_path):
    """The rank with a local_nonfinite event at the first bad step is the birth rank (an error
    naming its parameter); the others received it (information); it went wrong first."""
    with _write(tmp_path / "run", 4, nan_rank=2) as run:
        birth = nonfinite_birth(run)
        findings = analyze_ranks(run)
    assert (birth.step, birth.born, birth.received) == (6, (2,), (0, 1, 3))
    nonfinite = {f.rank: f for f in findings if f.kind == "nonfinite"}
    assert nonfinite[2].severity is Severity.ERROR and "fc.bias" in nonfinite[2].message
    assert "ranks 0, 1, 3 received it through the all-reduce" in nonfinite[2].message
    assert all(nonfinite[r].severity is Severity.INFO and "from rank 2" in nonfinite[r].message
               for r in (0, 1, 3))
    assert first_rank(findings) == 2


def test_a_rank_with_a_wild_local_norm_is_named(tmp_path):
    """Of four ranks, the one whose local norm is 300x the median is named, and only it; of
    two, the larger; ranks alike give no finding."""
    with _write(tmp_path / "four", 4, big_rank=3) as run:
        assert [f.rank for f in analyze_ranks(run) if f.kind == "rank_grad_norm"] == [3]
    with _write(tmp_path / "two", 2, big_rank=0) as run:
        assert [f.rank for f in analyze_ranks(run) if f.kind == "rank_grad_norm"] == [0]
    with _write(tmp_path / "alike", 4) as run:
        assert not [f for f in analyze_ranks(run) if f.kind.startswith("rank_")]


def test_a_parameter_one_rank_never_reaches_is_named_with_that_rank(tmp_path):
    """A parameter reached in the other ranks' captures but not in rank 1's is rank 1's
    rank_unused warning, by qualified name."""
    with _write(tmp_path / "run", 3, skip_rank=1) as run:
        (f,) = [f for f in analyze_ranks(run) if f.kind == "rank_unused"]
    assert (f.rank, f.params, f.step, f.severity) == (1, ("extra.weight",), 1, Severity.WARNING)
    assert "find_unused_parameters" in f.hint


def test_reduced_gradients_that_differ_across_ranks_are_a_desync(tmp_path):
    """A parameter whose recorded (reduced) norm differs across DDP ranks is one rank_desync
    error naming it; --rank narrows the report to one rank's findings."""
    with _write(tmp_path / "run", 3, desync=1) as run:
        findings = analyze_ranks(run)
        only = analyze_ranks(run, ranks=[2])
    (f,) = [f for f in findings if f.kind == "rank_desync"]
    assert (f.params, f.step, f.severity) == (("fc.bias",), 1, Severity.ERROR)
    assert "ranks 1, 2 against rank 0" in f.message
    assert {x.rank for x in only} <= {2}


def _write_fsdp(path, shards, *, bad=None):
    """Two FSDP2 ranks' shard norms, ``shards[rank][step]`` per parameter (numel 0 where a rank
    holds no part of it), with no check before the reduction; ``bad`` = (rank, step) makes that
    rank's first parameter NaN from that step."""
    for rank, rows in enumerate(shards):
        numel = [0 if all(s[i] is None for s in rows) else 8 for i in range(len(PARAMS))]
        params = [RunParam(p.idx, p.name, p.module, p.shape, numel[p.idx]) for p in PARAMS]
        w = RunWriter(path, params, rank=rank, meta={"world_size": 2,
                                                      "distributed": {"wrapper": "fsdp"}})
        for step, row in enumerate(rows, 1):
            norms = np.array([-1.0 if v is None else v for v in row])
            nan = bad is not None and rank == bad[0] and step >= bad[1]
            if nan:
                norms[0] = np.nan
            w.add_step(StepRecord(step, 0.0, 1.0, float("nan") if nan else 1.0, norms, norms,
                                  np.zeros(3), nonfinite=1 if nan else 0,
                                  nonfinite_params={0: 1} if nan else {}, rank=rank))
        w.close()
    return open_run(path)


def test_fsdp_shard_norms_add_up_to_each_parameter_norm(tmp_path):
    """full_grad_norms is the root of the ranks' squared shard norms per parameter and step; a
    rank's empty shard adds nothing; a DDP run has none."""
    shards = [[[3.0, 1.0, None], [6.0, 2.0, None]], [[4.0, None, 5.0], [8.0, None, 12.0]]]
    with _write_fsdp(tmp_path / "run", shards) as run:
        full = full_grad_norms(run)
    assert list(full.step) == [1, 2] and full.names == tuple(p.name for p in PARAMS)
    np.testing.assert_allclose(full.norm, [[5.0, 1.0, 5.0], [10.0, 2.0, 12.0]])
    with _write(tmp_path / "ddp", 2) as run:
        assert full_grad_norms(run) is None


def test_fsdp_without_a_check_blames_no_rank_for_a_shard_nan(tmp_path):
    """Under FSDP2 a NaN reaches only the ranks holding its elements: without the check before
    the reduce-scatter, the rank whose shard went bad is not taken for the birth rank."""
    shards = [[[3.0, 1.0, 2.0]] * 4, [[4.0, 1.0, 2.0]] * 4]
    with _write_fsdp(tmp_path / "run", shards, bad=(0, 3)) as run:
        birth = nonfinite_birth(run)
    assert (birth.step, birth.born, birth.received, birth.via) == (3, (), (0,), "reduce-scatter")
