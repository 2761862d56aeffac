"""The run store without torch: what the writer stores is what the reader reads, decimation keeps
extremes, readers see a live writer, and broken or foreign stores get a clear error."""

from __future__ import annotations

import json
import math
import sqlite3
import warnings

import numpy as np
import pytest

from graphscope.errors import RecordingWarning, RunError
from graphscope.runs import NO_GRAD, RunParam, RunWriter, StepRecord, is_run, list_runs, open_run
from graphscope.runs import schema
from tests.graphs import mlp, nan_origin

P = 4
PARAMS = [RunParam(i, f"layer{i // 2}.{'weight' if i % 2 == 0 else 'bias'}", f"layer{i // 2}",
                   (3, 2) if i % 2 == 0 else (3,), 6 if i % 2 == 0 else 3) for i in range(P)]


def _rec(step: int, norms, *, loss: float | None = 1.0, absmax=None, zero=None, **kw) -> StepRecord:
    norms = np.asarray(norms, dtype=float)
    total = math.nan if np.isnan(norms).any() else float(np.sqrt((norms[norms >= 0] ** 2).sum()))
    return StepRecord(step, 1000.0 + step, loss, total,
                      norms, norms / 2 if absmax is None else np.asarray(absmax, dtype=float),
                      np.zeros(P) if zero is None else np.asarray(zero, dtype=float), **kw)


def _write(path, records, **kw) -> None:
    w = RunWriter(path, PARAMS, meta={"model": "Test"}, **kw)
    for r in records:
        w.add_step(r)
    w.close()


def test_steps_round_trip(tmp_path):
    """Every stored number reads back as written: NaN loss, missing gradient, lrs, NaN counts."""
    _write(tmp_path / "run", [
        _rec(1, [1.0, 2.0, 3.0, 4.0], lr=[0.1, 0.01], accumulating=2),
        _rec(2, [0.5, NO_GRAD, 3.5, 4.5], loss=math.inf, zero=[0.25, NO_GRAD, 0, 1]),
        _rec(3, [math.nan, 1.0, 1.0, 1.0], loss=math.nan, nonfinite=5, nonfinite_params={0: 5}),
    ])
    run = open_run(tmp_path / "run")
    assert [p.name for p in run.params()] == [p.name for p in PARAMS]
    assert run.params()[0].shape == (3, 2)
    st = run.steps()
    assert st.step.tolist() == [1, 2, 3]
    assert st.loss[0] == 1.0 and st.loss[1] == math.inf and math.isnan(st.loss[2])
    assert st.loss_nonfinite.tolist() == [False, True, True]
    assert st.lrs[0] == [0.1, 0.01] and st.lr[0] == 0.1 and math.isnan(st.lr[1])
    assert st.accumulating.tolist() == [2, 0, 0]
    assert st.nonfinite.tolist() == [0, 0, 5] and math.isnan(st.grad_norm[2])
    ps = run.param_series()
    assert ps.norm[0].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert ps.absmax[0].tolist() == [0.5, 1.0, 1.5, 2.0]
    assert ps.present[1].tolist() == [True, False, True, True] and math.isnan(ps.norm[1, 1])
    assert ps.zero_frac[1, 0] == 0.25 and ps.zero_frac[1, 3] == 1.0
    assert ps.present[2, 0] and math.isnan(ps.norm[2, 0])  # a NaN gradient, not a missing one
    assert run.nonfinite() == {3: {0: 5}}


def test_layer_rms_combines_weight_and_bias(tmp_path):
    """A layer's RMS is sqrt(sum of squared norms / elements) over its parameters."""
    _write(tmp_path / "run", [_rec(1, [3.0, 4.0, 1.0, NO_GRAD])])
    layers = open_run(tmp_path / "run").layer_series()
    assert layers.names == ["layer0", "layer1"]
    assert layers.rms[0, 0] == pytest.approx(math.sqrt((9 + 16) / 9))
    assert layers.rms[0, 1] == pytest.approx(1 / math.sqrt(6))  # the bias got no gradient


def test_old_steps_are_decimated_keeping_extremes(tmp_path):
    """Beyond the window, steps merge bucket by bucket; a spike survives as the bucket's max."""
    records = [_rec(s, [1.0 + s % 3, 1.0, 1.0, 1.0]) for s in range(1, 201)]
    records[9] = _rec(10, [1e6, 1.0, 1.0, 1e-9])
    _write(tmp_path / "run", records, window=64, bucket=8)
    ps = open_run(tmp_path / "run").param_series()
    assert ps.n.sum() == 200 and (ps.n == 1).sum() >= 64
    assert len(ps) <= 64 + (200 - 64) // 8 + 8
    row = ps.row_of(10)
    assert ps.n[row] == 8 and ps.lo[row] <= 10 <= ps.hi[row]
    assert ps.norm_max[row, 0] == 1e6 and ps.norm_min[row, 0] == 1.0
    assert ps.norm_min[row, 3] == 1e-9
    assert open_run(tmp_path / "run").steps().step.tolist() == list(range(1, 201))


def test_a_reader_sees_what_a_live_writer_commits(tmp_path):
    """A run opened while training writes it shows the steps committed since (follow mode)."""
    w = RunWriter(tmp_path / "run", PARAMS)
    w.add_step(_rec(1, [1, 1, 1, 1]))
    w.flush()
    run = open_run(tmp_path / "run")
    assert len(run.steps()) == 1
    for s in (2, 3):
        w.add_step(_rec(s, [s, 1, 1, 1]))
    w.flush()
    assert run.steps(since=1).step.tolist() == [2, 3]
    assert run.param_series(since=1).norm[:, 0].tolist() == [2.0, 3.0]
    w.close()


def test_captures_are_kept_with_the_last_healthy_one_before_an_anomaly(tmp_path):
    """Regular captures are bounded; an anomaly's capture keeps the healthy one before it."""
    healthy, broken = mlp(), nan_origin()
    w = RunWriter(tmp_path / "run", PARAMS, keep_captures=2)
    for s in (1, 11, 21, 31):
        w.add_capture(s, healthy, "every")
    w.add_capture(35, broken, "nonfinite")
    w.add_capture(41, healthy, "every")
    w.add_capture(51, healthy, "every")
    w.close()
    run = open_run(tmp_path / "run")
    kept = {c.step: c.reason for c in run.captures()}
    assert kept == {31: "before_anomaly", 35: "nonfinite", 41: "every", 51: "every"}
    g = run.capture(35)
    assert len(g.nodes) == len(broken.nodes) and g.findings == broken.findings
    with pytest.raises(RunError, match="no capture of step 36.*35"):
        run.capture(36)


def test_resuming_continues_steps_and_refuses_another_model(tmp_path):
    """A second writer on the same model's run continues after its last step; another model's
    parameters are refused with a message that says to use a new folder."""
    _write(tmp_path / "run", [_rec(s, [1, 1, 1, 1]) for s in (1, 2, 3)])
    assert RunWriter(tmp_path / "run", PARAMS).first_step == 4
    other = [RunParam(0, "fc.weight", "fc", (2, 2), 4)]
    with pytest.raises(RunError, match="other parameters.*new folder"):
        RunWriter(tmp_path / "run", other)


def test_a_write_failure_warns_once_and_training_goes_on(tmp_path):
    """A record the store cannot take stops recording with one RecordingWarning, not a crash."""
    w = RunWriter(tmp_path / "run", PARAMS)
    bad = _rec(1, [1, 1, 1, 1])
    bad.norms = np.ones(3)
    w.add_step(bad)
    w.flush()
    with pytest.warns(RecordingWarning, match="stopped recording"):
        w.add_step(_rec(2, [1, 1, 1, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w.add_step(_rec(3, [1, 1, 1, 1]))  # said once
        w.close()
    assert w.failed is not None


def test_missing_foreign_corrupt_and_other_version_stores(tmp_path):
    """Each broken store gets a one-line RunError saying what it is and what to do."""
    with pytest.raises(RunError, match="does not exist"):
        open_run(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a run folder"):
        open_run(tmp_path / "empty")
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "run.sqlite").write_bytes(b"PNG\x89 not a database at all" * 100)
    with pytest.raises(RunError, match="corrupt|not a readable"):
        open_run(junk)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    con = sqlite3.connect(foreign / "run.sqlite")
    con.execute("CREATE TABLE meta (key TEXT, value TEXT)")
    con.commit()
    con.close()
    with pytest.raises(RunError, match="not a graphscope run store"):
        open_run(foreign)
    for version, words in ((0, "record the run again"), (99, "upgrade graphscope")):
        _write(tmp_path / f"v{version}", [_rec(1, [1, 1, 1, 1])])
        con = sqlite3.connect(tmp_path / f"v{version}" / "run.sqlite")
        con.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (json.dumps(version),))
        con.commit()
        con.close()
        with pytest.raises(RunError, match=f"schema version {version}.*{words}"):
            open_run(tmp_path / f"v{version}")
        with pytest.raises(RunError, match=f"schema version {version}"):
            RunWriter(tmp_path / f"v{version}", PARAMS)


def test_list_runs_finds_runs_and_reports_broken_ones(tmp_path):
    """``list_runs`` lists every run under a folder with its steps; a broken one has its error."""
    _write(tmp_path / "a", [_rec(s, [1, 1, 1, 1]) for s in (1, 2)])
    _write(tmp_path / "nested" / "b", [_rec(1, [1, 1, 1, 1])])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "run.sqlite").write_bytes(b"garbage" * 1000)
    runs = {r.path.name: r for r in list_runs(tmp_path)}
    assert runs["a"].steps == 2 and runs["a"].last_step == 2 and runs["b"].steps == 1
    assert runs["c"].error and runs["c"].steps == 0
    assert is_run(tmp_path / "a") and not is_run(tmp_path / "nested")
    assert schema.SCHEMA_VERSION == 1
