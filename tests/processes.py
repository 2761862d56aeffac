"""Launching a multi-process training script from a test: its own session, a bounded run time,
and no process left behind (tests of torchrun and Lightning's DDP launcher)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def live_in_group(pgid: int, wait: float = 30.0) -> list[int]:
    """The processes of group ``pgid`` still running after up to ``wait`` seconds (an exited
    child not yet reaped, a zombie, has ended: it is not counted)."""
    deadline = time.monotonic() + wait
    while True:
        live = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                live.append(int(stat.parent.name))
        if not live or time.monotonic() > deadline:
            return live
        time.sleep(0.2)


def run_session(cmd: list[str], *, timeout: float, cwd: Path | None = None) -> str:
    """Run ``cmd`` (a launcher and the workers it starts) in a session of its own, with gloo on
    the loopback; fails the test on a timeout or a non-zero exit, after killing the whole
    session, and asserts every process of it has exited. Returns its output."""
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(cmd[:4])} ... did not finish in {timeout} s:\n{out.decode()[-3000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log = out.decode()
    assert proc.returncode == 0, log[-3000:]
    assert live_in_group(proc.pid) == [], "a worker outlived its launcher"
    return log
