"""One finding per cause on real torch models: torch's own gradients (``p.grad``) are the oracle
for which parameters a finding names."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import graphscope
from graphscope.demos import DEMOS, mlp
from graphscope.health import Band, Health
from graphscope.model import Graph, Severity


def _captured(model: nn.Module, loss: torch.Tensor) -> Graph:
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    return g


def _of(g: Graph, kind: str) -> list:
    return [f for f in g.findings if f.kind == kind]


def _rms(p: torch.Tensor) -> float:
    assert p.grad is not None
    return p.grad.double().pow(2).mean().sqrt().item()


def _deep(activation: type[nn.Module], seed: int = 0) -> tuple[nn.Sequential, Graph]:
    """A 20-layer MLP with PyTorch's default init, regressing random targets."""
    torch.manual_seed(seed)
    model = mlp(20, 32, activation)
    loss = F.mse_loss(model(torch.randn(32, 8)), torch.randn(32, 1))
    return model, _captured(model, loss)


@pytest.mark.parametrize("activation", [nn.Tanh, nn.Sigmoid])
def test_deep_default_init_stack_is_one_vanishing_warning(activation):
    """20 tanh (or sigmoid) layers with default init: exactly one vanishing warning, naming
    exactly the parameters whose p.grad RMS is below 1e-4 of the last layer's largest."""
    model, g = _deep(activation)
    (f,) = _of(g, "vanishing")
    assert f.severity == Severity.WARNING
    assert [x for x in g.findings if x.severity >= Severity.WARNING] == [f]
    last = max(_rms(p) for p in model[-1].parameters())
    fading = {name for name, p in model.named_parameters() if _rms(p) <= 1e-4 * last}
    assert {g.nodes[i].name for i in f.nodes} == fading
    assert {"0.weight", "0.bias"} <= fading
    label = activation.__name__.lower()
    assert f"through 20 {label} layers" in f.message
    assert ("0.25" if label == "sigmoid" else "saturates") in f.hint


def test_tanh_fade_is_found_for_other_seeds_too():
    """The tanh stack's fade is a warning whatever the seed (the rule fits all 21 layers)."""
    for seed in (1, 2):
        _, g = _deep(nn.Tanh, seed)
        assert [f.severity for f in _of(g, "vanishing")] == [Severity.WARNING]


def _relu_stack(gain: float) -> tuple[nn.Sequential, Graph]:
    """20 ReLU layers with Kaiming init times ``gain`` (zero biases), classifying noise."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(20):
        layers += [nn.Linear(64 if i else 32, 64), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(64, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=gain * math.sqrt(2.0 / m.in_features))
            nn.init.zeros_(m.bias)
    loss = F.cross_entropy(model(torch.randn(32, 32)), torch.randint(0, 10, (32,)))
    return model, _captured(model, loss)


def test_too_large_init_is_exploding_through_depth_though_parameter_gradients_stay_even():
    """Twice the Kaiming std doubles activations forward and gradients backward in every layer,
    so parameter gradients stay even (none past the absolute limit) while the gradient the
    first ReLU receives is ~1e6x the last one's: one exploding warning on the stack, naming
    its first weight, with no "far below the largest" information beside it. Kaiming itself
    gives none."""
    model, g = _relu_stack(2.0)
    rms = [_rms(p) for p in model.parameters()]
    assert max(rms) < 1e6  # below the absolute limit: only a trend finds it
    (f,) = [x for x in g.findings if x.severity >= Severity.WARNING]
    assert f.kind == "exploding" and f.param == "0.weight"
    assert "through 20 relu layers" in f.message and "kaiming" in f.hint
    first = g.nodes[[i for i in f.nodes if g.nodes[i].kind == "op"][0]]
    assert first.label == "relu" and first.grad.rms > 1e4 * min(
        g.nodes[i].grad.rms for i in f.nodes if g.nodes[i].kind == "op")
    assert _of(g, "vanishing") == []
    _, healthy = _relu_stack(1.0)
    assert [x for x in healthy.findings if x.severity >= Severity.WARNING] == []


def test_a_bounded_output_bias_beside_exploded_weights_is_not_vanishing():
    """Weights blown up 1e8x (a diverging run's state): weight gradients past the exploding
    limit, while the output bias's gradient (softmax minus one-hot, at most 1) stays small. It
    is measured against exploded numbers, so it is neither a vanishing warning nor
    "far below the rest": the one finding is the explosion."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 10))
    with torch.no_grad():
        model[0].weight.mul_(1e8)
        model[2].weight.mul_(1e8)
    g = _captured(model, F.cross_entropy(model(torch.randn(16, 32)), torch.randint(0, 10, (16,))))
    assert _rms(model[4].bias) < 1 and _rms(model[4].weight) > 1e6
    assert [f.kind for f in g.findings if f.kind in ("vanishing", "exploding")] == ["exploding"]
    assert all(v.band is Band.EXPLODING for v in Health.of(g).verdicts.values())


def test_a_loss_term_times_the_constant_zero_is_information_not_dead():
    """torchvision's idiom for a mask loss without a positive region, ``mask_logits.sum() * 0``:
    the capture keeps the saved constant with its value, and the zeros it sends the mask head
    are one information finding naming the multiplication and the head's parameters, not dead
    units. The same head behind an all-zero mask tensor built from data stays a warning."""
    torch.manual_seed(0)
    body, head, mask_head = nn.Linear(8, 16), nn.Linear(16, 3), nn.Linear(16, 4)
    model = nn.ModuleDict({"body": body, "head": head, "mask_head": mask_head})
    h = torch.relu(body(torch.randn(5, 8)))
    loss = F.cross_entropy(head(h), torch.randint(0, 3, (5,))) + mask_head(h).sum() * 0
    g = _captured(model, loss)
    assert mask_head.weight.grad.count_nonzero() == 0
    (mul,) = [n for n in g.nodes if n.label == "mul"]
    assert any(m.shape == () and m.value == "0" for m in mul.saved)
    assert [f for f in g.findings if f.severity >= Severity.WARNING] == []
    (f,) = _of(g, "structural_zero")
    assert f.node == mul.id and "constant 0" in f.message
    assert {g.nodes[i].name for i in f.nodes if g.nodes[i].kind == "param"} == {
        "mask_head.weight", "mask_head.bias"}

    h = torch.relu(body(torch.randn(5, 8)))
    off = torch.zeros(5, 4)  # a mask that happens to be all off: a real dead path
    loss = F.cross_entropy(head(h), torch.randint(0, 3, (5,))) + (mask_head(h) * off).sum()
    g = _captured(model, loss)
    assert [f.kind for f in g.findings if f.severity >= Severity.WARNING] == ["dead"]


def test_relu_before_a_global_max_pool_is_not_dead():
    """The max-pool passes back one position in 144; the ReLU passes those on: no dead units."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveMaxPool2d(1),
                          nn.Flatten(), nn.Linear(8, 10))
    loss = F.cross_entropy(model(torch.randn(4, 3, 12, 12)), torch.randint(0, 10, (4,)))
    g = _captured(model, loss)
    relu = next(n for n in g.nodes if n.label == "relu")
    assert relu.grad.zero_frac > 0.99  # what it received: the oracle of why it sends zeros
    assert _of(g, "dead") == [] and g.findings == []


def test_softmax_summed_is_no_warning():
    """softmax(z).sum() is always 1: no dead or vanishing finding, one structural INFO that
    names the layer behind it, whose p.grad is rounding next to the loss's gradient of 1."""
    torch.manual_seed(0)
    fc = nn.Linear(4, 6)
    g = _captured(fc, torch.softmax(fc(torch.randn(5, 4)), -1).sum())
    assert max(_rms(p) for p in fc.parameters()) < 1e-6
    assert [f.severity for f in g.findings] == [Severity.INFO]
    (f,) = _of(g, "structural_zero")
    assert {g.nodes[i].name for i in f.nodes[1:]} == {"weight", "bias"}


class _CellLoop(nn.Module):
    """An LSTMCell unrolled from a zero state: the first step multiplies by c0 = 0 and h0 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(4, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        h = c = torch.zeros(u.shape[1], 8)
        for step in u:
            h, c = self.cell(step, (h, c))
        return self.head(h)


class _ZeroStateRecurrence(nn.Module):
    """h = zeros; h = tanh(A(h) + B(u[t])): A's first use multiplies the zero state."""

    def __init__(self) -> None:
        super().__init__()
        self.A = nn.Linear(8, 8, bias=False)
        self.B = nn.Linear(4, 8)
        self.head = nn.Linear(8, 1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        h = torch.zeros(u.shape[1], 8)
        for step in u:
            h = torch.tanh(self.A(h) + self.B(step))
        return self.head(h)


@pytest.mark.parametrize("model_cls", [_CellLoop, _ZeroStateRecurrence])
def test_recurrence_from_a_zero_state_is_not_dead(model_cls):
    """The first step's products with the zero state send exact zeros, but every weight learns
    from the later steps (p.grad non-zero): no finding at all."""
    torch.manual_seed(0)
    model = model_cls()
    g = _captured(model, F.mse_loss(model(torch.randn(6, 5, 4)), torch.randn(5, 1)))
    assert all(p.grad.count_nonzero() > 0 for p in model.parameters())
    assert any(e.grad is not None and e.grad.numel and e.grad.zero_frac == 1.0 for e in g.edges)
    assert g.findings == []


class _Block(nn.Module):
    def __init__(self, c: int = 16) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1), nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class _ResNetLike(nn.Module):
    """A stem, two residual blocks whose convs keep their biases before BatchNorm, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.blocks = nn.Sequential(_Block(), _Block())
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(torch.relu(self.stem(x))).mean((2, 3)))


def test_conv_bias_before_batch_norm_is_explained_not_vanishing():
    """The biases before BatchNorm get ~0 (p.grad tiny next to their conv weight's): one
    structural INFO naming exactly them, no vanishing finding and no warning."""
    torch.manual_seed(0)
    model = _ResNetLike()
    loss = F.cross_entropy(model(torch.randn(8, 3, 8, 8)), torch.randint(0, 10, (8,)))
    g = _captured(model, loss)
    biases = {f"blocks.{b}.conv{c}.bias" for b in (0, 1) for c in (1, 2)}
    params = dict(model.named_parameters())
    assert all(_rms(params[b]) < 1e-4 * _rms(params[b[:-4] + "weight"]) for b in biases)
    (f,) = _of(g, "structural_zero")
    assert {g.nodes[i].name for i in f.nodes} == biases
    assert _of(g, "vanishing") == [] and [x.severity for x in g.findings] == [Severity.INFO]


def _half_mlp(dtype: torch.dtype, factor: float) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    model = mlp(4, 32, nn.ReLU).to(dtype)
    x, y = torch.randn(32, 8, dtype=dtype), torch.randn(32, 1, dtype=dtype)
    return model, F.mse_loss(model(x), y) * factor


def test_float16_tiny_loss_underflows_instead_of_dead_units():
    """A float16 MLP with a 1e-6 loss: the hidden layers' p.grad is exactly zero; one underflow
    warning names them all, and nothing says dead units."""
    model, loss = _half_mlp(torch.float16, 1e-6)
    g = graphscope.capture(loss, model=model)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.backward()
    zeroed = {n for n, p in model.named_parameters() if p.grad.count_nonzero() == 0}
    assert len(zeroed) == 8
    (f,) = _of(g, "underflow")
    assert f.severity == Severity.WARNING and zeroed <= {g.nodes[i].name for i in f.nodes}
    assert _of(g, "dead") == [] and "GradScaler" in f.hint
    kinds = [w.category for w in caught if issubclass(w.category, graphscope.GradientWarning)]
    assert kinds == [graphscope.UnderflowWarning]


def test_bfloat16_and_scaled_float16_do_not_underflow():
    """bfloat16 has float32's range (a 1e-6 loss still gives non-zero p.grad), and a
    GradScaler keeps float16 gradients in range: neither is underflow, and healthy ones warn
    about nothing."""
    model, loss = _half_mlp(torch.bfloat16, 1e-6)
    g = _captured(model, loss)
    assert all(p.grad.count_nonzero() > 0 for p in model.parameters())
    assert _of(g, "underflow") == []
    model, loss = _half_mlp(torch.bfloat16, 1.0)
    assert [f for f in _captured(model, loss).findings if f.severity >= Severity.WARNING] == []
    model, loss = _half_mlp(torch.float16, 1e-4)
    assert _of(_captured(model, loss), "underflow")  # unscaled, this loss does underflow
    model, loss = _half_mlp(torch.float16, 1e-4)
    # 2**16 would overflow float16 (max 65504) in the loss's own cast back to half
    scaled = torch.amp.GradScaler("cpu", init_scale=2.0**10).scale(loss.float())
    g = _captured(model, scaled)
    assert all(p.grad.count_nonzero() > 0 for p in model.parameters())
    assert g.meta["loss_scale"] == 2.0**10 and g.findings == []


def test_dead_relu_demo_is_one_finding_with_the_weights_it_starves():
    """The dead_relu demo: one dead finding at the relu, carrying every parameter whose p.grad
    is all zeros (the layer below it and the one after it)."""
    torch.manual_seed(0)
    model, forward = DEMOS["dead_relu"].make()
    g = _captured(model, forward())
    (f,) = _of(g, "dead")
    zeroed = {n for n, p in model.named_parameters() if p.grad.count_nonzero() == 0}
    assert g.nodes[f.node].label == "relu" and {g.nodes[i].name for i in f.nodes[1:]} == zeroed


@pytest.mark.parametrize("name", ["sigmoid_mlp", "exploding"])
def test_demo_stacks_give_one_magnitude_finding(name):
    """The sigmoid stack (33 warnings before) and the exploding stack (42) give one each."""
    g = DEMOS[name].build()
    assert len(g.findings) == 1 and len(g.findings[0].nodes) > 30
    assert not math.isnan(g.nodes[g.findings[0].node].grad.rms)


def test_bias_that_cancels_in_a_difference_is_structural_not_dead():
    """norm(f(x1) - f(x2)): the last bias cancels, its gradient is exactly zero by mathematics:
    one info that says so, no dead-unit warning (issue 17.1)."""
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 8))
    loss = torch.norm(m(torch.randn(4, 8)) - m(torch.randn(4, 8)), dim=-1).sum()
    g = graphscope.capture(loss, model=m, warn=False)
    loss.backward()
    assert torch.count_nonzero(m[2].bias.grad) == 0  # torch agrees: exactly zero
    assert [(f.kind, f.severity) for f in g.findings] == [("structural_zero", Severity.INFO)]
    assert g.findings[0].param == "2.bias" and "sums to zero" in g.findings[0].message


class _Scaled(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.a, self.b = nn.Parameter(torch.ones(64)), nn.Parameter(torch.ones(64))
        self.factor = factor

    def forward(self) -> torch.Tensor:
        return (self.a * self.factor).sum() + self.b.sum()


@pytest.mark.parametrize("factor", [1e-15, 1e-20, 1e-23, 1e-30])
def test_gradient_below_any_structural_residual_is_a_vanishing_warning(factor):
    """A parameter scaled by 1e-15..1e-30 is one vanishing warning naming it, at the RMS p.grad has."""
    m = _Scaled(factor)
    g = _captured(m, m())
    [w] = [f for f in g.findings if f.severity >= Severity.WARNING]
    assert w.kind == "vanishing" and w.param == "a"
    assert math.isclose(g.nodes[w.node].grad.rms, _rms(m.a), rel_tol=1e-5)


def test_layer_scale_sized_gradient_stays_information():
    """A parameter scaled by 1e-6..1e-12 (layer-scale sized, or a rounding residual) is info only."""
    for factor in (1e-6, 1e-9, 1e-12):
        m = _Scaled(factor)
        g = _captured(m, m())
        assert not [f for f in g.findings if f.severity >= Severity.WARNING], factor


class _Attention(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.q(x) @ self.k(x).transpose(1, 2) * self.scale
        return (torch.softmax(s, -1) @ self.v(x)).mean(1)


def test_saturated_softmax_is_one_warning_naming_the_starved_projections():
    """Scores x1e3 saturate softmax: one vanishing warning at it, listing exactly q's and k's params."""
    torch.manual_seed(0)
    m = _Attention(1e3)
    loss = F.mse_loss(m(torch.randn(4, 8, 16)), torch.randn(4, 16))
    g = _captured(m, loss)
    [w] = [f for f in g.findings if f.severity >= Severity.WARNING]
    assert w.kind == "vanishing" and g.nodes[w.node].label == "softmax"
    named = {g.nodes[i].name for i in w.nodes if g.nodes[i].kind == "param"}
    assert named == {"q.weight", "q.bias", "k.weight", "k.bias"}
    top = max(_rms(p) for p in m.parameters())
    assert all(_rms(dict(m.named_parameters())[n]) < 1e-4 * top for n in named)


def test_scaled_attention_softmax_is_no_warning():
    """The same attention with the usual 1/sqrt(d) scale gives no warning."""
    torch.manual_seed(0)
    m = _Attention(0.25)
    loss = F.mse_loss(m(torch.randn(4, 8, 16)), torch.randn(4, 16))
    g = _captured(m, loss)
    assert not [f for f in g.findings if f.severity >= Severity.WARNING]


class _WhereAfterNan(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 2)
        with torch.no_grad():
            self.fc1.weight.fill_(float("nan"))  # weights already diverged

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(torch.where(h > 0, h, 0.0)) + torch.log(h[:, :1].exp())


def test_zero_gradient_behind_a_nan_mask_is_information_not_dead():
    """fc2.weight's all-zero p.grad (a mask built on NaN is all off) is info in a NaN pass, not dead."""
    m = _WhereAfterNan()
    g = _captured(m, m(torch.randn(4, 8)).sum())
    assert torch.count_nonzero(m.fc2.weight.grad) == 0
    assert any(f.severity >= Severity.ERROR for f in g.findings)
    assert not _of(g, "dead") or all(f.severity == Severity.INFO for f in _of(g, "dead"))
    assert any(f.kind == "dead" and "NaN" in f.message for f in g.findings)


def _tanh_rnn_loss(length: int) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    rnn = nn.RNN(16, 32, batch_first=True)
    out, _ = rnn(torch.randn(8, length, 16))
    return rnn, out[:, -1].pow(2).mean()


def test_a_long_tanh_rnn_vanishes_through_time_and_a_short_one_does_not():
    """nn.RNN (tanh, default init) over 100 steps: torch's gradient reaching the first step's
    input is < 1e-20 of the last's, and graphscope warns vanishing through time at weight_hh_l0;
    over 10 steps, no warning."""
    rnn, loss = _tanh_rnn_loss(100)
    x = torch.randn(8, 100, 16, requires_grad=True)
    torch.manual_seed(0)
    out, _ = rnn(x)
    out[:, -1].pow(2).mean().backward()
    assert x.grad[:, 0].norm() < 1e-20 * x.grad[:, -1].norm()
    g = _captured(rnn, loss)
    found = [f for f in g.findings if f.severity >= Severity.WARNING]
    assert [(f.kind, f.param) for f in found] == [("vanishing", "weight_hh_l0")]
    assert "through time" in found[0].message
    rnn, loss = _tanh_rnn_loss(10)
    assert not [f for f in _captured(rnn, loss).findings if f.severity >= Severity.WARNING]
