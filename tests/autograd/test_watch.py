"""graphscope.watch: automatic capture in training loops, and leaving torch as it was."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import graphscope
from graphscope.autograd.watch import NonFiniteGradientError, Watch, watch
from graphscope.errors import GraphscopeError, NonFiniteGradientWarning
from graphscope.model import Source


class Root(nn.Module):
    """sqrt of a ReLU: finite for positive inputs, an Inf gradient where the ReLU gives 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x).sqrt()  # the sqrt line


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.root = Root()
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.root(self.fc(x))))


def _line_of(text: str) -> int:
    with open(__file__, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if text in line and "_line_of" not in line:
                return i
    raise AssertionError(text)


def _model() -> Net:
    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():  # positive pre-activations: sqrt is finite unless the input says no
        model.fc.weight.copy_(torch.eye(3))
        model.fc.bias.fill_(1.0)
    return model


def _batch(step: int, *, bad_at: int | None = None) -> torch.Tensor:
    x = torch.rand(4, 3, generator=torch.Generator().manual_seed(step))
    if step == bad_at:
        x[0, 1] = -5.0  # relu -> 0 -> sqrt'(0) = inf
    return x


def _train(model: nn.Module, steps: int, *, bad_at: int | None = None) -> list[float]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    losses = []
    for step in range(1, steps + 1):
        loss = model(_batch(step, bad_at=bad_at)).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _untouched(model: nn.Module, modes: int) -> None:
    assert torch.autograd.backward.__module__ == "torch.autograd"
    assert torch.autograd.grad.__module__ == "torch.autograd"
    assert _hook_count(model) == 0
    assert torch._C._len_torch_function_stack() == modes
    assert graphscope.active_hook_count() == 0


def test_captures_every_backward_and_grad() -> None:
    """Each backward(), autograd.backward and autograd.grad in the block is one captured step."""
    model = _model()
    with watch(model, keep=10, warn=False) as w:
        _train(model, 2)
        torch.autograd.backward(model(_batch(3)).sum())
        params = list(model.parameters())
        grads = torch.autograd.grad(model(_batch(4)).sum(), params)
    assert w.steps == 4
    assert [g.meta["step"] for g in w.graphs] == [1, 2, 3, 4]
    assert all(g.passes == 1 for g in w.graphs)
    fc = w.graphs[3].find("fc.weight")
    assert fc.module == "fc"
    assert len(grads) == len(params)
    sqrt = next(n for n in w.last.nodes if n.op == "SqrtBackward0")
    assert sqrt.module == "root"
    assert sqrt.source is not None and sqrt.source.line == _line_of("# the sqrt line")
    assert w.last is w.graphs[-1]


def test_every_n_steps() -> None:
    """every=N captures steps 1, 1+N, 1+2N and lets the others run uncaptured."""
    model = _model()
    with watch(model, every=3, keep=10, warn=False) as w:
        _train(model, 7)
    assert w.steps == 7
    assert [g.meta["step"] for g in w.graphs] == [1, 4, 7]
    assert all(g.nodes[g.roots[0]].source is not None for g in w.graphs)


def test_uncaptured_steps_record_no_forward() -> None:
    """Between captured steps the forward is not recorded: its ops carry no graphscope tag."""
    from graphscope.autograd.walk import METADATA_KEY

    model = _model()
    losses = []
    with watch(model, every=3, warn=False):
        for step in (1, 2):
            loss = model(_batch(step)).square().mean()
            losses.append(loss)
            loss.backward()
    assert METADATA_KEY in losses[0].grad_fn.metadata  # step 1 is captured
    assert METADATA_KEY not in losses[1].grad_fn.metadata  # step 2 runs at full speed


def test_keep_last_n() -> None:
    """keep=N holds only the newest N graphs; keep=0 holds none."""
    model = _model()
    with watch(model, keep=2, warn=False) as w:
        _train(model, 5)
    assert [g.meta["step"] for g in w.graphs] == [4, 5]
    with watch(model, keep=0, warn=False) as w0:
        _train(model, 2)
    assert w0.last is None and w0.steps == 2


def test_save_dir_files_load(tmp_path) -> None:
    """save_dir gets step_000001.json per captured step, and each loads back equal."""
    model = _model()
    with watch(model, every=2, keep=3, save_dir=tmp_path / "caps", warn=False) as w:
        _train(model, 3)
    names = sorted(p.name for p in (tmp_path / "caps").iterdir())
    assert names == ["step_000001.json", "step_000003.json"]
    assert [p.name for p in w.saved] == names
    loaded = graphscope.load(tmp_path / "caps" / "step_000003.json")
    live = w.last
    assert loaded.meta["step"] == 3
    assert [n.op for n in loaded.nodes] == [n.op for n in live.nodes]
    assert [n.module for n in loaded.nodes] == [n.module for n in live.nodes]
    assert [n.source for n in loaded.nodes] == [n.source for n in live.nodes]
    assert [n.grad for n in loaded.nodes] == [n.grad for n in live.nodes]
    assert loaded.meta["module_classes"]["root"] == "Root"


def test_raise_names_origin_after_the_nan_step() -> None:
    """on_nonfinite='raise' stops right after the bad backward, naming op, module and line."""
    model = _model()
    seen = []
    with pytest.raises(NonFiniteGradientError) as info:
        with watch(model, on_nonfinite="raise", keep=5, warn=False) as w:
            for step in range(1, 6):
                loss = model(_batch(step, bad_at=3)).square().mean()
                loss.backward()
                seen.append(step)
    err = info.value
    assert seen == [1, 2] and err.step == 3
    assert isinstance(err, GraphscopeError) and isinstance(err, FloatingPointError)
    origin = err.graph.nodes[err.finding.node]
    assert origin.op == "SqrtBackward0" and origin.module == "root"
    assert err.finding.kind == "nonfinite_origin"
    text = str(err)
    assert "SqrtBackward0" in text and "module root" in text
    assert f"{Source(__file__, 0, '').short_file}:{_line_of('# the sqrt line')}" in text
    assert w.last is err.graph
    assert model.fc.weight.grad is not None  # the backward finished before the raise


def test_warn_and_ignore_nonfinite() -> None:
    """on_nonfinite='warn' warns about the NaN; 'ignore' stays silent about it."""
    model = _model()
    with pytest.warns(NonFiniteGradientWarning, match="SqrtBackward0"):
        with watch(model, warn=False):
            model(_batch(1, bad_at=1)).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonFiniteGradientWarning)
        with watch(model, on_nonfinite="ignore") as w:
            model(_batch(1, bad_at=1)).sum().backward()
    assert any(f.kind == "nonfinite_origin" for f in w.last.findings)


def test_restores_everything_on_exit() -> None:
    """Leaving the block restores torch.autograd, module hooks, the mode and capture hooks."""
    model = _model()
    modes = torch._C._len_torch_function_stack()
    backward, grad = torch.autograd.backward, torch.autograd.grad
    with watch(model) as w:
        assert torch.autograd.backward is not backward and w.active
        _train(model, 1)
        model(_batch(2)).sum()  # a forward whose backward never runs
    assert torch.autograd.backward is backward and torch.autograd.grad is grad
    assert not w.active
    _untouched(model, modes)


def test_restores_everything_on_exception() -> None:
    """A training loop that raises mid-step (even mid-backward) leaves nothing installed."""
    model = _model()
    modes = torch._C._len_torch_function_stack()
    with pytest.raises(ZeroDivisionError):
        with watch(model):
            model(_batch(1)).sum()
            1 / 0
    _untouched(model, modes)

    def boom(grad: torch.Tensor) -> torch.Tensor:
        raise KeyError("in backward")

    with pytest.raises(KeyError):
        with watch(model):
            out = model(_batch(1))
            out.register_hook(boom)
            out.sum().backward()
    _untouched(model, modes)


def test_gradients_bit_identical_with_and_without_watch() -> None:
    """Parameters, losses, RNG state and train/eval mode match an unwatched run exactly."""
    plain = _model()
    torch.manual_seed(1)
    plain_losses = _train(plain, 4)
    plain_rng = torch.get_rng_state()

    watched = _model()
    torch.manual_seed(1)
    with watch(watched, keep=4, warn=False):
        watched_losses = _train(watched, 4)
    assert torch.equal(torch.get_rng_state(), plain_rng)
    assert watched_losses == plain_losses
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)
    assert watched.training

    watched.eval()
    with watch(watched, warn=False):
        watched(_batch(1)).sum().backward()
    assert not watched.training


def test_decorator() -> None:
    """@watch(model) captures the backward passes of each call of the decorated function."""
    model = _model()
    w = watch(model, keep=5, warn=False)

    @w
    def train_step(step: int) -> None:
        model(_batch(step)).sum().backward()

    train_step(1)
    train_step(2)
    assert [g.meta["step"] for g in w.graphs] == [1, 2]
    assert not w.active
    _untouched(model, torch._C._len_torch_function_stack())


def test_reentrant_checkpoint_is_one_step() -> None:
    """The backward a reentrant checkpoint runs inside the pass is not a step of its own."""
    model = _model()
    with watch(model, keep=5, warn=False) as w:
        x = _batch(1).requires_grad_()
        out = checkpoint(model, x, use_reentrant=True)
        out.sum().backward()
    assert w.steps == 1
    assert any(n.opaque == "checkpoint" for n in w.last.nodes)


def test_nested_watches_restore_in_any_order() -> None:
    """Two watches: the innermost captures; torch.autograd is restored when both are gone."""
    a, b = _model(), _model()
    outer = watch(a, warn=False)
    inner = watch(b, warn=False)
    outer.__enter__()
    inner.__enter__()
    b(_batch(1)).sum().backward()
    outer.__exit__(None, None, None)  # out of order on purpose
    a(_batch(2)).sum().backward()
    inner.__exit__(None, None, None)
    assert inner.steps == 2 and outer.steps == 0
    _untouched(a, torch._C._len_torch_function_stack())
    _untouched(b, torch._C._len_torch_function_stack())


def test_leaf_backward_passes_through() -> None:
    """backward() on a leaf tensor (no graph) counts as a step but is left to torch."""
    model = _model()
    leaf = torch.ones(2, requires_grad=True)
    with watch(model, warn=False) as w:
        leaf.sum().backward()
        leaf.backward(torch.ones(2))
    assert w.steps == 2 and w.last is not None and w.last.passes == 1
    assert torch.equal(leaf.grad, torch.full((2,), 2.0))


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"every": 0}, ValueError),
        ({"keep": -1}, ValueError),
        ({"on_nonfinite": "stop"}, ValueError),
    ],
)
def test_rejects_bad_options(kwargs: dict, error: type) -> None:
    """Out-of-range options fail at construction with a message naming the option."""
    with pytest.raises(error, match=next(iter(kwargs))):
        watch(_model(), **kwargs)


def test_rejects_non_module() -> None:
    """watch() needs the model first and says so."""
    with pytest.raises(TypeError, match="nn.Module"):
        watch(lambda x: x)  # type: ignore[arg-type]


def test_not_reentrant() -> None:
    """Entering the same watch twice is refused."""
    w = watch(_model())
    with w:
        with pytest.raises(RuntimeError, match="already active"):
            w.__enter__()
    assert isinstance(w, Watch) and not w.active


class Penalised(nn.Module):
    """A forward that adds a gradient penalty: it calls autograd.grad with create_graph=True."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_()
        y = torch.tanh(self.fc(x))
        (dx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
        return y.mean() + dx.square().mean()  # the penalty line


class PerSample(nn.Module):
    """A forward that uses torch.func: per-sample input gradients through vmap(grad(...))."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = torch.func.vmap(torch.func.grad(lambda xi: torch.tanh(self.fc(xi)).sum()))(x)
        return self.fc(x).mean() + g.square().mean()


def _twin_steps(factory: type[nn.Module], steps: int) -> tuple[Watch, nn.Module, nn.Module]:
    """``steps`` training steps of a watched model and of its unwatched twin."""
    torch.manual_seed(0)
    watched = factory()
    plain = factory()
    plain.load_state_dict(watched.state_dict())
    _train(plain, steps)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # graphscope may not warn or fail on any of these steps
        with watch(watched, keep=steps) as w:
            _train(watched, steps)
    return w, watched, plain


def test_grad_inside_forward_is_part_of_the_step() -> None:
    """A gradient penalty's autograd.grad inside forward is not a step: its double backward is
    captured with the loss.backward() that consumes it, and the gradients are unchanged."""
    w, watched, plain = _twin_steps(Penalised, 2)
    assert w.steps == 2
    assert [g.meta["step"] for g in w.graphs] == [1, 2]
    double = [n for n in w.last.nodes if n.op == "TanhBackwardBackward0"]
    assert len(double) == 1 and double[0].executed
    assert double[0].source is not None and double[0].source.function == "Penalised.forward"
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)


def test_torch_func_transforms_inside_forward_are_not_steps() -> None:
    """torch.func.grad under vmap inside forward runs untouched (its grad calls are torch's),
    and only the loop's loss.backward() calls are steps."""
    w, watched, plain = _twin_steps(PerSample, 2)
    assert w.steps == 2 and len(w.graphs) == 2
    assert all(g.passes == 1 for g in w.graphs)
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)


def test_autograd_functional_calls_are_not_steps() -> None:
    """jacobian/hessian (plain and vectorized) call autograd.grad for the user: not steps, no
    warnings, same results; the loop's own backward still is one."""
    model = _model().eval()  # no dropout: both runs see the same function
    x = _batch(1)[0]
    expected = [
        torch.autograd.functional.jacobian(model, x, vectorize=v) for v in (False, True)
    ] + [torch.autograd.functional.hessian(lambda t: model(t).sum(), x, vectorize=True)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with watch(model) as w:
            got = [
                torch.autograd.functional.jacobian(model, x, vectorize=v) for v in (False, True)
            ] + [torch.autograd.functional.hessian(lambda t: model(t).sum(), x, vectorize=True)]
            model(_batch(2)).sum().backward()
    assert w.steps == 1 and w.last.meta["step"] == 1
    for a, b in zip(expected, got):
        assert torch.equal(a, b)


def test_watch_judges_every_step_with_its_thresholds(tmp_path):
    """watch(thresholds=T): each captured step keeps T (also in its file) and its findings are T's."""
    from graphscope.demos import DEMOS
    from graphscope.diagnostics import diagnose
    from graphscope.health import Thresholds
    from graphscope.model import load

    torch.manual_seed(0)
    model, forward = DEMOS["sigmoid_mlp"].make()
    strict = Thresholds(vanishing_ratio=0.5)
    with watch(model, thresholds=strict, save_dir=tmp_path, warn=False) as w:
        forward().backward()
    assert Thresholds.of(w.last) == strict
    assert w.last.findings == diagnose(w.last, thresholds=strict)
    assert w.last.findings != diagnose(w.last, thresholds=Thresholds())
    assert Thresholds.of(load(w.saved[0])) == strict


def test_grad_scaler_overflow_is_information_not_a_stop():
    """A GradScaler step whose scaled gradients overflow (the scaler skips it) is an info
    finding, and on_nonfinite="raise" does not stop the loop for it; a real NaN still does."""

    class Product(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Parameter(torch.full((4,), 1e-20))
            self.b = nn.Parameter(torch.full((4,), 1e20))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x * self.a * self.b).mean()  # ~1; d/da ~ 1e20, times 2^100 overflows

    model = Product()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    x = torch.rand(8, 4) + 0.5
    with watch(model, on_nonfinite="raise", warn=False) as w:
        loss = model(x)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    assert scaler.get_scale() < 2.0**100  # the scaler saw the overflow and skipped the step
    found = [f for f in w.last.findings if f.kind == "nonfinite_origin"]
    assert found and all(f.severity == graphscope.Severity.INFO for f in found)
    assert "GradScaler" in found[0].message and "skips this step" in found[0].hint
    with pytest.raises(NonFiniteGradientError):
        with watch(model, on_nonfinite="raise", warn=False):
            (model(x) * float("nan")).backward()


def test_an_unrecorded_step_runs_its_forward_without_the_mode():
    """Between captured steps the recording's mode is off the stack (no Python dispatch per op)
    and back on for the next captured step, whose ops are again attributed to their modules."""

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 1)
            self.depths: list[int] = []

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.depths.append(torch._C._len_torch_function_stack())
            return self.fc(x)

    m = Probe()
    x = torch.randn(4, 3)
    with watch(m, every=2, keep=2, warn=False) as w:
        for _ in range(3):
            m(x).sum().backward()
    assert m.depths == [1, 0, 1]
    assert torch._C._len_torch_function_stack() == 0
    last = w.graphs[-1]
    assert last.meta["step"] == 3
    assert any(n.module == "fc" for n in last.nodes if n.kind == "op")
