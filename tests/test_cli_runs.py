"""The command line on run folders: ``runs``, ``report`` (its exit status gates a pipeline),
``render RUN`` (the timeline picture, or one step's capture) and ``view RUN`` without a terminal.
Runs are written with the store's writer: no torch needed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from graphscope.cli import EXIT_FINDINGS, EXIT_USAGE, main
from graphscope.runs import RunParam, RunWriter, StepRecord
from tests.graphs import mlp, nan_origin

PARAMS = [RunParam(0, "fc.weight", "fc", (4, 4), 16), RunParam(1, "fc.bias", "fc", (4,), 4),
          RunParam(2, "out.weight", "out", (1, 4), 4)]


def _run(path, *, diverge: bool) -> None:
    w = RunWriter(path, PARAMS, meta={"model": "Tiny"})
    for s in range(1, 31):
        g = 3.0 ** (s - 20) if diverge and s >= 20 else 1.0
        g = math.nan if diverge and s >= 28 else g
        loss = math.nan if diverge and s >= 28 else (1.0 / s if not diverge or s < 20 else 10.0 * g)
        norms = np.array([g, g / 2, g])
        w.add_step(StepRecord(s, 1e9 + s, loss, float(np.sqrt((norms ** 2).sum())), norms,
                              norms, np.zeros(3), lr=[0.1],
                              nonfinite=3 if math.isnan(g) else 0,
                              nonfinite_params={0: 1, 1: 1, 2: 1} if math.isnan(g) else {}))
    w.add_capture(1, mlp(), "every")
    if diverge:
        w.add_capture(28, nan_origin(), "nonfinite")
    w.close()


@pytest.fixture
def runs(tmp_path):
    _run(tmp_path / "runs" / "good", diverge=False)
    _run(tmp_path / "runs" / "bad", diverge=True)
    return tmp_path / "runs"


def test_runs_lists_each_run_with_steps_and_worst_finding(runs, capsys):
    """`graphscope runs DIR --json` lists every run's path and steps; the table names the worst."""
    assert main(["runs", str(runs), "--json"]) == 0
    rows = {r["path"].rsplit("/", 1)[1]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["good"]["steps"] == 30 and rows["bad"]["steps"] == 30
    assert rows["good"]["worst"] is None and rows["bad"]["worst"] == "error"
    assert main(["runs", str(runs)]) == 0
    table = capsys.readouterr().out
    assert "bad" in table and "error: nonfinite from step 28" in table


def test_report_gates_on_warnings_and_says_when_the_loss_went_non_finite(runs, capsys):
    """`report` exits 4 for a run with warnings, 0 for a healthy one; --json has each finding's
    kind, severity and first step, and the first non-finite loss step."""
    assert main(["report", str(runs / "good")]) == 0
    assert "no findings" in capsys.readouterr().out
    assert main(["report", str(runs / "bad"), "--json"]) == EXIT_FINDINGS
    data = json.loads(capsys.readouterr().out)
    assert data["first_nonfinite_loss_step"] == 28 and data["steps"] == 30
    kinds = {f["kind"]: f for f in data["findings"]}
    assert kinds["nonfinite"]["step"] == 28 and kinds["nonfinite"]["severity"] == "error"
    assert kinds["divergence"]["step"] < 26
    assert main(["report", str(runs / "bad")]) == EXIT_FINDINGS
    text = capsys.readouterr().out
    assert "non-finite from step 28" in text and "hint:" in text


def test_render_draws_the_timeline_or_one_steps_capture(runs, tmp_path, capsys):
    """`render RUN -o x.png` writes a PNG timeline; `--step N` draws that step's capture; a step
    without a capture names the nearest ones."""
    out = tmp_path / "timeline.png"
    assert main(["render", str(runs / "bad"), "-o", str(out), "-q"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    svg = tmp_path / "step.svg"
    assert main(["render", str(runs / "bad"), "--step", "1", "-o", str(svg), "-q"]) == 0
    assert "<svg" in svg.read_text() and "fc1.weight" in svg.read_text()
    assert main(["render", str(runs / "bad"), "--step", "5", "-o", str(svg)]) == EXIT_USAGE
    assert "captures near it: steps 1, 28" in capsys.readouterr().err
    assert main(["render", str(runs / "bad"), "-o", str(tmp_path / "t.dot")]) == EXIT_USAGE
    assert "--step" in capsys.readouterr().err


def test_bad_run_paths_and_options_fail_in_one_line(runs, tmp_path, capsys):
    """A missing run, --follow on a capture file, --step on a capture file: exit 2, one line."""
    assert main(["report", str(tmp_path / "nope")]) == EXIT_USAGE
    assert "does not exist" in capsys.readouterr().err
    capture = tmp_path / "g.json"
    mlp().save(capture)
    assert main(["view", str(capture), "--follow"]) == EXIT_USAGE
    assert "--follow watches a run folder" in capsys.readouterr().err
    assert main(["render", str(capture), "--step", "2"]) == EXIT_USAGE
    assert "single capture" in capsys.readouterr().err
    assert main(["view", str(runs / "good")]) == EXIT_USAGE  # no terminal under pytest
    err = capsys.readouterr().err
    assert "needs a terminal" in err and "graphscope report" in err
