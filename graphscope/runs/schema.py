"""The run store's schema: one SQLite database per run, versioned, documented here.

A run is a folder (``watch(..., run="runs/exp1")``) holding ``run.sqlite`` (in WAL mode, so a
reader can open it while training writes it, and a killed writer leaves every committed step).
Any SQLite client can read it; the tables, version 1:

``meta(key TEXT PRIMARY KEY, value TEXT)``
    JSON values: ``format`` ("graphscope.run"), ``schema_version`` (1), ``graphscope_version``,
    ``created`` (Unix time), ``model`` (class name), ``argv``, ``every`` (captures one step in),
    ``thresholds`` (the limits captures were judged with), ``optimizer`` (``name``, its class,
    and ``momentum``, per param group; null without an optimizer).

``params(rank, idx, name, module, shape, numel, dtype, grp)``
    The parameters of rank ``rank`` in the order of every per-parameter array below: qualified
    name, owning module path, shape (JSON list), element count, dtype, optimizer param group
    (-1 when no optimizer was given or the parameter is in none).

``steps(rank, step, time, loss, loss_nonfinite, grad_norm, nonfinite, accumulating, lr, loss_scale)``
    One row per step (steps count from 1): per backward under ``watch``, per optimizer step
    when a trainer numbers the steps (``Watch.set_step``: its micro-batches' backwards share one row,
    holding the accumulated gradients and the summed loss). ``loss`` is the value of the scalar the backward
    started from (NULL when it was not one scalar, or NaN); ``loss_nonfinite`` is 1 when that
    value was NaN or Inf. ``grad_norm`` is the L2 norm over every parameter gradient (NULL when
    NaN); ``nonfinite`` counts the NaN/Inf elements over all parameter gradients (0 when
    finite); ``accumulating`` counts parameters whose ``.grad`` already held a gradient when the
    backward started (a missing ``zero_grad()``, or gradient accumulation on purpose); ``lr`` is
    a JSON list, one learning rate per optimizer param group (``[]`` without an optimizer);
    ``loss_scale`` is a GradScaler's scale when one was seen, else NULL.

``param_stats(rank, step_lo, step_hi, n, data)``
    Per-parameter gradient numbers. A row with ``n = 1`` (``step_lo = step_hi``) is one step:
    ``data`` is little-endian float64, ``3 * P`` values (P parameters of the rank): every
    parameter's gradient L2 norm, then every abs max, then every fraction of exactly-zero
    elements. A parameter without a gradient at that step has norm ``-1`` (and abs max and zero
    fraction ``-1``). Old steps are decimated: a row with ``n > 1`` covers the ``n`` recorded
    steps from ``step_lo`` to ``step_hi`` and holds ``9 * P`` values: the minima of the three
    numbers over those steps, then their maxima, then their means (``-1`` where no step had a
    gradient). RMS is ``norm / sqrt(numel)``.

``nonfinite(rank, step, param, count)``
    Only where a parameter's gradient held NaN/Inf: the number of such elements.

``updates(rank, step, data)``
    The update-to-weight ratio ``||w_after - w_before|| / ||w_before||`` of each parameter over
    the optimizer step that followed backward ``step`` (float64, P values, NaN where not
    measured). Measured on the steps where a full capture is taken.

``captures(rank, step, reason, severity, findings, summary, data)``
    Full graph captures: ``reason`` is ``every``, ``nonfinite`` (the first non-finite step, or
    the step after a backward-born one), ``spike`` (a gradient-norm spike against the run's own
    history), or ``before_anomaly`` (the last healthy capture before an anomaly, kept with it);
    ``severity`` the worst finding (``ok``, ``info``, ``warning``, ``error``), ``findings`` how
    many; ``summary`` a JSON list of its findings (``kind``, ``severity``, ``message``,
    ``hint``, ``names``: the parameters or ops it names); ``data`` the capture file's JSON text (``graphscope.capture`` format), zlib-compressed.

``events(rank, step, kind, detail)``
    What the recorder noticed while training: ``nonfinite`` (first non-finite gradient or loss),
    ``spike`` (gradient norm against recent history); under DDP, from the check before the
    all-reduce, ``local`` (this rank's own gradient ``norm`` before the reduction, on captured
    steps and the first non-finite one) and ``local_nonfinite`` (the first step this rank's own
    gradients were non-finite: ``params``, the parameters found); ``detail`` is JSON. A
    multi-process run's meta also holds ``world_size`` and ``distributed`` (``backend``,
    ``wrapper``: ``ddp``, ``fsdp`` or null).

Plain data: imports sqlite3 and graphscope's errors only, never torch or textual.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from graphscope.errors import RunError

FORMAT = "graphscope.run"
SCHEMA_VERSION = 1
FILENAME = "run.sqlite"

_TABLES = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS params (
    rank INTEGER NOT NULL, idx INTEGER NOT NULL, name TEXT NOT NULL, module TEXT NOT NULL,
    shape TEXT NOT NULL, numel INTEGER NOT NULL, dtype TEXT NOT NULL, grp INTEGER NOT NULL,
    PRIMARY KEY (rank, idx));
CREATE TABLE IF NOT EXISTS steps (
    rank INTEGER NOT NULL, step INTEGER NOT NULL, time REAL NOT NULL, loss REAL,
    loss_nonfinite INTEGER NOT NULL, grad_norm REAL, nonfinite INTEGER NOT NULL,
    accumulating INTEGER NOT NULL, lr TEXT NOT NULL, loss_scale REAL,
    PRIMARY KEY (rank, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS param_stats (
    rank INTEGER NOT NULL, step_lo INTEGER NOT NULL, step_hi INTEGER NOT NULL,
    n INTEGER NOT NULL, data BLOB NOT NULL, UNIQUE (rank, step_lo));
CREATE TABLE IF NOT EXISTS nonfinite (
    rank INTEGER NOT NULL, step INTEGER NOT NULL, param INTEGER NOT NULL,
    count INTEGER NOT NULL, PRIMARY KEY (rank, step, param)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS updates (
    rank INTEGER NOT NULL, step INTEGER NOT NULL, data BLOB NOT NULL, UNIQUE (rank, step));
CREATE TABLE IF NOT EXISTS captures (
    rank INTEGER NOT NULL, step INTEGER NOT NULL, reason TEXT NOT NULL, severity TEXT NOT NULL,
    findings INTEGER NOT NULL, summary TEXT NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (rank, step));
CREATE TABLE IF NOT EXISTS events (
    rank INTEGER NOT NULL, step INTEGER NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (rank, step, kind)) WITHOUT ROWID;
"""


def store_path(run: str | Path) -> Path:
    """The database file of a run folder (or the file itself when given one)."""
    p = Path(run)
    return p if p.suffix == ".sqlite" else p / FILENAME


def connect(path: Path, *, timeout: float = 10.0) -> sqlite3.Connection:
    """A connection with the settings every graphscope connection uses.

    WAL lets readers open the store while the writer commits; ``synchronous=NORMAL`` keeps every
    committed transaction through a killed process (only a power loss can lose the last ones).
    """
    con = sqlite3.connect(path, timeout=timeout, check_same_thread=False)
    con.execute("PRAGMA busy_timeout = %d" % int(timeout * 1000))
    return con


def create(path: Path, meta: dict[str, object]) -> sqlite3.Connection:
    """Create a new store at ``path`` (its folder made if missing), or open an existing one of
    this schema to append to; returns a writer connection."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = connect(path)
    con.isolation_level = None  # transactions are explicit below
    try:
        # Rows of per-parameter numbers are kilobytes: big pages hold several of them.
        con.execute("PRAGMA page_size = 16384")
        # Switching to WAL does not wait on busy_timeout: ranks creating the store at once
        # find it locked (SQLITE_BUSY) and retry, within the connection's timeout.
        deadline = time.monotonic() + 10.0
        while True:
            try:
                con.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        con.execute("PRAGMA synchronous = NORMAL")
        # IF NOT EXISTS and OR IGNORE inside one immediate transaction: several processes of
        # one run (ranks) may create it at once, and a second watch appends to it.
        con.execute("BEGIN IMMEDIATE")
        try:
            if con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
                for stmt in _TABLES.split(";"):
                    if stmt.strip():
                        con.execute(stmt)
                full = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **meta}
                con.executemany(
                    "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                    [(k, json.dumps(v)) for k, v in full.items()],
                )
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        check(con, path)
    except sqlite3.DatabaseError as e:
        con.close()
        raise RunError(
            f"cannot write the run store {path} ({e}); if it is a file of another program, "
            f"give watch(run=...) a new folder"
        ) from None
    except BaseException:
        con.close()
        raise
    return con


def check(con: sqlite3.Connection, path: Path) -> dict[str, object]:
    """The store's meta table, after checking that it is a graphscope run of this schema.

    Raises:
        RunError: not a SQLite database, not a graphscope run, or another schema version.
    """
    try:
        rows = con.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.DatabaseError as e:
        raise RunError(
            f"{path} is not a readable graphscope run store ({e}); it may be corrupt or not a "
            f"run at all: point graphscope at the folder that watch(run=...) created"
        ) from None
    try:
        meta = {k: json.loads(v) for k, v in rows}
    except (TypeError, ValueError):
        raise RunError(f"{path}: its meta table is not graphscope's; the store is corrupt") from None
    if meta.get("format") != FORMAT:
        raise RunError(f"{path} is a SQLite database but not a graphscope run store")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        newer = isinstance(version, int) and version > SCHEMA_VERSION
        raise RunError(
            f"{path} has run-store schema version {version!r}; this graphscope reads version "
            f"{SCHEMA_VERSION}: "
            + ("upgrade graphscope (pip install -U graphscope)" if newer
               else "record the run again with this version")
        )
    return meta
