"""The public API reads as it works: real signatures, lazy names listed, one-call DOT."""

from __future__ import annotations

import inspect

import torch
from torch import nn

import graphscope


def test_render_and_inspect_show_their_real_options():
    """help(graphscope.render) and help(graphscope.inspect) show the options, keyword-only."""
    render = inspect.signature(graphscope.render).parameters
    assert {"model", "options", "progress"} <= set(render)
    assert all(render[k].kind is inspect.Parameter.KEYWORD_ONLY for k in ("model", "options", "progress"))
    show = inspect.signature(graphscope.inspect).parameters
    assert show["thresholds"].kind is inspect.Parameter.KEYWORD_ONLY


def test_dir_lists_the_lazily_imported_names():
    """dir(graphscope) lists capture, watch, record and the other torch-side names."""
    assert {"capture", "watch", "record", "graph_of", "active_hook_count"} <= set(dir(graphscope))
    assert set(graphscope.__all__) <= set(dir(graphscope))


def test_to_dot_at_the_top_level_takes_a_loss():
    """graphscope.to_dot(loss, model=m) is one call, as torchviz's make_dot, and arms nothing."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    loss = model(torch.randn(4, 3)).sum()
    text = graphscope.to_dot(loss, model=model)
    assert text.startswith("digraph") and "0.weight" in text and "tanh" in text
    assert graphscope.active_hook_count() == 0
    assert text == graphscope.render(loss, model=model).dot
