"""Threads (issue 5.11): backward in worker threads, each with its own capture, records exactly
what sequential runs record."""

from __future__ import annotations

import json
import threading

import torch
from torch import nn

import graphscope

from .models import Reused, TinyMLP, seeded

WORKERS = 4
STEPS = 5


def _job(seed: int):
    """A model and a batch, built in the main thread so the seeds are not shared across threads."""
    make = TinyMLP if seed % 2 else Reused
    model = seeded(make, seed)
    x, y = seeded(lambda: (torch.randn(6, 4), torch.randn(6, 1)), 100 + seed)
    return model, x, y


def _train(model: nn.Module, x, y, out: list, start: threading.Barrier | None = None) -> None:
    if start is not None:
        start.wait()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        g = graphscope.capture(loss, model=model, warn=False)
        loss.backward()
        record = g.to_dict()
        record.pop("meta")
        out.append((json.dumps(record, sort_keys=True), [p.grad.clone() for p in model.parameters()]))
        opt.step()


def test_threaded_captures_equal_sequential_ones():
    """Four threads training their own models with a capture per step record the same graphs,
    statistics and findings, and produce the same gradients, as one thread running them in turn."""
    sequential: list[list] = [[] for _ in range(WORKERS)]
    for i in range(WORKERS):
        _train(*_job(i), sequential[i])
    threaded: list[list] = [[] for _ in range(WORKERS)]
    start = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            _train(*jobs[i], threaded[i], start)
        except BaseException as exc:  # surfaced below, with the thread's own traceback
            errors.append(exc)

    jobs = [_job(i) for i in range(WORKERS)]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert graphscope.active_hook_count() == 0
    for i in range(WORKERS):
        assert len(threaded[i]) == STEPS
        for (doc_t, grads_t), (doc_s, grads_s) in zip(threaded[i], sequential[i]):
            assert doc_t == doc_s
            assert all(torch.equal(a, b) for a, b in zip(grads_t, grads_s))
