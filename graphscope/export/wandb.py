"""A run store as an offline Weights & Biases run: ``graphscope export RUN --wandb DIR``.

``to_wandb(run, folder)`` writes the run's numbers (``export.metrics``: loss, gradient norm
and per-layer gradient RMS, update ratios, learning rates, loss scale) as a W&B history, one
row per recorded step at the run's own step number and wall time (the store's ``steps.time``
as the row's ``_timestamp``, which W&B's charts use for their wall-time axis, as its own
TensorBoard import does; ``_runtime`` W&B computes itself, from the export's start), a histogram per step of the parameters' log10 gradient RMS, and the
findings over time as a table (``findings``, logged at the last step: W&B steps only go
forward) and in the run's summary. Always offline (``mode="offline"``,
nothing leaves the machine): ``wandb sync DIR/wandb/offline-run-*`` uploads it when you want.

Imports the run store, ``export.metrics`` and (lazily, when writing) ``wandb``; never torch or
textual.
"""

from __future__ import annotations

import os
from pathlib import Path

from graphscope.export.metrics import HISTOGRAM, run_metrics
from graphscope.runs import Run


def to_wandb(run: Run, folder: str | Path, *, rank: int = 0, project: str = "graphscope",
             name: str | None = None) -> Path:
    """Write one rank of ``run`` as an offline W&B run under ``folder`` (created if missing).

    Args:
        run: An open run store (``graphscope.runs.open_run``).
        folder: Where W&B puts its ``wandb/offline-run-*`` folder.
        rank: Which process's steps to write.
        project: The W&B project the run is synced into later.
        name: The W&B run's name (the run folder's name when ``None``).

    Returns:
        The offline run's folder (``folder/wandb/offline-run-...``).

    Raises:
        ImportError: The ``wandb`` package is not installed.

    Example:
        >>> with open_run("runs/exp1") as run:  # doctest: +SKIP
        ...     to_wandb(run, "wandb-export")
    """
    try:
        import wandb
    except ImportError as e:
        raise ImportError(
            f"exporting to W&B needs the wandb package: pip install 'graphscope[wandb]' "
            f"(or pip install wandb); {e}"
        ) from e
    metrics = run_metrics(run, rank=rank)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[int, dict[str, object]] = {}
    for tag, points in metrics.scalars.items():
        for step, _, value in points:
            rows.setdefault(step, {})[tag] = value
    for step, _, values in metrics.histograms:
        rows.setdefault(step, {})[HISTOGRAM] = wandb.Histogram(values.tolist())
    if metrics.findings:
        last = max(rows) if rows else metrics.findings[-1][0]
        rows.setdefault(last, {})["findings"] = wandb.Table(
            columns=["step", "finding"], data=[[s, text] for s, text in metrics.findings])
    for step, row in rows.items():
        if step in metrics.wall:
            row["_timestamp"] = metrics.wall[step]  # else wandb stamps the time of the export
    config = {k: run.meta.get(k) for k in ("model", "every", "graphscope_version", "created")}
    config["graphscope_run"] = str(run.path)
    # Offline whatever the environment says: an export never talks to a server.
    saved = os.environ.get("WANDB_MODE")
    os.environ["WANDB_MODE"] = "offline"
    try:
        # No console capture, code, git or system metrics: the run's numbers only.
        settings = wandb.Settings(silent=True, console="off", save_code=False, disable_git=True,
                                  x_disable_stats=True, x_disable_meta=True)
        wb = wandb.init(mode="offline", dir=str(out), project=project, settings=settings,
                        name=name or run.path.name, config=config, reinit="create_new")
        try:
            for step in sorted(rows):
                wb.log(rows[step], step=step)
            if metrics.findings:
                wb.summary["findings"] = [text for _, text in metrics.findings]
            folder_written = Path(wb.dir).parent
        finally:
            wb.finish()
    finally:
        if saved is None:
            os.environ.pop("WANDB_MODE", None)
        else:
            os.environ["WANDB_MODE"] = saved
    return folder_written
