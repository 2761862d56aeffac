"""What graphscope's trainer callbacks cost inside the trainers: each trainer with and without
its ``GraphscopeCallback``, the same model, data and steps, side by side in one run.

- lightning: PyTorch Lightning's ``Trainer`` on CPU fitting MLP-50 (``models.py``'s 50
  Linear+sigmoid layers, batch 64), SGD; with ``accumulate_grad_batches=1`` and 2;
- hf: ``transformers.Trainer`` on CPU training a GPT-2 built from a config (4 layers, width
  128, 4 heads, vocabulary 1,000, batch 8 x 64 tokens), AdamW; no downloads.

Each column is one fit of ``--steps`` optimizer steps; a timing callback placed before
graphscope's measures every step from the trainer's step-begin hook to its step-end hook
(Lightning: ``on_train_batch_start``/``on_train_batch_end``; transformers: ``on_step_begin``/
``on_step_end``), so trainer set-up is left out and the trainer's own per-step work is in.
The callback records every step into a run store and takes a full capture every ``--every``
steps (the default 100, as in the README: steps 1, 101, ...). Plain and graphscope fits
alternate round by round so machine load hits each alike; the table gives the median step,
the mean step (captures included) and their ratios to plain, the medians over rounds.

Steps are timed with ``time.process_time`` by default (``--clock process``): the CPU seconds
of the whole process, every thread's (torch's intra-op threads and the run store's writer
thread alike), which other programs on a shared machine do not inflate as they do wall time;
``--clock wall`` times with ``perf_counter`` instead. ``--flush-denormal`` flushes subnormal
floats to zero: MLP-50's sigmoid gradients are float32 subnormals, which on some CPUs make
plain backward (and each of the recorder's passes) many times slower.

Usage: ``python benchmarks/bench_trainers.py [--trainers lightning,hf] [--rounds 3]
[--steps 200] [--every 100] [--threads N] [--clock process|wall] [--flush-denormal]``.
Prints a Markdown table. Needs the ``[lightning]`` and ``[hf]`` extras.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402

# The step clock (main() sets it from --clock): process CPU seconds, or wall seconds.
_clock: Callable[[], float] = time.process_time


def _summary(times: list[float]) -> tuple[float, float]:
    warm = times[2:] or times  # the first steps warm the allocator and caches
    return statistics.median(warm), statistics.fmean(warm)


# -- Lightning --------------------------------------------------------------------------------


def lightning_fit(*, steps: int, accumulate: int, callback: Any | None) -> list[float]:
    """One fit of MLP-50; returns each optimizer step's seconds."""
    import lightning.pytorch as L
    from torch.utils.data import DataLoader, TensorDataset

    class Timer(L.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t0: float | None = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self._t0 is None:
                self._t0 = _clock()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if (batch_idx + 1) % accumulate == 0:
                self.times.append(_clock() - self._t0)
                self._t0 = None

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = models.SigmoidMLP()

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.01)

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(64 * 16, 256, generator=g), torch.randint(0, 10, (64 * 16,), generator=g))
    timer = Timer()
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", accumulate_grad_batches=accumulate, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer] + ([callback] if callback is not None else []))
    trainer.fit(Module(), DataLoader(data, batch_size=64, shuffle=False))
    return timer.times


# -- transformers -----------------------------------------------------------------------------


def hf_fit(*, steps: int, accumulate: int, callback: Any | None, out: Path) -> list[float]:
    """One training of the small GPT-2; returns each optimizer step's seconds."""
    import transformers

    class Timer(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self._t0 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self._t0 = _clock()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(_clock() - self._t0)

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=1000, n_positions=64, n_embd=128, n_layer=4, n_head=4)
    model = transformers.GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 1000, (8 * 32, 64), generator=g)
    data = [{"input_ids": x, "labels": x} for x in ids]
    args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=steps, per_device_train_batch_size=8,
        gradient_accumulation_steps=accumulate, report_to="none", save_strategy="no",
        logging_strategy="no", disable_tqdm=True, use_cpu=True, seed=0, dataloader_num_workers=0)
    timer = Timer()
    trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                   callbacks=[timer] + ([callback] if callback is not None else []))
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # keeps stdout the table
    trainer.train()
    return timer.times


# -- the table ----------------------------------------------------------------------------------


def bench(name: str, fit: Callable[..., list[float]], make_callback: Callable[[Path], Any], *,
          rounds: int, tmp: Path) -> dict[str, float]:
    plain, watched = [], []
    for r in range(rounds):
        plain.append(_summary(fit(callback=None)))
        watched.append(_summary(fit(callback=make_callback(tmp / f"{name}-{r}"))))
    p_med = statistics.median(m for m, _ in plain)
    p_mean = statistics.median(m for _, m in plain)
    g_med = statistics.median(m for m, _ in watched)
    g_mean = statistics.median(m for _, m in watched)
    return {"plain_median": p_med, "plain_mean": p_mean, "gs_median": g_med, "gs_mean": g_mean}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trainers", default="lightning,hf")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--clock", choices=("process", "wall"), default="process")
    ap.add_argument("--flush-denormal", action="store_true")
    a = ap.parse_args(argv)
    global _clock
    _clock = time.process_time if a.clock == "process" else time.perf_counter
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.flush_denormal:
        torch.set_flush_denormal(True)
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    wanted = a.trainers.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if "lightning" in wanted:
            from graphscope.integrations.lightning import GraphscopeCallback as LCallback

            for acc in (1, 2):
                rows.append((f"Lightning, MLP-50, accumulate {acc}", bench(
                    f"l{acc}", lambda callback, acc=acc: lightning_fit(steps=a.steps, accumulate=acc, callback=callback),
                    lambda run: LCallback(run, every=a.every, warn=False), rounds=a.rounds, tmp=tmp)))
        if "hf" in wanted:
            from graphscope.integrations.hf import GraphscopeCallback as HCallback

            for acc in (1, 2):
                rows.append((f"transformers, GPT-2 4x128, accumulate {acc}", bench(
                    f"h{acc}", lambda callback, acc=acc: hf_fit(steps=a.steps, accumulate=acc, callback=callback,
                                                                out=tmp / "hf-out"),
                    lambda run: HCallback(run, every=a.every, warn=False), rounds=a.rounds, tmp=tmp)))
    clock = "time.process_time (CPU seconds, all threads)" if a.clock == "process" else "perf_counter (wall)"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.steps} steps per fit, "
          f"capture every {a.every}, {a.rounds} rounds, {clock}"
          + (", subnormals flushed" if a.flush_denormal else "") + "\n")
    print("| trainer, model | plain step (median / mean) | with GraphscopeCallback (median / mean) | ratio (median / mean) |")
    print("|---|---|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['plain_median'] * 1e3:.2f} / {r['plain_mean'] * 1e3:.2f} ms | "
              f"{r['gs_median'] * 1e3:.2f} / {r['gs_mean'] * 1e3:.2f} ms | "
              f"{r['gs_median'] / r['plain_median']:.2f}x / {r['gs_mean'] / r['plain_mean']:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
