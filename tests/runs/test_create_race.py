"""Ranks of one multi-process run create its store at the same moment: none of them fails."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

from graphscope.runs import schema


def _create(path: str, start: float, failures) -> None:
    while time.time() < start:  # every process opens the file within microseconds of the others
        pass
    try:
        schema.create(Path(path), {"model": "Net"}).close()
    except Exception as e:  # reported to the parent, which asserts on it
        failures.put(repr(e))


def test_four_processes_creating_one_store_at_once_all_succeed(tmp_path):
    """Four processes creating one new store at once all get a writer (switching a new
    database to WAL does not wait on the busy timeout; create retries it)."""
    ctx = mp.get_context("fork")
    failures = ctx.Queue()
    for round_ in range(10):
        path = tmp_path / str(round_) / schema.FILENAME
        start = time.time() + 0.2
        procs = [ctx.Process(target=_create, args=(str(path), start, failures)) for _ in range(4)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join()
        assert [p.exitcode for p in procs] == [0] * 4
    got = []
    while not failures.empty():
        got.append(failures.get())
    assert got == []
