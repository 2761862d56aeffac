"""A Lightning fit with ``strategy="ddp"`` on 2 CPU processes (gloo) under ``GraphscopeCallback``,
for tests/integrations/test_lightning.py: Lightning's launcher starts rank 1 by running this
script again. Rank 1 reads a 0 at global step 3 (sqrt(0): a finite loss, a NaN gradient born in
rank 1's backward that DDP's all-reduce hands to rank 0). Each rank writes the gradients
Lightning hands its optimizer, per step, to OUT/rank<r>.json (the oracle).

Usage: MASTER_PORT=PORT python tests/integrations/lightning_ddp.py RUN OUT
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import lightning.pytorch as L
import torch
from torch.utils.data import DataLoader, Dataset

from graphscope.integrations.lightning import GraphscopeCallback

NAN_RANK, NAN_STEP, STEPS = 1, 3, 5


class Batches(Dataset):
    """Per rank, per step, a seeded batch (the sampler would shuffle a shared dataset)."""

    def __len__(self) -> int:
        return 256

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        x = torch.rand(6, generator=g) + 0.5
        return x, x.sum(0, keepdim=True) / 6 + 0.1 * torch.randn(1, generator=g)


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(6))
        self.net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.global_rank == NAN_RANK and self.global_step + 1 == NAN_STEP:
            x = x.clone()
            x[0, 0] = 0.0
        return torch.nn.functional.mse_loss(self.net(torch.sqrt(x * self.scale)), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Oracle(L.Callback):
    def __init__(self) -> None:
        self.norms: dict[int, list[float]] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.norms[trainer.global_step + 1] = [float(p.grad.norm()) for p in pl_module.parameters()]


def main(run: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    oracle = Oracle()
    trainer = L.Trainer(
        strategy="ddp", accelerator="cpu", devices=2, max_steps=STEPS, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[GraphscopeCallback(run, every=1), oracle])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the NaN's and Lightning's warnings; the store is checked
        trainer.fit(Net(), DataLoader(Batches(), batch_size=16))
    Path(out, f"rank{trainer.global_rank}.json").write_text(json.dumps(
        {"names": [n for n, _ in trainer.lightning_module.named_parameters()], "norms": oracle.norms}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
