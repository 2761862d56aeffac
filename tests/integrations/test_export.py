"""graphscope export RUN --tensorboard/--wandb, read back with each tool's own files."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from graphscope.cli import main
from graphscope.runs import RunParam, RunWriter, StepRecord, open_run
from graphscope.trends import analyze
from tests.tui.runs import LAYERS, diverging_run, rms_at


def _tensorboard_events(logdir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"tensors": 0})
    acc.Reload()
    return acc


def _scalars(acc, tag: str) -> dict[int, float]:
    from tensorboard.util import tensor_util

    return {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)}


@pytest.fixture
def diverging(tmp_path):
    return diverging_run(tmp_path / "run", steps=80, diverge=40, every=20)


def test_tensorboard_scalars_histograms_and_findings(diverging, tmp_path):
    """The export's event files hold every step's per-layer RMS, loss, update ratios, a
    histogram per step and the findings at the step each started, as the store has them,
    each event at the wall time its step was recorded at."""
    pytest.importorskip("tensorboard")
    assert main(["export", str(diverging), "--tensorboard", str(tmp_path / "tb"), "-q"]) == 0
    acc = _tensorboard_events(tmp_path / "tb")
    for j, layer in enumerate(LAYERS):
        rms = _scalars(acc, f"grad_rms/{layer}")
        finite = [s for s in range(1, 81) if s < 76 and not (s == 40 and layer == "head")]
        assert sorted(rms) == finite  # NaN steps and a step without a gradient are gaps
        for step, value in rms.items():
            assert value == pytest.approx(rms_at(step, j, diverge=40), rel=1e-6)
    with open_run(diverging) as run:
        steps = run.steps()
        updates = run.updates()
        findings = analyze(run)
    loss = _scalars(acc, "loss")
    assert loss == pytest.approx({int(s): float(v) for s, v in zip(steps.step, steps.loss) if math.isfinite(v)}, rel=1e-6)
    ratio = _scalars(acc, "update_ratio/fc0.weight")
    assert ratio == pytest.approx({s: float(r[2]) for s, r in updates.items()}, rel=1e-6)
    histograms = acc.Tensors("grad_rms/log10_params")
    assert [e.step for e in histograms] == list(range(1, 76))
    texts = {e.step: e.tensor_proto.string_val[0].decode() for e in acc.Tensors("findings")}
    assert findings and {f.step for f in findings} <= set(texts)
    for f in findings:
        assert f.message in texts[f.step]
    assert any("divergence" in t for t in texts.values())
    wall = dict(zip(steps.step.tolist(), steps.time.tolist()))
    assert len(set(wall.values())) == len(wall)
    for tag in ("loss", "grad_rms/fc1", "grad_rms/log10_params", "findings", "update_ratio/fc0.weight"):
        events = acc.Tensors(tag)
        assert events and all(e.wall_time == wall[e.step] for e in events), tag


def test_loss_scale_divided_out(tmp_path):
    """A GradScaler-scaled run exports the model's loss and true gradient RMS, and the scale."""
    pytest.importorskip("tensorboard")
    ps = [RunParam(0, "fc.weight", "fc", (4, 4), 16)]
    w = RunWriter(tmp_path / "run", ps)
    for step, scale in ((1, 65536.0), (2, 32768.0)):
        w.add_step(StepRecord(step=step, time=10.0 + step, loss=0.5 * scale, grad_norm=4.0 * scale,
                              norms=np.array([4.0 * scale]), absmax=np.array([1.0 * scale]),
                              zero_frac=np.array([0.0]), loss_scale=scale))
    w.close()
    assert main(["export", str(tmp_path / "run"), "--tensorboard", str(tmp_path / "tb"), "-q"]) == 0
    acc = _tensorboard_events(tmp_path / "tb")
    assert _scalars(acc, "loss") == {1: 0.5, 2: 0.5}
    assert _scalars(acc, "grad_rms/fc") == {1: 1.0, 2: 1.0}  # 4 / sqrt(16)
    assert _scalars(acc, "loss_scale") == {1: 65536.0, 2: 32768.0}


def test_decimated_stretches_are_one_point_each(tmp_path):
    """Old steps the store merged come out as one point per stretch, at its first step."""
    pytest.importorskip("tensorboard")
    run = diverging_run(tmp_path / "run", steps=200, diverge=500, nan_at=1000, every=1000,
                        window=64, bucket=32)
    assert main(["export", str(run), "--tensorboard", str(tmp_path / "tb"), "-q"]) == 0
    rms = _scalars(_tensorboard_events(tmp_path / "tb"), "grad_rms/fc0")
    with open_run(run) as r:
        series = r.layer_series()
    assert sorted(rms) == series.lo.tolist()
    assert series.n.max() == 32 and len(rms) < 200


def test_wandb_offline_run_read_back(diverging, tmp_path, monkeypatch):
    """The offline W&B run's history holds every step's numbers at the store's step numbers
    and wall times (``_timestamp``), and the findings table; WANDB_MODE is offline while
    writing and restored after."""
    pytest.importorskip("wandb")
    from tests.integrations.wandb_files import history, records

    monkeypatch.setenv("WANDB_MODE", "online")  # the export must go offline anyway
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert main(["export", str(diverging), "--wandb", str(tmp_path / "wb"), "-q"]) == 0
    assert os.environ["WANDB_MODE"] == "online"
    rows = history(tmp_path / "wb")
    assert sorted(rows) == list(range(1, 81))
    for step in (1, 30, 60, 75):
        assert rows[step]["grad_rms/fc1"] == pytest.approx(rms_at(step, 2, diverge=40), rel=1e-6)
        assert rows[step]["grad_rms/log10_params/_type"] == "histogram"
    assert "grad_rms/fc1" not in rows[78]  # NaN: no point
    assert rows[20]["update_ratio/fc0.weight"] == pytest.approx(3e-3)
    assert rows[80]["findings/_type"] == "table-file"
    with open_run(diverging) as run:
        steps = run.steps()
    assert {s: row["_timestamp"] for s, row in rows.items()} == dict(
        zip(steps.step.tolist(), steps.time.tolist()))
    (path,) = (tmp_path / "wb").glob("wandb/offline-run-*/run-*.wandb")
    kinds = {r.WhichOneof("record_type") for r in records(path)}
    assert {"run", "history", "exit"} <= kinds


def test_export_needs_a_target_and_a_run(tmp_path, capsys):
    """Without --tensorboard/--wandb, or on a folder that is no run, it says so (exit 2)."""
    run = diverging_run(tmp_path / "run", steps=5, every=100)
    assert main(["export", str(run)]) == 2
    assert "--tensorboard DIR" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--tensorboard", str(tmp_path / "tb")]) == 2


def test_missing_package_names_the_extra(tmp_path, monkeypatch, capsys):
    """Without the tensorboard package the export says which extra to install (exit 2)."""
    run = diverging_run(tmp_path / "run", steps=5, every=100)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.setitem(sys.modules, "tensorboard.compat.proto", None)
    assert main(["export", str(run), "--tensorboard", str(tmp_path / "tb")]) == 2
    assert "graphscope[tensorboard]" in capsys.readouterr().err
