"""A run store as TensorBoard event files: ``graphscope export RUN --tensorboard DIR``.

``to_tensorboard(run, logdir)`` writes the run's numbers (``export.metrics``: loss, gradient
norm and per-layer gradient RMS, update ratios, learning rates, loss scale) as scalars, a
histogram per step of the parameters' log10 gradient RMS, and the findings over time as text,
at the run's own step numbers and wall times, with the ``tensorboard`` package's event writer
and summary protos (no TensorFlow, no torch). Point TensorBoard at a folder holding it and your
other logs, and the curves sit side by side.

Imports the run store, ``export.metrics`` and (lazily, when writing) ``tensorboard``; never
torch or textual.
"""

from __future__ import annotations

from pathlib import Path

from graphscope.export.metrics import HISTOGRAM, run_metrics
from graphscope.runs import Run


def _tensorboard():
    try:
        from tensorboard.compat.proto import event_pb2
        from tensorboard.plugins.histogram.summary_v2 import histogram_pb
        from tensorboard.plugins.scalar.summary_v2 import scalar_pb
        from tensorboard.plugins.text.summary_v2 import text_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as e:
        raise ImportError(
            f"exporting to TensorBoard needs the tensorboard package: pip install "
            f"'graphscope[tensorboard]' (or pip install tensorboard); {e}"
        ) from e
    return event_pb2, EventFileWriter, scalar_pb, histogram_pb, text_pb


def to_tensorboard(run: Run, logdir: str | Path, *, rank: int = 0) -> Path:
    """Write one rank of ``run`` into ``logdir`` (created if missing) as TensorBoard events.

    Args:
        run: An open run store (``graphscope.runs.open_run``).
        logdir: The folder for the event file (one new file per export).
        rank: Which process's steps to write.

    Returns:
        ``logdir``, which now holds a new ``events.out.tfevents.*.graphscope`` file.

    Raises:
        ImportError: The ``tensorboard`` package is not installed.

    Example:
        >>> with open_run("runs/exp1") as run:  # doctest: +SKIP
        ...     to_tensorboard(run, "tb/exp1")
    """
    event_pb2, EventFileWriter, scalar_pb, histogram_pb, text_pb = _tensorboard()
    metrics = run_metrics(run, rank=rank)
    out = Path(logdir)
    out.mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(out), filename_suffix=".graphscope")
    try:
        def write(step: int, wall: float, summary) -> None:
            writer.add_event(event_pb2.Event(step=step, wall_time=wall, summary=summary))

        for tag, points in metrics.scalars.items():
            for step, wall, value in points:
                write(step, wall, scalar_pb(tag, value))
        for step, wall, values in metrics.histograms:
            write(step, wall, histogram_pb(HISTOGRAM, values))
        # One text per step: TensorBoard shows one value of a tag per step.
        by_step: dict[int, list[str]] = {}
        for step, text in metrics.findings:
            by_step.setdefault(step, []).append(text)
        for step, texts in by_step.items():
            write(step, metrics.wall.get(step, 0.0), text_pb("findings", "\n\n".join(texts)))
    finally:
        writer.close()
    return out
