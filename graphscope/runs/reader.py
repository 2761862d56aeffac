"""Reading a run store: ``open_run`` (one run) and ``list_runs`` (the runs under a folder).

Readers never write and never block the writer (WAL): a run can be read while training records
it, and ``Run.refresh()`` sees what has been committed since. Nothing here needs torch.

Plain data: imports sqlite3, numpy and graphscope's model and errors; never torch or textual.
"""

from __future__ import annotations

import json
import math
import sqlite3
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphscope.errors import LoadError, RunError
from graphscope.model import Graph
from graphscope.runs import schema
from graphscope.runs.records import CaptureInfo, Event, LayerSeries, ParamSeries, RunParam, Steps

_F8 = np.dtype("<f8")


def is_run(path: str | Path) -> bool:
    """Whether ``path`` is a run folder (holds ``run.sqlite``) or a run store file."""
    p = Path(path)
    return (p.is_dir() and (p / schema.FILENAME).is_file()) or (
        p.is_file() and p.suffix == ".sqlite"
    )


def open_run(path: str | Path) -> Run:
    """Open a run store for reading.

    Args:
        path: The folder given to ``watch(run=...)`` (or its ``run.sqlite``).

    Raises:
        RunError: No run there, or the store is corrupt or of another schema version.

    Example:
        >>> run = graphscope.runs.open_run("runs/exp1")  # doctest: +SKIP
        >>> run.steps().loss[-1]  # doctest: +SKIP
    """
    return Run(path)


class Run:
    """A run store opened for reading; see ``graphscope.runs.schema`` for what it holds."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        db = schema.store_path(self.path)
        if self.path.suffix == ".sqlite":
            self.path = self.path.parent
        if not db.is_file():
            what = "is not a run folder (no run.sqlite in it)" if self.path.is_dir() else "does not exist"
            raise RunError(f"{self.path} {what}; record one with graphscope.watch(model, run={str(self.path)!r})")
        try:
            # Read-only, through the URI form, so a reader can never create or change a store.
            self._con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
            self._con.execute("PRAGMA busy_timeout = 10000")
        except sqlite3.Error as e:
            raise RunError(f"cannot open the run store {db}: {e}") from None
        try:
            self.meta: dict[str, Any] = schema.check(self._con, db)
        except BaseException:
            self._con.close()
            raise
        self.db = db

    def close(self) -> None:
        self._con.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<graphscope run {str(self.path)!r}: {self.step_count()} steps>"

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            return self._con.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise RunError(f"the run store {self.db} is corrupt ({e})") from None

    # -- what was recorded ----------------------------------------------------------------------

    def ranks(self) -> list[int]:
        """The ranks that recorded steps (``[0]`` for a single-process run)."""
        return [r for (r,) in self._rows("SELECT DISTINCT rank FROM params ORDER BY rank")]

    def params(self, rank: int = 0) -> list[RunParam]:
        """The recorded parameters of ``rank``, in array order."""
        rows = self._rows(
            "SELECT idx, name, module, shape, numel, dtype, grp FROM params WHERE rank = ?"
            " ORDER BY idx", (rank,))
        return [RunParam(i, n, m, tuple(json.loads(s)), k, d, g) for i, n, m, s, k, d, g in rows]

    def step_count(self, rank: int = 0) -> int:
        return int(self._rows("SELECT count(*) FROM steps WHERE rank = ?", (rank,))[0][0])

    def last_step(self, rank: int = 0) -> tuple[int, float] | None:
        """The newest step and its wall time, or ``None`` for a run with no step yet."""
        rows = self._rows(
            "SELECT step, time FROM steps WHERE rank = ? ORDER BY step DESC LIMIT 1", (rank,))
        return (int(rows[0][0]), float(rows[0][1])) if rows else None

    def steps(self, rank: int = 0, *, since: int = 0) -> Steps:
        """The per-step columns (steps after ``since``)."""
        rows = self._rows(
            "SELECT step, time, loss, loss_nonfinite, grad_norm, nonfinite, accumulating, lr,"
            " loss_scale FROM steps WHERE rank = ? AND step > ? ORDER BY step", (rank, since))
        lrs = [json.loads(r[7]) for r in rows]
        nan = math.nan

        def col(i: int, dtype: Any = float) -> np.ndarray:
            return np.array([nan if r[i] is None else r[i] for r in rows], dtype=dtype)

        return Steps(
            step=np.array([r[0] for r in rows], dtype=np.int64),
            time=col(1),
            loss=col(2),
            loss_nonfinite=np.array([r[3] for r in rows], dtype=bool),
            grad_norm=col(4),
            nonfinite=np.array([r[5] for r in rows], dtype=np.int64),
            accumulating=np.array([r[6] for r in rows], dtype=np.int64),
            lr=np.array([lr[0] if lr else nan for lr in lrs], dtype=float),
            lrs=lrs,
            loss_scale=col(8),
        )

    def param_series(self, rank: int = 0, *, since: int = 0) -> ParamSeries:
        """Every parameter's gradient numbers over the recorded steps (after ``since``)."""
        p = len(self.params(rank))
        rows = self._rows(
            "SELECT step_lo, step_hi, n, data FROM param_stats WHERE rank = ? AND step_hi > ?"
            " ORDER BY step_lo", (rank, since))
        k = len(rows)
        exact = np.full((k, 3, 3, p), np.nan)  # row, (min, max, mean), (norm, absmax, zero), param
        for i, (_, _, n, data) in enumerate(rows):
            a = np.frombuffer(data, dtype=_F8)
            if n == 1 and a.size == 3 * p:
                exact[i] = a.reshape(1, 3, p)
            elif a.size == 9 * p:
                exact[i] = a.reshape(3, 3, p)
            else:
                raise RunError(f"the run store {self.db} is corrupt (a stats row of {a.size} values for {p} parameters)")
        present = ~(exact[:, 2, 0] < 0)  # NO_GRAD is -1; NaN compares False: present
        exact[exact < 0] = np.nan
        return ParamSeries(
            lo=np.array([r[0] for r in rows], dtype=np.int64),
            hi=np.array([r[1] for r in rows], dtype=np.int64),
            n=np.array([r[2] for r in rows], dtype=np.int64),
            norm=exact[:, 2, 0], absmax=exact[:, 2, 1], zero_frac=exact[:, 2, 2],
            norm_min=exact[:, 0, 0], norm_max=exact[:, 1, 0], absmax_max=exact[:, 1, 1],
            zero_frac_min=exact[:, 0, 2], zero_frac_max=exact[:, 1, 2], present=present,
        )

    def layer_series(self, rank: int = 0, *, since: int = 0) -> LayerSeries:
        """Gradient RMS per layer (the parameters' owning module) over the recorded steps."""
        return layer_series(self.params(rank), self.param_series(rank, since=since))

    def nonfinite(self, rank: int = 0) -> dict[int, dict[int, int]]:
        """Step -> {parameter index -> NaN/Inf element count}, for steps that had any."""
        out: dict[int, dict[int, int]] = {}
        for step, param, count in self._rows(
                "SELECT step, param, count FROM nonfinite WHERE rank = ? ORDER BY step", (rank,)):
            out.setdefault(int(step), {})[int(param)] = int(count)
        return out

    def updates(self, rank: int = 0) -> dict[int, np.ndarray]:
        """Step -> update-to-weight ratio per parameter (NaN where not measured)."""
        return {int(s): np.frombuffer(d, dtype=_F8).copy() for s, d in self._rows(
            "SELECT step, data FROM updates WHERE rank = ? ORDER BY step", (rank,))}

    def events(self, rank: int | None = None) -> list[Event]:
        sql = "SELECT rank, step, kind, detail FROM events"
        rows = self._rows(sql + " ORDER BY step, rank") if rank is None else self._rows(
            sql + " WHERE rank = ? ORDER BY step", (rank,))
        return [Event(int(s), k, json.loads(d), int(r)) for r, s, k, d in rows]

    def captures(self, rank: int | None = 0) -> list[CaptureInfo]:
        """The full captures kept, oldest first (every rank's with ``rank=None``)."""
        sql = "SELECT rank, step, reason, severity, findings, summary FROM captures"
        rows = self._rows(sql + " ORDER BY step, rank") if rank is None else self._rows(
            sql + " WHERE rank = ? ORDER BY step", (rank,))
        return [CaptureInfo(int(s), reason, sev, int(n), int(r), tuple(json.loads(summary)))
                for r, s, reason, sev, n, summary in rows]

    def capture(self, step: int, rank: int = 0) -> Graph:
        """The full capture of ``step``, as a ``Graph``.

        Raises:
            RunError: No capture was kept for that step (the message lists the nearest).
        """
        rows = self._rows("SELECT data FROM captures WHERE rank = ? AND step = ?", (rank, step))
        if not rows:
            kept = [c.step for c in self.captures(rank)]
            near = sorted(kept, key=lambda s: abs(s - step))[:3]
            raise RunError(
                f"the run {self.path} has no capture of step {step}"
                + (f"; captures near it: steps {', '.join(map(str, sorted(near)))}" if near
                   else "; it has no captures (watch(..., every=N) takes one every N steps)")
            )
        try:
            return Graph.from_dict(json.loads(zlib.decompress(rows[0][0]).decode("utf-8")))
        except (zlib.error, UnicodeDecodeError, ValueError, LoadError) as e:
            raise RunError(f"the capture of step {step} in {self.db} is corrupt ({e})") from None


def layer_series(params: list[RunParam], series: ParamSeries) -> LayerSeries:
    """Per-layer RMS from per-parameter norms: sqrt(sum of squared norms / sum of sizes)."""
    names = list(dict.fromkeys(p.module for p in params))
    index = {n: i for i, n in enumerate(names)}
    member = np.zeros((len(params), len(names)))
    for p in params:
        member[p.idx, index[p.module]] = 1.0
    numel = np.array([max(p.numel, 1) for p in params], dtype=float)

    got = series.present

    def rms(norm: np.ndarray) -> np.ndarray:
        sq = np.where(got, norm, 0.0) ** 2
        size = got * numel
        with np.errstate(invalid="ignore", divide="ignore"):
            out = np.sqrt((sq @ member) / (size @ member))
        # A NaN gradient (as opposed to none) makes its layer NaN, not the others' mean.
        return np.where((size @ member) > 0, out, np.nan)

    return LayerSeries(names, series.lo, series.hi, series.n,
                       rms(series.norm), rms(series.norm_min), rms(series.norm_max),
                       (got * 1.0) @ member > 0)


@dataclass(frozen=True)
class RunSummary:
    """One line of ``graphscope runs``: a run's path, size and state."""

    path: Path
    steps: int
    last_step: int | None
    last_time: float | None
    captures: int
    ranks: int
    error: str | None = None  # why it could not be read, for a broken store


def list_runs(folder: str | Path) -> list[RunSummary]:
    """The runs in ``folder`` (the folder itself, its sub-folders, and theirs), by path.

    A store that cannot be read is listed with its ``error`` instead of stopping the listing.
    """
    root = Path(folder)
    if not root.is_dir():
        raise RunError(f"{root} is not a folder; give the folder that holds your runs (e.g. runs/)")
    found = sorted({db.parent for db in root.rglob(schema.FILENAME)})
    out = []
    for path in found:
        try:
            with Run(path) as run:
                last = run.last_step()
                out.append(RunSummary(
                    path, run.step_count(), last[0] if last else None, last[1] if last else None,
                    len(run.captures(None)), len(run.ranks())))
        except RunError as e:
            out.append(RunSummary(path, 0, None, None, 0, 0, error=str(e)))
    return out
