"""The run store's size and read time for a long run: 100,000 steps of a 200-parameter model.

Writes the steps through ``RunWriter`` (synthetic numbers, no torch: the store's cost alone),
then reports the file size (WAL included), the write throughput, and the time to open the run
and read what the timeline shows (steps, per-layer RMS). Usage:
``python benchmarks/bench_store.py [--steps 100000] [--params 200]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphscope.runs import RunParam, RunWriter, StepRecord, open_run  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100_000)
    ap.add_argument("--params", type=int, default=200)
    args = ap.parse_args(argv)
    p = args.params
    params = [RunParam(i, f"layer{i // 2}.{'weight' if i % 2 == 0 else 'bias'}", f"layer{i // 2}",
                       (64, 64) if i % 2 == 0 else (64,), 4096 if i % 2 == 0 else 64)
              for i in range(p)]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "run"
        w = RunWriter(path, params, meta={"model": "Synthetic"})
        t = time.perf_counter()
        for s in range(1, args.steps + 1):
            n = rng.random(p)
            w.add_step(StepRecord(s, time.time(), 1.0 / s, float(np.sqrt((n ** 2).sum())), n,
                                  n * 0.1, rng.random(p) * 0.01, lr=[1e-3]))
            if s % 64 == 0:
                time.sleep(0.002)  # a training loop, not a flood: the writer keeps pace
        w.close()
        wrote = time.perf_counter() - t
        size = sum(f.stat().st_size for f in path.iterdir())
        t = time.perf_counter()
        with open_run(path) as run:
            steps = run.steps()
            layers = run.layer_series()
        read = time.perf_counter() - t
    print(f"{args.steps:,} steps x {p} parameters: {size / 1e6:.1f} MB on disk "
          f"({len(layers)} stored rows, {(layers.n == 1).sum()} exact); written in {wrote:.1f} s "
          f"({wrote / args.steps * 1e6:.0f} us/step, off the training thread); opened and read "
          f"(steps + per-layer RMS of {len(layers.names)} layers) in {read:.2f} s")
    return 0 if len(steps) == args.steps else 1


if __name__ == "__main__":
    sys.exit(main())
