"""A DDP training script for ``torchrun`` (tests/autograd/test_distributed.py launches it): each
rank trains a small model under ``graphscope.watch(run=RUN)``; rank 1 reads a 0 at step 4:
sqrt(0) keeps its forward and loss finite but makes a NaN gradient, born in rank 1's backward,
that DDP's all-reduce hands to every rank (only the check before the all-reduce can tell where).

Usage: python -m torch.distributed.run --nproc-per-node 2 --master-addr 127.0.0.1
       --master-port PORT tests/autograd/torchrun_nan.py RUN
"""

from __future__ import annotations

import datetime
import sys
import warnings

import torch
import torch.distributed as dist
from torch import nn

import graphscope

NAN_RANK, NAN_STEP, STEPS = 1, 4, 6


class Pre(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(6))

    def forward(self, x):
        return torch.sqrt(x * self.scale)


def main(run: str) -> None:
    torch.set_num_threads(1)
    # torchrun sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT: env:// reads them.
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    try:
        rank = dist.get_rank()
        torch.manual_seed(0)
        model = nn.Sequential(Pre(), nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
        ddp = nn.parallel.DistributedDataParallel(model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the NaN warnings; the run store is what is checked
            with graphscope.watch(ddp, optimizer=opt, run=run, every=1, keep=0):
                for step in range(1, STEPS + 1):
                    g = torch.Generator().manual_seed(1000 * rank + step)
                    x, y = torch.rand(8, 6, generator=g) + 0.5, torch.randn(8, 1, generator=g)
                    if rank == NAN_RANK and step == NAN_STEP:
                        x[0, 0] = 0.0
                    loss = ((ddp(x) - y) ** 2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
