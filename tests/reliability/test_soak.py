"""Soak (issue 5.12): a capture on every training step leaves no hook behind, memory stays flat,
and nothing graphscope holds keeps the user's loss, activations or graph alive."""

from __future__ import annotations

import gc
import tracemalloc
import weakref

import torch
from torch import nn

import graphscope

from .models import TinyMLP, mlp_batch, seeded

# 500 steps keep the suite fast; the heap is traced over the last 400 of them, with the first 100
# traced steps as the baseline (tracemalloc sees only what was allocated after it started).
WARMUP = 100
BASELINE = 100
MEASURED = 300


def test_captured_training_steps_leak_nothing():
    """500 steps with a capture each: zero hooks after every step, and a flat Python heap and gc
    object count over the last 300 (a Graph kept per step would add several KiB each)."""
    model = seeded(TinyMLP)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = mlp_batch()

    def step() -> None:
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        g = graphscope.capture(loss, model=model, warn=False)
        loss.backward()
        opt.step()
        assert graphscope.active_hook_count() == 0
        assert g.passes == 1 and g.nodes[g.roots[0]].executed

    for _ in range(WARMUP):
        step()
    tracemalloc.start()
    try:
        for _ in range(BASELINE):
            step()
        gc.collect()
        objects_before = len(gc.get_objects())
        heap_before = tracemalloc.get_traced_memory()[0]
        for _ in range(MEASURED):
            step()
        gc.collect()
        heap_after = tracemalloc.get_traced_memory()[0]
        objects_after = len(gc.get_objects())
    finally:
        tracemalloc.stop()
    assert objects_after - objects_before < 50
    assert heap_after - heap_before < 32 * 1024  # ~100 bytes a step: allocator noise only


def test_loss_and_activations_die_with_the_user_references():
    """After backward, dropping the loss frees it and the activations, while the Graph the user
    keeps stays readable; dropping the Graph frees it too."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    h = torch.tanh(model.fc1(x))
    out = model.head(torch.sigmoid(model.fc2(h)))
    loss = nn.functional.mse_loss(out, y)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    refs = [weakref.ref(t) for t in (loss, h, out)]
    del loss, h, out
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert g.passes == 1 and len(g.nodes) > 0 and g.findings is not None
    graph_ref = weakref.ref(g)
    del g
    gc.collect()
    assert graph_ref() is None


def test_capture_without_backward_keeps_nothing_alive():
    """A capture whose backward never runs (an eval step, an exception before backward) keeps
    neither the loss, nor the activations, nor the Graph alive once the user drops them."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    h = torch.tanh(model.fc1(x))
    loss = nn.functional.mse_loss(model.head(torch.sigmoid(model.fc2(h))), y)
    g = graphscope.capture(loss, model=model, warn=False)
    assert graphscope.active_hook_count() == len(g.nodes)
    refs = [weakref.ref(t) for t in (loss, h)]
    graph_ref = weakref.ref(g)
    del loss, h
    gc.collect()
    assert [r() for r in refs] == [None, None]
    assert graphscope.active_hook_count() == 0
    del g
    gc.collect()
    assert graph_ref() is None


def test_graph_of_does_not_keep_the_graph_alive():
    """The link from a live tensor to its capture is weak: dropping the Graph frees it."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    loss = nn.functional.mse_loss(model(x), y)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward(retain_graph=True)
    g.close()
    assert graphscope.graph_of(loss) is g
    graph_ref = weakref.ref(g)
    del g
    gc.collect()
    assert graph_ref() is None
    assert graphscope.graph_of(loss) is None
