"""The run store: every step of a watched training run, in one SQLite database per run.

``watch(model, run="runs/exp1")`` writes it (through ``RunWriter``, from the capture layer); the
inspector, ``graphscope runs``/``report``/``render`` and your own code read it (``open_run``).
The schema is documented in ``graphscope.runs.schema``. Plain data like the model: no torch,
no textual.
"""

from graphscope.runs.reader import Run, RunSummary, is_run, list_runs, open_run
from graphscope.runs.records import (
    NO_GRAD,
    CaptureInfo,
    Event,
    LayerSeries,
    ParamSeries,
    RunParam,
    Steps,
    StepRecord,
)
from graphscope.runs.schema import SCHEMA_VERSION
from graphscope.runs.writer import RunWriter

__all__ = [
    "NO_GRAD",
    "SCHEMA_VERSION",
    "CaptureInfo",
    "Event",
    "LayerSeries",
    "ParamSeries",
    "Run",
    "RunParam",
    "RunSummary",
    "RunWriter",
    "StepRecord",
    "Steps",
    "is_run",
    "list_runs",
    "open_run",
]
