"""What recording every training step costs: graphscope's flight recorder against plain training,
TensorBoard histogram logging and W&B-style per-parameter histograms, side by side in one run.

A training step is forward, backward, an SGD step and ``zero_grad()`` on the models of
``models.py`` (MLP-50, LSTM-200, the GPT-2-sized model). The columns, interleaved round by round
so machine load hits each alike, medians over rounds:

- plain: the step alone;
- graphscope: the step inside ``graphscope.watch(model, optimizer=opt, run=DIR, every=HUGE)``:
  per-parameter gradient norm, abs max and share of zeros, the loss and the learning rate on
  every step, written to the run store off the training thread (no full captures: the block's
  first step, which is captured, runs untimed; captures are priced by ``run.py``'s watch
  column);
- tensorboard: ``SummaryWriter.add_histogram(name, p.grad, step)`` for every parameter plus the
  loss as a scalar, every step (what people do to see gradients over training);
- wandb-style: what ``wandb.watch(model, log="gradients")`` computes per parameter when it logs
  (min and max read to the host, ``histc`` with 64 bins, the counts moved to the host), every
  step; W&B's own default logs only every 1,000 steps because of this cost.

Usage: ``python benchmarks/bench_recorder.py [--models mlp50,lstm200,gpt2] [--rounds 5]
[--steps 3] [--threads N] [--flush-denormal]``. Prints a Markdown table of step times and
ratios to plain. ``--flush-denormal`` (``torch.set_flush_denormal(True)``) takes subnormal
arithmetic out of both sides: on CPUs where it is slow, MLP-50's float32-subnormal sigmoid
gradients dominate its plain step (about 20x slower unflushed on an Intel VM), and every pass
over them, the recorder's too.
Needs ``tensorboard`` (``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402

import graphscope  # noqa: E402

HUGE = 10**9


def _step(case: models.Case, opt: torch.optim.Optimizer) -> torch.Tensor:
    loss = case.forward()
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss


def _wandb_style(model: torch.nn.Module) -> None:
    """Per parameter, what wandb's torch hook computes for a gradient histogram."""
    for _, p in model.named_parameters():
        g = p.grad
        if g is None:
            continue
        flat = g.detach().reshape(-1).float()
        lo, hi = flat.min().item(), flat.max().item()
        flat.histc(bins=64, min=lo, max=hi).cpu()


def _time(run_steps: Callable[[], None]) -> float:
    t = time.perf_counter()
    run_steps()
    return time.perf_counter() - t


def bench(case: models.Case, *, rounds: int, steps: int, tmp: Path) -> dict[str, float]:
    from torch.utils.tensorboard import SummaryWriter

    model = case.model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    tb = SummaryWriter(str(tmp / f"tb_{case.name}"))
    counter = {"step": 0}

    def plain() -> None:
        for _ in range(steps):
            _step(case, opt)

    def tensorboard() -> None:
        for _ in range(steps):
            loss = case.forward()
            loss.backward()
            counter["step"] += 1
            for name, p in model.named_parameters():
                if p.grad is not None:
                    tb.add_histogram(f"grad/{name}", p.grad, counter["step"])
            tb.add_scalar("loss", loss.item(), counter["step"])
            opt.step()
            opt.zero_grad()

    def wandb_style() -> None:
        for _ in range(steps):
            loss = case.forward()
            loss.backward()
            _wandb_style(model)
            loss.item()
            opt.step()
            opt.zero_grad()

    times: dict[str, list[float]] = {"plain": [], "graphscope": [], "tensorboard": [], "wandb-style": []}
    run_dir = tmp / f"run_{case.name}"
    for r in range(rounds + 1):  # round 0 warms every path up and is discarded
        for name in times:
            if name == "graphscope":
                with graphscope.watch(model, optimizer=opt, run=run_dir, every=HUGE, warn=False) as w:
                    # The block's first step is captured (every step 1 is) and the second
                    # measures the update ratio around it: both untimed, and the capture
                    # written before the timed steps start.
                    _step(case, opt)
                    _step(case, opt)
                    w._recorder.writer.flush()
                    t = _time(plain)
            else:
                t = _time({"plain": plain, "tensorboard": tensorboard, "wandb-style": wandb_style}[name])
            if r:
                times[name].append(t / steps)
    tb.close()
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="mlp50,lstm200,gpt2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--flush-denormal", action="store_true",
                    help="flush subnormal floats to zero (torch.set_flush_denormal)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.flush_denormal and not torch.set_flush_denormal(True):
        print("--flush-denormal: this CPU cannot flush subnormals (no SSE3); measured without",
              file=sys.stderr)
    warnings.simplefilter("ignore")
    wanted = args.models.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in models.cases():
            if case.name not in wanted:
                continue
            res = bench(case, rounds=args.rounds, steps=args.steps, tmp=Path(tmp))
            base = res["plain"]
            rows.append(f"| {case.name} | {base * 1e3:.1f} ms | "
                        + " | ".join(f"{res[k] * 1e3:.1f} ms ({res[k] / base:.2f}x)"
                                     for k in ("graphscope", "tensorboard", "wandb-style")) + " |")
            print(rows[-1], flush=True)
    print(f"\nTraining step (forward, backward, SGD step, zero_grad), medians of {args.rounds} "
          f"rounds x {args.steps} steps, {torch.get_num_threads()} threads, torch {torch.__version__}"
          + (", subnormals flushed to zero" if args.flush_denormal else "") + "\n")
    print("| model | plain | graphscope run= (every step) | TensorBoard histograms | W&B-style histograms |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
