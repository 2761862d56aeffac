"""The run store's one writer: takes step records on the training thread, writes them on its own.

``add_step``/``add_capture``/``add_event``/``add_updates`` only put the record on a queue; a
background thread owns the SQLite connection, writes whatever has queued up in one transaction
and commits, so the training thread never waits on the disk and every step is committed within
about one step of being recorded. A killed process loses at most the records still queued.
Old steps are decimated (their min, max and mean kept) so that a long run stays bounded:
``window`` steps are kept exactly, older ones are merged ``bucket`` at a time. Full captures
taken every ``every`` steps are kept up to ``keep_captures`` (the newest); anomaly captures and
the last healthy capture before each anomaly are always kept.

A failure to write (disk full, store removed) never stops training: it is reported once, as a
``RecordingWarning`` on the next call from the training thread, and recording stops.

Plain data: imports sqlite3, numpy and graphscope's model and errors; never torch or textual.
"""

from __future__ import annotations

import json
import queue
import sqlite3
import threading
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from graphscope.errors import RecordingWarning, RunError
from graphscope.model import Graph
from graphscope.runs import schema
from graphscope.runs.records import NO_GRAD, RunParam, StepRecord

_F8 = np.dtype("<f8")


@dataclass
class _Capture:
    step: int
    reason: str
    graph: Graph
    rank: int


@dataclass
class _Updates:
    step: int
    ratios: np.ndarray
    rank: int


@dataclass
class _Event:
    step: int
    kind: str
    detail: dict
    rank: int


_STOP = object()
_BATCH = 64  # records per transaction, at most


def worst_severity(graph: Graph) -> str:
    """``ok`` or the name of the worst finding's severity."""
    if not graph.findings:
        return "ok"
    return str(max(f.severity for f in graph.findings))


def finding_summary(graph: Graph) -> list[dict[str, Any]]:
    """A capture's findings as the run store keeps them beside the graph (read without it)."""
    out = []
    for f in graph.findings:
        names = [graph.nodes[i].title for i in f.nodes if 0 <= i < len(graph.nodes)]
        if not names and f.param:  # an unused parameter has no node: its name is the subject
            names = [f.param]
        out.append({"kind": str(f.kind), "severity": str(f.severity), "message": f.message,
                    "hint": f.hint or "", "names": names})
    return out


class RunWriter:
    """Writes one rank's records into a run store. Use ``open_writer`` or the constructor.

    Args:
        run: The run folder (created if missing) or its ``run.sqlite``.
        params: The parameters, in the order of every per-parameter array given later.
        meta: Values for the store's meta table when the store is new.
        rank: The process's rank (0 without torch.distributed).
        window: Steps kept exactly; older ones are decimated.
        bucket: Steps merged into one decimated row.
        keep_captures: Regular (``every``) captures kept, newest first.

    Raises:
        RunError: The store exists but is not a graphscope run of this schema, or its
            recorded parameters differ from ``params`` (a different model).
    """

    def __init__(
        self,
        run: str | Path,
        params: list[RunParam],
        *,
        meta: dict[str, Any] | None = None,
        rank: int = 0,
        window: int = 4096,
        bucket: int = 32,
        keep_captures: int = 20,
    ) -> None:
        if window < bucket or bucket < 2:
            raise ValueError(f"need bucket >= 2 and window >= bucket, got {window=}, {bucket=}")
        self.path = schema.store_path(run)
        self.rank = rank
        self.params = list(params)
        self.window = window
        self.bucket = bucket
        self.keep_captures = keep_captures
        con = schema.create(self.path, meta or {})
        try:
            self.first_step = self._register(con) + 1
        finally:
            con.close()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._error: BaseException | None = None
        self._reported = False
        self._thread = threading.Thread(target=self._loop, name="graphscope-run-writer", daemon=True)
        self._thread.start()

    # -- the training thread's side -------------------------------------------------------------

    def add_step(self, rec: StepRecord) -> None:
        """Queue one step's numbers (returns at once)."""
        self._put(rec)

    def add_capture(self, step: int, graph: Graph, reason: str) -> None:
        """Queue a full capture of ``step``; ``reason`` is ``every``, ``nonfinite`` or ``spike``."""
        self._put(_Capture(step, reason, graph, self.rank))

    def add_updates(self, step: int, ratios: np.ndarray) -> None:
        """Queue the update-to-weight ratios of the optimizer step after backward ``step``."""
        self._put(_Updates(step, np.asarray(ratios, dtype=_F8), self.rank))

    def add_event(self, step: int, kind: str, detail: dict | None = None) -> None:
        """Queue an event (``nonfinite``, ``spike``) noticed at ``step``."""
        self._put(_Event(step, kind, dict(detail or {}), self.rank))

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued so far is committed."""
        done = threading.Event()
        self._put(done)
        if self._thread.is_alive():
            done.wait(timeout)

    def close(self) -> None:
        """Commit everything queued and stop the writer thread (waits for it)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        self._report()

    @property
    def failed(self) -> BaseException | None:
        return self._error

    def _put(self, item: Any) -> None:
        self._report()
        if self._error is None:
            self._queue.put(item)
        elif isinstance(item, threading.Event):
            item.set()

    def _report(self) -> None:
        if self._error is not None and not self._reported:
            self._reported = True
            warnings.warn(
                f"graphscope stopped recording the run {self.path.parent}: "
                f"{type(self._error).__name__}: {self._error}; training goes on unrecorded",
                RecordingWarning,
                stacklevel=4,
            )

    # -- the writer thread ----------------------------------------------------------------------

    def _register(self, con: sqlite3.Connection) -> int:
        """Record this rank's parameters, or check them against a resumed run's; returns the
        last step already stored for this rank (0 for a new run)."""
        rows = con.execute(
            "SELECT idx, name FROM params WHERE rank = ? ORDER BY idx", (self.rank,)
        ).fetchall()
        names = [p.name for p in self.params]
        if rows and [n for _, n in rows] != names:
            raise RunError(
                f"the run {self.path.parent} was recorded with other parameters "
                f"({len(rows)} of them, first {rows[0][1]!r}); give watch(run=...) a new folder "
                f"for a different model"
            )
        if not rows:
            with con:
                con.executemany(
                    "INSERT INTO params VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(self.rank, p.idx, p.name, p.module, json.dumps(list(p.shape)), p.numel,
                      p.dtype, p.group) for p in self.params],
                )
        last = con.execute(
            "SELECT max(step) FROM steps WHERE rank = ?", (self.rank,)
        ).fetchone()[0]
        return int(last or 0)

    def _loop(self) -> None:
        con: sqlite3.Connection | None = None
        try:
            con = schema.connect(self.path)
            con.isolation_level = None
            while True:
                batch = [self._queue.get()]
                # A bounded transaction: pages freed by decimating are reused by the next one,
                # so a writer that fell behind does not grow the file by its backlog.
                while len(batch) < _BATCH:
                    try:
                        batch.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                records = [b for b in batch if b is not _STOP and not isinstance(b, threading.Event)]
                if records:
                    self._write(con, records)
                for b in batch:
                    if isinstance(b, threading.Event):
                        b.set()
                if any(b is _STOP for b in batch):
                    return
        except BaseException as e:  # reported on the training thread; never raised there
            self._error = e
            while True:  # release anyone waiting on a flush
                try:
                    b = self._queue.get_nowait()
                except queue.Empty:
                    break
                if isinstance(b, threading.Event):
                    b.set()
        finally:
            if con is not None:
                con.close()

    def _write(self, con: sqlite3.Connection, records: list[Any]) -> None:
        con.execute("BEGIN IMMEDIATE")
        try:
            last = None
            for r in records:
                if isinstance(r, StepRecord):
                    self._write_step(con, r)
                    last = r.step
                elif isinstance(r, _Capture):
                    self._write_capture(con, r)
                elif isinstance(r, _Updates):
                    con.execute("INSERT OR REPLACE INTO updates VALUES (?, ?, ?)",
                                (r.rank, r.step, r.ratios.astype(_F8).tobytes()))
                elif isinstance(r, _Event):
                    con.execute("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?)",
                                (r.rank, r.step, r.kind, json.dumps(r.detail)))
            if last is not None:
                self._decimate(con, last)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def _write_step(self, con: sqlite3.Connection, r: StepRecord) -> None:
        loss = r.loss if r.loss is not None and r.loss == r.loss else None  # NaN -> NULL
        norm = r.grad_norm if r.grad_norm == r.grad_norm else None
        con.execute(
            "INSERT OR REPLACE INTO steps VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (r.rank, r.step, r.time, loss, int(not r.loss_finite), norm, int(r.nonfinite),
             int(r.accumulating), json.dumps([float(x) for x in r.lr]), r.loss_scale),
        )
        data = np.concatenate([
            np.asarray(r.norms, dtype=_F8),
            np.asarray(r.absmax, dtype=_F8),
            np.asarray(r.zero_frac, dtype=_F8),
        ])
        if data.size != 3 * len(self.params):
            raise RunError(
                f"step {r.step}: {data.size // 3} parameter values for {len(self.params)} parameters"
            )
        con.execute("INSERT OR REPLACE INTO param_stats VALUES (?, ?, ?, 1, ?)",
                    (r.rank, r.step, r.step, data.tobytes()))
        if r.nonfinite_params:
            con.executemany("INSERT OR REPLACE INTO nonfinite VALUES (?, ?, ?, ?)",
                            [(r.rank, r.step, i, c) for i, c in r.nonfinite_params.items()])

    def _write_capture(self, con: sqlite3.Connection, c: _Capture) -> None:
        text = json.dumps(c.graph.to_dict(), separators=(",", ":"))
        con.execute(
            "INSERT OR REPLACE INTO captures VALUES (?, ?, ?, ?, ?, ?, ?)",
            (c.rank, c.step, c.reason, worst_severity(c.graph), len(c.graph.findings),
             json.dumps(finding_summary(c.graph)), zlib.compress(text.encode("utf-8"), 6)),
        )
        if c.reason != "every":
            # The last healthy regular capture before an anomaly is kept with it.
            con.execute(
                "UPDATE captures SET reason = 'before_anomaly' WHERE rank = ? AND step = ("
                " SELECT max(step) FROM captures WHERE rank = ? AND step < ? AND reason = 'every'"
                " AND severity IN ('ok', 'info'))",
                (c.rank, c.rank, c.step),
            )
        elif self.keep_captures >= 0:
            con.execute(
                "DELETE FROM captures WHERE rank = ? AND reason = 'every' AND step NOT IN ("
                " SELECT step FROM captures WHERE rank = ? AND reason = 'every'"
                " ORDER BY step DESC LIMIT ?)",
                (c.rank, c.rank, self.keep_captures),
            )

    def _decimate(self, con: sqlite3.Connection, last: int) -> None:
        """Merge exact rows older than the window, ``bucket`` at a time."""
        p = len(self.params)
        while True:
            rows = con.execute(
                "SELECT step_lo, data FROM param_stats WHERE rank = ? AND n = 1 AND step_lo <= ?"
                " ORDER BY step_lo LIMIT ?",
                (self.rank, last - self.window, self.bucket),
            ).fetchall()
            if len(rows) < self.bucket:
                return
            a = np.stack([np.frombuffer(d, dtype=_F8) for _, d in rows]).reshape(len(rows), 3, p)
            present = a >= 0  # NO_GRAD is -1
            masked = np.where(present, a, np.nan)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-absent columns
                lo, hi = np.nanmin(masked, axis=0), np.nanmax(masked, axis=0)
                mean = np.nanmean(masked, axis=0)
            # nanmin skips NaN gradients too; a stretch with a non-finite value keeps it.
            nan_seen = (np.isnan(a) & present).any(axis=0)
            lo, hi, mean = (np.where(nan_seen, np.nan, x) for x in (lo, hi, mean))
            absent = ~present.any(axis=0)
            merged = np.stack([np.where(absent, NO_GRAD, x) for x in (lo, hi, mean)])
            first, final = rows[0][0], rows[-1][0]
            con.execute(
                "DELETE FROM param_stats WHERE rank = ? AND n = 1 AND step_lo BETWEEN ? AND ?",
                (self.rank, first, final),
            )
            con.execute("INSERT INTO param_stats VALUES (?, ?, ?, ?, ?)",
                        (self.rank, first, final, len(rows), merged.astype(_F8).tobytes()))

