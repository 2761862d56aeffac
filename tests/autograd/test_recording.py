"""Forward-time attribution: module paths, source lines, repeated blocks, clean exit."""

from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

import graphscope
from graphscope.autograd.recording import (
    Recording,
    record,
    user_frame,
)
from graphscope.autograd.walk import METADATA_KEY


class Attn(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q = nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.q(x), dim=-1) * x


class Layer(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.attn = Attn(d)
        self.mlp = nn.Sequential(nn.Linear(d, d), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x)) + x


class Encoder(nn.Module):
    def __init__(self, d: int = 4, n: int = 3) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Layer(d) for _ in range(n))
        self.head = nn.Linear(d, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return self.head(x)


def _line_of(text: str) -> int:
    """Line number in this file of the first line containing ``text``."""
    with open(__file__, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if text in line and "_line_of" not in line:
                return i
    raise AssertionError(text)


def _recorded_graph(model: nn.Module, x: torch.Tensor) -> graphscope.Graph:
    with record(model):
        loss = model(x).sum()
    return graphscope.capture(loss, model=model, warn=False)


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_module_paths_of_nested_model() -> None:
    """Each op node names the innermost module that ran it (encoder.layers.1.attn.q style)."""
    torch.manual_seed(0)
    model = Encoder()
    graph = _recorded_graph(model, torch.randn(2, 4))
    ops = [n for n in graph.nodes if n.kind == "op"]
    softmaxes = [n for n in ops if n.op.startswith("SoftmaxBackward")]
    assert sorted(n.module for n in softmaxes) == [f"layers.{i}.attn" for i in range(3)]
    addmm = [n for n in ops if n.op.startswith("AddmmBackward")]
    assert sorted(n.module for n in addmm) == sorted(
        [f"layers.{i}.attn.q" for i in range(3)] + [f"layers.{i}.mlp.0" for i in range(3)] + ["head"]
    )
    gelu = [n for n in ops if n.op.startswith("GeluBackward")]
    assert sorted(n.module for n in gelu) == [f"layers.{i}.mlp.1" for i in range(3)]
    residual = [n for n in ops if n.op.startswith("AddBackward")]
    assert sorted(n.module for n in residual) == [f"layers.{i}" for i in range(3)]


def test_nodes_inside_a_cpp_composite_are_tagged() -> None:
    """The TBackward0 F.linear makes out of Python's sight gets the linear's module and line."""
    torch.manual_seed(0)
    model = Encoder()
    graph = _recorded_graph(model, torch.randn(2, 4))
    transposes = [n for n in graph.nodes if n.op == "TBackward0"]
    assert len(transposes) == 7
    for t in transposes:
        (consumer,) = graph.consumers(t.id)
        assert t.module == graph.nodes[consumer].module
        assert t.source == graph.nodes[consumer].source
    assert all(n.module is not None for n in graph.nodes if n.kind == "op" and n.op != "SumBackward0")


def test_source_line_points_at_user_code() -> None:
    """node.source names this file, the line of the user's call, and the calling function."""
    torch.manual_seed(0)
    model = Encoder()
    x = torch.randn(2, 4)
    with record(model):
        hidden = model(x)
        loss = hidden.tanh().sum()  # the tanh line
    graph = graphscope.capture(loss, model=model, warn=False)
    tanh = next(n for n in graph.nodes if n.op == "TanhBackward0")
    assert tanh.source is not None
    assert tanh.source.file == __file__
    assert tanh.source.line == _line_of("# the tanh line")
    assert tanh.source.function == "test_source_line_points_at_user_code"
    assert tanh.module is None  # outside any module
    softmax = next(n for n in graph.nodes if n.op == "SoftmaxBackward0")
    assert softmax.source.line == _line_of("return torch.softmax(self.q(x)")
    assert softmax.source.function == "Attn.forward"
    q = next(n for n in graph.nodes if n.module == "layers.0.attn.q" and n.op == "AddmmBackward0")
    assert q.source.line == _line_of("return torch.softmax(self.q(x)")


def test_without_model_records_sources_only() -> None:
    """record() without a model leaves modules unknown but still records source lines."""
    x = torch.randn(3, requires_grad=True)
    with record():
        loss = (x.exp() * 2).sum()
    graph = graphscope.capture(loss, warn=False)
    exp = next(n for n in graph.nodes if n.op == "ExpBackward0")
    assert exp.module is None
    assert exp.source is not None and exp.source.line == _line_of("loss = (x.exp() * 2).sum()")


def test_nodes_made_before_the_block_stay_untagged() -> None:
    """Only nodes created inside the recording are tagged, not older ones they connect to."""
    x = torch.randn(3, requires_grad=True)
    before = x.sin()
    with record():
        after = before.cos()
    assert METADATA_KEY not in before.grad_fn.metadata
    assert METADATA_KEY in after.grad_fn.metadata


def test_values_unchanged_by_recording() -> None:
    """Outputs and gradients are bit-identical with and without a recording."""
    torch.manual_seed(0)
    model = Encoder()
    x = torch.randn(2, 4)
    plain = model(x).sum()
    plain.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with record(model):
        recorded = model(x).sum()
    recorded.backward()
    assert torch.equal(plain, recorded)
    for g, p in zip(grads, model.parameters()):
        assert torch.equal(g, p.grad)


def test_hooks_and_mode_removed_on_exit_and_on_exception() -> None:
    """Leaving the block removes module hooks and pops the mode, also when forward raised."""
    model = Encoder()
    modes = torch._C._len_torch_function_stack()
    with record(model) as rec:
        assert rec.active and _hook_count(model) > 0
        model(torch.randn(2, 4))
    assert _hook_count(model) == 0
    assert torch._C._len_torch_function_stack() == modes
    with pytest.raises(RuntimeError):
        with record(model):
            model(torch.randn(2, 5))  # wrong width: the first linear raises
    assert _hook_count(model) == 0
    assert torch._C._len_torch_function_stack() == modes
    assert not rec.active


def test_module_stack_recovers_after_a_raising_submodule() -> None:
    """A submodule that raised mid-forward does not leave its path on the stack."""
    model = Encoder()
    with record(model) as rec:
        with pytest.raises(RuntimeError):
            model(torch.randn(2, 5))
        assert rec.module is None
        out = model(torch.randn(2, 4))
    assert out.grad_fn.metadata[METADATA_KEY][0] == "head"


def test_recording_is_not_reentrant() -> None:
    """Entering an active recording again is refused rather than double-hooking the model."""
    rec = Recording(Encoder())
    with rec:
        with pytest.raises(RuntimeError, match="already active"):
            rec.__enter__()
    with rec:  # a finished recording may be entered again
        pass


def test_record_rejects_non_module() -> None:
    """record() says what it expected when given something that is not an nn.Module."""
    with pytest.raises(TypeError, match="nn.Module"):
        record(object())  # type: ignore[arg-type]


def test_user_frame_skips_torch_and_capture_layer() -> None:
    """user_frame() called through torch's and graphscope.autograd's own frames is the user's."""
    import os

    import graphscope.autograd

    scope = {"user_frame": user_frame}
    for package in (torch, graphscope.autograd):  # a frame whose code lives in each package
        fake = os.path.join(os.path.dirname(package.__file__), "fake_internal.py")
        exec(compile("def call():\n    return user_frame(0)\n", fake, "exec"), scope)
        file, line, function = scope["call"]() or ("", 0, "")
        assert file == __file__
        assert line == sys._getframe().f_lineno - 2
        assert function == "test_user_frame_skips_torch_and_capture_layer"


def test_script_submodule_is_left_unhooked() -> None:
    """A model holding a TorchScript submodule can be recorded: the scripted part (which takes
    no Python hooks) is skipped, the rest is attributed, and nothing stays hooked."""
    torch.manual_seed(0)
    scripted = torch.jit.script(nn.Sequential(nn.Linear(4, 4), nn.Tanh()))
    model = nn.Sequential(scripted, nn.Linear(4, 1))
    graph = _recorded_graph(model, torch.randn(2, 4))
    head = next(n for n in graph.nodes if n.op == "AddmmBackward0")
    assert head.module == "1"
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == 0


class _UserMode(torch.overrides.TorchFunctionMode):
    """A user's own mode: runs every call unchanged."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        return func(*args, **(kwargs or {}))


def test_exit_takes_off_only_its_own_mode() -> None:
    """Leaving a recording removes its own mode even when others were pushed above it later (a
    second recording, a user's mode): those stay on the stack and keep working."""
    x = torch.randn(3, requires_grad=True)
    first, second = record(), record()
    modes = torch._C._len_torch_function_stack()
    first.__enter__()
    second.__enter__()
    user = _UserMode()
    user.__enter__()
    first.__exit__(None, None, None)  # out of order on purpose
    assert torch.overrides._get_current_function_mode() is user
    assert second.active
    y = x.exp()
    assert METADATA_KEY in y.grad_fn.metadata  # the second recording still tags
    second.__exit__(None, None, None)
    assert torch.overrides._get_current_function_mode() is user
    user.__exit__(None, None, None)
    assert torch._C._len_torch_function_stack() == modes
