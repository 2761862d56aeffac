"""What a multi-process run writes: a real DDP run on N gloo ranks under ``watch(run=)``.

Spawns ``--ranks`` CPU processes (gloo on 127.0.0.1), each training a ``--layers``-layer MLP
(two parameter tensors per layer) wrapped in DistributedDataParallel for ``--steps`` steps under
``graphscope.watch(ddp, optimizer=opt, run=..., every=--every)``, then reads the one store they
all wrote: the file size, and per table its rows and bytes (SQLite's ``dbstat``: the pages each
table and its index hold). Bytes per step per rank are the ``steps`` and ``param_stats`` tables
(and their share of the rest) over steps x ranks; captures are counted apart, per capture.
Usage: ``python benchmarks/bench_store_ranks.py [--ranks 4] [--layers 10] [--steps 300]
[--every 100]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import socket
import sqlite3
import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _worker(rank: int, world: int, port: int, run: str, layers: int, steps: int, every: int) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    import graphscope

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=120))
    try:
        torch.manual_seed(0)
        mods: list[nn.Module] = []
        for _ in range(layers):
            mods += [nn.Linear(32, 32), nn.Tanh()]
        ddp = nn.parallel.DistributedDataParallel(nn.Sequential(*mods))
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
        g = torch.Generator().manual_seed(rank)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with graphscope.watch(ddp, optimizer=opt, run=run, every=every):
                for _ in range(steps):
                    x = torch.randn(16, 32, generator=g)
                    loss = ddp(x).pow(2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    import torch.multiprocessing as mp

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ranks", type=int, default=4)
    ap.add_argument("--layers", type=int, default=10)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--every", type=int, default=100)
    args = ap.parse_args(argv)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        mp.start_processes(_worker, args=(args.ranks, _free_port(), str(run), args.layers,
                                          args.steps, args.every),
                           nprocs=args.ranks, start_method="spawn")
        files = {p.name: p.stat().st_size for p in run.iterdir()}
        con = sqlite3.connect(run / "run.sqlite")
        tables = [t for (t,) in con.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        rows = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
        pages: dict[str, int] = {}
        payload: dict[str, int] = {}
        for name, tbl, size, used in con.execute(
                "SELECT d.name, coalesce(m.tbl_name, d.name), sum(d.pgsize), sum(d.payload)"
                " FROM dbstat d LEFT JOIN sqlite_master m ON m.name = d.name GROUP BY d.name"):
            pages[tbl] = pages.get(tbl, 0) + size
            payload[tbl] = payload.get(tbl, 0) + used
        page_size = con.execute("PRAGMA page_size").fetchone()[0]
        con.close()
    p = 2 * args.layers
    per_step = sum(pages.get(t, 0) for t in ("steps", "param_stats")) / (args.steps * args.ranks)
    caps = rows.get("captures", 0)
    print(f"{args.ranks} ranks x {args.steps} steps, {p} parameter tensors, every={args.every}")
    print(f"files: {files}  (page size {page_size})")
    print(f"{'table':<12}{'rows':>8}{'page bytes':>12}{'payload':>10}")
    for t in tables:
        print(f"{t:<12}{rows[t]:>8}{pages.get(t, 0):>12}{payload.get(t, 0):>10}")
    print(f"steps + param_stats: {per_step:.0f} bytes per step per rank "
          f"({per_step / p:.1f} per parameter tensor)")
    if caps:
        print(f"captures: {pages.get('captures', 0) / caps:.0f} bytes per capture in pages, "
              f"{payload.get('captures', 0) / caps:.0f} payload ({caps} kept)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
