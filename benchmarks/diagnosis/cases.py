"""The labelled set-ups of the diagnosis benchmark: small models with a written ground truth.

Owns the set-ups and their ground truths; ``run.py`` runs, diagnoses and scores them. Each set-up
is a builder function registered with ``@case(truth, places, ...)``: its name is the set-up's
name, its docstring says the ground truth and why (with the numbers measured for it, see
``README.md``), and it returns a ``Setup`` (a model, its batches and its training step). Every
model is built in code with random init under ``torch.manual_seed(0)`` (the runner seeds before
each build), every batch comes from a seeded generator: the run is deterministic and needs no
network. Imports torch only (never graphscope: the set-ups must not know the tool they test).

Ground truth vocabulary (``KINDS``): ``healthy`` or one pathology, ``places`` (parameter names,
module paths, or ``op:<label>`` for an op such as ``op:sqrt``) that a correct diagnosis must
name, ``born`` (for ``nonfinite``: ``forward``, ``data``, ``parameters`` or ``backward``),
``loop`` (the truth of the watched loop when it differs from one capture of the first step:
a learning rate that diverges only over steps), ``also`` (kinds that are acceptable as well:
neither a positive nor a false alarm, e.g. a diverging run may end in NaN) and ``info`` (places
an information-only finding would ideally name; reported, never scored) and ``diverges`` (the
loss grows until it is non-finite, or far above where it started, because of the training set-up:
the set-ups on which a recorded run's divergence lead time is held to issue 12's target).

How a ground truth was decided: by the mathematics of the set-up and a measurement made without
graphscope (``evidence``), using these rules. Vanishing through depth: the gradient reaching the
input-side layer (dL/dz of its output) is below 1e-4 of the output-side one; through time: the
gradient reaching the first time step's input is below 1e-4 of the last step's. Exploding: the
same ratios above 1e4, or parameter-gradient RMS above 1e3 that keeps training from converging.
Dead: a ReLU layer whose units are off for the whole batch. Underflow: float16 flushes to zero
gradients that float32 keeps non-zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

HEALTHY = "healthy"
NONFINITE = "nonfinite"
VANISHING = "vanishing"
EXPLODING = "exploding"
DEAD = "dead"
UNREACHABLE = "unreachable"
UNDERFLOW = "underflow"
ACCUMULATED = "accumulated"
KINDS = (NONFINITE, VANISHING, EXPLODING, DEAD, UNREACHABLE, UNDERFLOW, ACCUMULATED)
BORN = ("forward", "data", "parameters", "backward")
ANYWHERE = "*"  # a place that any named parameter or module matches (a learning rate, say)


@dataclass
class Setup:
    """One runnable set-up.

    Attributes:
        model: The ``nn.Module`` under test (what ``capture(model=)`` and ``watch`` get).
        batch: ``step -> (x, y)``; deterministic.
        forward: ``step -> tensor``: the forward pass and loss of a step, the tensor that
            ``backward()`` is called on (scaled by the ``GradScaler`` when there is one).
        update: What follows ``backward()``: clipping, ``optimizer.step()``, ``zero_grad()``.
        scale: The loss scale of the latest ``forward`` (1 without a ``GradScaler``), so the
            naive rule reads true gradient magnitudes.
        optimizer: The optimizer ``update`` steps (what ``watch(optimizer=)`` gets, for the
            learning rates and update ratios a recorded run keeps).
    """

    model: nn.Module
    batch: Callable[[int], tuple]
    forward: Callable[[int], torch.Tensor]
    update: Callable[[], None]
    scale: Callable[[], float] = lambda: 1.0
    optimizer: torch.optim.Optimizer | None = None


@dataclass(frozen=True)
class Case:
    """A labelled set-up: see the module docstring for the vocabulary."""

    name: str
    group: str
    truth: str
    places: tuple[str, ...]
    build: Callable[[], Setup]
    why: str
    born: str | None = None
    loop: tuple[str, tuple[str, ...]] | None = None
    also: frozenset[str] = frozenset()
    info: tuple[str, ...] = ()
    steps: int = 10
    evidence: Callable[[Setup], str] | None = None
    diverges: bool = False

    def truth_of(self, mode: str) -> tuple[str, tuple[str, ...]]:
        """``(kind, places)`` for ``mode`` ``"single"`` (one capture), ``"loop"`` or
        ``"recorded"`` (both over steps)."""
        if mode != "single" and self.loop is not None:
            return self.loop
        return self.truth, self.places


CASES: list[Case] = []
_group = "?"


def _section(name: str) -> None:
    global _group
    _group = name


def case(
    truth: str,
    places: tuple[str, ...] | list[str] = (),
    *,
    born: str | None = None,
    loop: tuple[str, tuple[str, ...]] | None = None,
    also: tuple[str, ...] = (),
    info: tuple[str, ...] = (),
    steps: int = 10,
    evidence: Callable[[Setup], str] | None = None,
    diverges: bool = False,
) -> Callable[[Callable[[], Setup]], Callable[[], Setup]]:
    """Register a builder as a labelled set-up named after the function."""
    for k in (truth, *(loop[:1] if loop else ()), *also):
        assert k == HEALTHY or k in KINDS, k
    assert (truth == NONFINITE) == (born is not None) and (born is None or born in BORN)

    def register(build: Callable[[], Setup]) -> Callable[[], Setup]:
        doc = " ".join((build.__doc__ or "").split())
        CASES.append(
            Case(
                name=build.__name__, group=_group, truth=truth, places=tuple(places),
                build=build, why=doc, born=born, loop=loop, also=frozenset(also),
                info=tuple(info), steps=steps, evidence=evidence, diverges=diverges,
            )
        )
        return build

    return register


# -- training steps ---------------------------------------------------------------------------------


def _trainer(
    model: nn.Module,
    batch: Callable[[int], tuple],
    objective: Callable[..., torch.Tensor] | None = None,
    *,
    lr: float = 0.05,
    optimizer: str = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    clip: float | None = None,
    zero_grad: bool = True,
    amp: torch.dtype | None = None,
    scaler: bool = False,
    accumulate: int = 1,
) -> Setup:
    """A plain training step: forward under ``amp`` autocast, loss, (scaled) backward, update;
    with ``accumulate=k`` the loss is divided by k and the optimizer steps every k-th backward."""
    objective = objective or F.cross_entropy
    params = [p for p in model.parameters() if p.requires_grad]
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum,
                                                     weight_decay=weight_decay)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    gs = torch.amp.GradScaler("cpu") if scaler else None
    state = {"scale": 1.0, "calls": 0}

    def forward(step: int) -> torch.Tensor:
        x, y = batch(step)
        if amp is not None:
            with torch.autocast("cpu", dtype=amp):
                loss = objective(model(x), y)
        else:
            loss = objective(model(x), y)
        if accumulate > 1:
            loss = loss / accumulate
        if gs is not None:
            state["scale"] = float(gs.get_scale())
            return gs.scale(loss)
        return loss

    def update() -> None:
        state["calls"] += 1
        if state["calls"] % accumulate:
            return  # accumulating micro-batches: no step, no zero_grad
        if gs is not None:
            gs.unscale_(opt)
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        if gs is not None:
            gs.step(opt)
            gs.update()
        else:
            opt.step()
        if zero_grad:
            opt.zero_grad()

    return Setup(model=model, batch=batch, forward=forward, update=update,
                 scale=lambda: state["scale"], optimizer=opt)


def _teacher(d_in: int, d_out: int, seed: int) -> torch.Tensor:
    """A fixed random linear map: labels made with it can be learnt, so a healthy loop's loss
    goes down."""
    return torch.randn(d_in, d_out, generator=torch.Generator().manual_seed(seed)) / math.sqrt(d_in)


def _classes(d_in: int = 32, n: int = 10, batch: int = 32, seed: int = 1):
    """Random inputs labelled by a fixed teacher, a fresh batch each step (the same every run)."""
    w = _teacher(d_in, n, seed)

    def make(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 1000 + step)
        x = torch.randn(batch, d_in, generator=g)
        return x, (x @ w).argmax(-1)

    return make


def _targets(d_in: int = 32, d_out: int = 1, batch: int = 32, seed: int = 1):
    """Random inputs and a smooth regression target of them."""
    w = _teacher(d_in, d_out, seed)

    def make(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 1000 + step)
        x = torch.randn(batch, d_in, generator=g)
        return x, torch.tanh(x @ w)

    return make


def _images(ch: int = 3, size: int = 16, n: int = 10, batch: int = 8, seed: int = 1):
    """Random images labelled by a teacher of their 4x4-pooled pixels."""
    w = _teacher(ch * 16, n, seed)

    def make(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 1000 + step)
        x = torch.randn(batch, ch, size, size, generator=g)
        return x, (F.adaptive_avg_pool2d(x, 4).flatten(1) @ w).argmax(-1)

    return make


def _sequences(d_in: int = 16, length: int = 10, batch: int = 8, seed: int = 1):
    """Random sequences; the target is a teacher of the last three steps' inputs."""
    w = _teacher(d_in, 1, seed)

    def make(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 1000 + step)
        x = torch.randn(batch, length, d_in, generator=g)
        return x, torch.tanh(x[:, -3:].mean(1) @ w * 2)

    return make


def _tokens(vocab: int = 128, length: int = 16, batch: int = 4, seed: int = 1):
    def make(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed * 1000 + step)
        t = torch.randint(0, vocab, (batch, length + 1), generator=g)
        return t[:, :-1], t[:, 1:]

    return make


def _lm_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


# -- evidence: the measurements a ground truth rests on, made without graphscope ---------------------


def _rms(t: torch.Tensor | None) -> float:
    return float("nan") if t is None else t.detach().double().pow(2).mean().sqrt().item()


def _depth_ratio(s: Setup) -> str:
    """dL/dz at the first and last Linear outputs (z: pre-activation), and their ratio."""
    linears = [m for m in s.model.modules() if isinstance(m, nn.Linear)]
    outs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o: (o.retain_grad(), outs.append(o))[1])
             for m in linears]
    try:
        s.forward(0).backward()
    finally:
        for h in hooks:
            h.remove()
    first, last = _rms(outs[0].grad), _rms(outs[-1].grad)
    return f"dL/dz first layer {first:.2g}, last {last:.2g}, ratio {first / last:.2g}"


def _time_ratio(s: Setup) -> str:
    """dL/dx at the first and last time step, and their ratio."""
    x, y = s.batch(0)
    x = x.clone().requires_grad_()
    s.model.zero_grad()
    F.mse_loss(s.model(x), y).backward()
    first, last = _rms(x.grad[:, 0]), _rms(x.grad[:, -1])
    ratio = first / last if last > 0 else float("nan")
    return f"dL/dx step 0 {first:.2g}, step T-1 {last:.2g}, ratio {ratio:.2g}"


def _param_rms(s: Setup) -> str:
    """Smallest and largest parameter-gradient RMS after one backward."""
    s.forward(0).backward()
    rms = {n: _rms(p.grad) for n, p in s.model.named_parameters() if p.grad is not None}
    lo, hi = min(rms, key=rms.get), max(rms, key=rms.get)
    return f"grad RMS min {rms[lo]:.2g} ({lo}), max {rms[hi]:.2g} ({hi})"


def _after_steps(n: int, what: Callable[[Setup], str]) -> Callable[[Setup], str]:
    """``what`` measured after ``n`` training steps (for truths that appear over steps)."""

    def measure(s: Setup) -> str:
        for i in range(n):
            s.forward(i).backward()
            s.update()
        s.model.zero_grad()
        # Measured on step n's batch: the (n+1)-th backward, as the watched loop sees it.
        later = Setup(s.model, lambda i: s.batch(i + n), lambda i: s.forward(i + n), s.update,
                      s.scale, s.optimizer)
        return f"after {n} steps: " + what(later)

    measure.__doc__ = what.__doc__
    return measure


def _loss_curve(n: int) -> Callable[[Setup], str]:
    def measure(s: Setup) -> str:
        losses, rms = [], []
        for i in range(n):
            loss = s.forward(i)
            loss.backward()
            losses.append(loss.item() / s.scale())
            rms.append(max(_rms(p.grad) / s.scale() for p in s.model.parameters()
                           if p.grad is not None))
            s.update()
        return (f"loss {losses[0]:.3g} -> {losses[-1]:.3g}; max grad RMS "
                f"{rms[0]:.3g} -> {max(rms):.3g} over {n} steps")

    return measure


def _underflow(s: Setup) -> str:
    """Share of exact zeros in each Linear's weight gradient under fp16 autocast vs float32."""
    s.forward(0).backward()
    half = {n: (p.grad == 0).double().mean().item() for n, p in s.model.named_parameters()
            if n.endswith("weight")}
    s.model.zero_grad()
    x, y = s.batch(0)
    _small_loss(s.model(x), y).backward()
    full = {n: (p.grad == 0).double().mean().item() for n, p in s.model.named_parameters()
            if n.endswith("weight")}
    worst = max(half, key=lambda n: half[n] - full[n])
    return (f"exact zeros in {worst}.grad: {half[worst]:.0%} in fp16, {full[worst]:.0%} in "
            f"float32 (first layer {half[next(iter(half))]:.0%} vs {full[next(iter(full))]:.0%})")


def _zero_share(s: Setup) -> str:
    """Share of exactly-zero parameter-gradient values."""
    s.forward(0).backward()
    parts = [f"{n} {(p.grad == 0).double().mean().item():.0%}"
             for n, p in s.model.named_parameters() if p.grad is not None]
    return "exact zeros: " + ", ".join(parts[:6]) + (" ..." if len(parts) > 6 else "")


# -- models -----------------------------------------------------------------------------------------


def _mlp(act: type[nn.Module], depth: int, *, width: int = 64, d_in: int = 32, d_out: int = 10,
         init: Callable[[nn.Linear], None] | None = None) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(d_in if i == 0 else width, width)
        if init is not None:
            init(lin)
        layers += [lin, act()]
    layers.append(nn.Linear(width, d_out))
    return nn.Sequential(*layers)


def _first(n: int) -> tuple[str, ...]:
    """The first ``n`` Linear layers of an ``_mlp`` (its modules are numbered 0, 2, 4, ...)."""
    return tuple(str(2 * i) for i in range(n))


INPUT_SIDE = _first(7)  # the input-side third of a 20-layer stack


def _kaiming(lin: nn.Linear, gain: float = 1.0) -> None:
    nn.init.normal_(lin.weight, std=gain * math.sqrt(2.0 / lin.in_features))
    nn.init.zeros_(lin.bias)


def _xavier(gain: float) -> Callable[[nn.Linear], None]:
    def init(lin: nn.Linear) -> None:
        nn.init.xavier_normal_(lin.weight, gain=gain)
        nn.init.zeros_(lin.bias)

    return init


class ResidualMLP(nn.Module):
    """``x + W2 relu(W1 norm(x))`` blocks on a 64-wide stream, no normalisation when ``norm=None``."""

    def __init__(self, blocks: int, *, width: int = 64, kaiming: bool = False,
                 norm: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.stem = nn.Linear(32, width)
        self.blocks = nn.ModuleList()
        for _ in range(blocks):
            b = nn.Sequential(*([norm(width)] if norm else []), nn.Linear(width, width),
                              nn.ReLU(), nn.Linear(width, width))
            if kaiming:
                for m in b:
                    if isinstance(m, nn.Linear):
                        _kaiming(m)
            self.blocks.append(b)
        self.head = nn.Linear(width, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for b in self.blocks:
            h = h + b(h)
        return self.head(h)


class NormMLP(nn.Module):
    """Linear -> norm -> activation, ``depth`` times; default init."""

    def __init__(self, depth: int, norm: type[nn.Module], act: type[nn.Module]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(depth):
            layers += [nn.Linear(32 if i == 0 else 64, 64), norm(64), act()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class SeqRegressor(nn.Module):
    """A recurrent layer read at its last step by a linear head."""

    def __init__(self, rnn: nn.Module) -> None:
        super().__init__()
        self.rnn = rnn
        self.head = nn.Linear(rnn.hidden_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def _recurrent(cls: type[nn.RNNBase], length: int, *, hh_scale: float = 1.0, clip: float | None = None,
               **kw) -> Setup:
    rnn = cls(16, 32, batch_first=True, **kw)
    if hh_scale != 1.0:
        with torch.no_grad():
            for name, p in rnn.named_parameters():
                if name.startswith("weight_hh"):
                    p.mul_(hh_scale)
    return _trainer(SeqRegressor(rnn), _sequences(length=length), F.mse_loss, lr=0.1, clip=clip)


# -- depth -------------------------------------------------------------------------------------------
_section("depth")


@case(VANISHING, INPUT_SIDE, evidence=_depth_ratio)
def sigmoid20_default() -> Setup:
    """Vanishing. 20 sigmoid layers, PyTorch's default init: each sigmoid multiplies the
    gradient by at most 0.25, so it fades by ~1e-17 to the first layer (measured dL/dz ratio
    ~4e-18)."""
    return _trainer(_mlp(nn.Sigmoid, 20), _classes())


@case(VANISHING, INPUT_SIDE, evidence=_depth_ratio)
def sigmoid20_xavier() -> Setup:
    """Vanishing. Xavier init does not save a sigmoid stack: the 0.25 derivative bound still
    compounds over 20 layers (measured dL/dz ratio ~6e-14)."""
    return _trainer(_mlp(nn.Sigmoid, 20, init=_xavier(1.0)), _classes())


@case(VANISHING, INPUT_SIDE, evidence=_depth_ratio)
def tanh20_default() -> Setup:
    """Vanishing. Default init (uniform, variance 1/(3 fan_in)) shrinks a tanh stack's gradient
    by ~1/sqrt(3) per layer: measured dL/dz ratio ~5e-6 over 20 layers."""
    return _trainer(_mlp(nn.Tanh, 20), _classes())


@case(HEALTHY, evidence=_depth_ratio)
def tanh20_xavier() -> Setup:
    """Healthy. Xavier with tanh's gain 5/3 keeps the gradient within a factor ~1 across 20
    layers (measured dL/dz ratio ~1)."""
    return _trainer(_mlp(nn.Tanh, 20, init=_xavier(5 / 3)), _classes())


@case(VANISHING, INPUT_SIDE, evidence=_depth_ratio)
def relu20_default() -> Setup:
    """Vanishing, surprisingly for ReLU. PyTorch's default Linear init (kaiming_uniform with
    a=sqrt(5): variance 1/(3 fan_in)) is 1/6 of what ReLU needs (2/fan_in): the gradient
    shrinks ~0.41x per layer, to ~6e-9 of the last layer's at the first (measured)."""
    return _trainer(_mlp(nn.ReLU, 20), _classes())


@case(HEALTHY, evidence=_depth_ratio)
def relu20_kaiming() -> Setup:
    """Healthy. Kaiming-normal init (variance 2/fan_in, zero bias) keeps the ReLU stack's
    gradient within ~4x across 20 layers (measured dL/dz ratio ~0.26)."""
    return _trainer(_mlp(nn.ReLU, 20, init=_kaiming), _classes())


@case(EXPLODING, [ANYWHERE], also=(NONFINITE,), evidence=_param_rms)
def relu20_2x_kaiming() -> Setup:
    """Exploding. Twice the Kaiming std doubles activations and gradients per layer: the
    backward gradient grows ~1e5x to the first layer and parameter-gradient RMS reaches 1e4 to
    4e5 (measured), largest at the output layer, whose input activations exploded forward.
    Every layer's init is the cause, so any layer is the right place. SGD diverges to NaN."""
    return _trainer(_mlp(nn.ReLU, 20, init=lambda m: _kaiming(m, 2.0)), _classes())


@case(HEALTHY, evidence=_depth_ratio)
def residual20_default() -> Setup:
    """Healthy. A residual MLP (20 blocks, default init, no normalisation): the identity path
    carries the gradient to the stem undiminished."""
    return _trainer(ResidualMLP(20), _classes())


@case(EXPLODING, ["stem", "blocks"], also=(NONFINITE,), evidence=_param_rms)
def residual50_kaiming_nonorm() -> Setup:
    """Exploding. Kaiming-initialised residual branches without normalisation double the
    stream's variance per block (x + f(x) with Var f(x) ~ Var x): over 50 blocks activations and
    gradients grow ~2^25 (why ResNets need BatchNorm or Fixup-style init); the blocks are the
    place, not the head whose gradient is merely the largest."""
    return _trainer(ResidualMLP(50, kaiming=True), _classes(), lr=0.01)


@case(HEALTHY, evidence=_depth_ratio)
def layernorm_tanh20_default() -> Setup:
    """Healthy. LayerNorm after every Linear re-normalises the activations, so a default-init
    20-layer tanh stack keeps its gradient (measured ratio ~1)."""
    return _trainer(NormMLP(20, nn.LayerNorm, nn.Tanh), _classes())


@case(HEALTHY, evidence=_depth_ratio)
def batchnorm_relu20_default() -> Setup:
    """Healthy. BatchNorm after every Linear rescues the default-init 20-layer ReLU stack."""
    return _trainer(NormMLP(20, nn.BatchNorm1d, nn.ReLU), _classes())


# -- recurrent ---------------------------------------------------------------------------------------
_section("recurrent")


@case(HEALTHY, evidence=_time_ratio)
def rnn_tanh_short() -> Setup:
    """Healthy. A default-init tanh RNN over 10 steps."""
    return _recurrent(nn.RNN, 10)


@case(VANISHING, ["rnn.weight_hh_l0", "rnn"], evidence=_time_ratio)
def rnn_tanh_long() -> Setup:
    """Vanishing through time. A default-init tanh RNN over 100 steps: the gradient reaching
    the first input is ~2e-26 of the last step's (measured); the parameter gradients look
    healthy because the last steps dominate them."""
    return _recurrent(nn.RNN, 100)


@case(EXPLODING, ["rnn.weight_hh_l0", "rnn"], also=(NONFINITE, DEAD), evidence=_time_ratio)
def rnn_tanh_long_large_init() -> Setup:
    """Exploding, though tanh is bounded. weight_hh x4 over 100 steps: the gradient grows ~6e8x
    back to the first step and weight_hh's gradient RMS is ~1e5 (measured). The first SGD step
    (lr 0.1) then makes the weights so large that tanh saturates to exactly +-1: the later steps'
    all-zero tanh gradients (dead units) are the explosion's aftermath, also accepted."""
    return _recurrent(nn.RNN, 100, hh_scale=4.0)


@case(EXPLODING, ["rnn.weight_hh_l0", "rnn"], evidence=_time_ratio)
def rnn_tanh_long_large_init_clipped() -> Setup:
    """Exploding. The same RNN with clip_grad_norm_(1.0): clipping bounds the update, not the
    backward, so every backward still computes the exploding gradient (and a diagnosis should
    still say so)."""
    return _recurrent(nn.RNN, 100, hh_scale=4.0, clip=1.0)


@case(EXPLODING, ["rnn.weight_hh_l0", "rnn"], also=(NONFINITE,), evidence=_time_ratio, steps=4)
def rnn_relu_long_large_init() -> Setup:
    """Exploding. A ReLU RNN with weight_hh x4 over 100 steps: activations and gradients grow
    geometrically through time (loss ~1e31, gradient at the first step ~1e30, measured), on the
    edge of float32's range; the first update turns everything into Inf/NaN."""
    return _recurrent(nn.RNN, 100, hh_scale=4.0, nonlinearity="relu")


@case(HEALTHY, evidence=_time_ratio)
def lstm_short() -> Setup:
    """Healthy. A default-init LSTM over 10 steps."""
    return _recurrent(nn.LSTM, 10)


@case(VANISHING, ["rnn.weight_hh_l0", "rnn"], evidence=_time_ratio)
def lstm_long_large_init() -> Setup:
    """Vanishing through time, not exploding: weight_hh x4 saturates the LSTM's gates, the
    gradient reaching the first step is ~6e-6 of the last step's (measured). On CPU the LSTM is
    one fused autograd node (mkldnn), so no tool sees inside the recurrence."""
    return _recurrent(nn.LSTM, 100, hh_scale=4.0)


@case(HEALTHY, evidence=_time_ratio)
def gru_short() -> Setup:
    """Healthy. A default-init GRU over 10 steps."""
    return _recurrent(nn.GRU, 10)


@case(HEALTHY, evidence=_time_ratio)
def gru_long_large_init() -> Setup:
    """Healthy, surprisingly: weight_hh x4 over 100 steps leaves the GRU's gradient at the
    first step ~3e-3 of the last step's (measured), where a default-init tanh RNN over the same
    100 steps has ~2e-26: the update gate keeps a path open."""
    return _recurrent(nn.GRU, 100, hh_scale=4.0)


class CellLoop(nn.Module):
    """An LSTMCell unrolled in Python from a zero state."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(16, 32)
        self.head = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = c = x.new_zeros(x.shape[0], 32)
        for t in range(x.shape[1]):
            h, c = self.cell(x[:, t], (h, c))
        return self.head(h)


@case(HEALTHY, evidence=_time_ratio)
def lstmcell_zero_state() -> Setup:
    """Healthy. An LSTMCell loop from h = c = 0: the first step's weight_hh contribution is
    exactly zero (h0 = 0), which is arithmetic, not a dead unit."""
    return _trainer(CellLoop(), _sequences(length=12), F.mse_loss, lr=0.1)


class LinearScan(nn.Module):
    """A Mamba-style gated linear recurrence h_t = a * h_{t-1} + (1 - a) * B u_t from h_0 = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.in_proj = nn.Linear(16, 64)
        self.decay = nn.Parameter(torch.linspace(1.0, 4.0, 32))
        self.B = nn.Linear(32, 32, bias=False)
        self.out_proj = nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, gate = self.in_proj(x).chunk(2, dim=-1)
        a = torch.sigmoid(self.decay)
        h = x.new_zeros(x.shape[0], 32)
        ys = []
        for t in range(x.shape[1]):
            h = a * h + (1 - a) * self.B(u[:, t])
            ys.append(h * F.silu(gate[:, t]))
        return self.out_proj(torch.stack(ys, 1).mean(1))


@case(HEALTHY, evidence=_time_ratio)
def mamba_scan_zero_state() -> Setup:
    """Healthy. A gated linear scan from a zero state over 16 steps."""
    return _trainer(LinearScan(), _sequences(length=16), F.mse_loss, lr=0.1)


# -- optimisation over steps -------------------------------------------------------------------------
_section("optimisation")


@case(HEALTHY, loop=(EXPLODING, (ANYWHERE,)), also=(NONFINITE, DEAD), steps=12,
      evidence=_loss_curve(12), diverges=True)
def lr_too_high() -> Setup:
    """Healthy at step 1, exploding over steps. SGD with lr=1.5 on a 3-layer ReLU regressor
    (kaiming init): every step overshoots, the loss and the gradients grow geometrically
    (gradient RMS 0.4 -> 5e10 by step 4) until they overflow; on the way, a huge update pushes a
    ReLU layer off (dead units: accepted as aftermath, as is the NaN)."""
    model = _mlp(nn.ReLU, 2, d_out=1, init=_kaiming)
    return _trainer(model, _targets(), F.mse_loss, lr=1.5)


@case(HEALTHY, loop=(EXPLODING, (ANYWHERE,)), also=(NONFINITE, DEAD), steps=12,
      evidence=_loss_curve(12), diverges=True)
def lr_times_weight_decay_above_2() -> Setup:
    """Healthy at step 1, exploding over steps. SGD with lr=0.5 and weight_decay=5: each step
    multiplies every weight by 1 - lr x weight_decay = -1.5 before the gradient step, so the
    weights flip sign and grow 1.5x per step, the 3-layer ReLU classifier's logits ~3.4x, and
    loss and gradients grow geometrically (measured: loss 2.37 -> 4e22 by step 7, non-finite
    at step 8). The fix is lr x weight_decay well below 1 (or AdamW's decoupled decay)."""
    return _trainer(_mlp(nn.ReLU, 3, init=_kaiming), _classes(), lr=0.5, weight_decay=5.0)


@case(HEALTHY, loop=(EXPLODING, (ANYWHERE,)), steps=12, evidence=_loss_curve(12),
      diverges=True)
def adam_huge_lr_transformer() -> Setup:
    """Healthy at step 1, exploding over steps. Adam with lr=10 on a 2-layer pre-LN transformer
    encoder: the first update moves every weight by ~10 (Adam's step is lr-sized whatever the
    gradient), the loss jumps 0.69 -> 2.7e7 at step 2 and stays above 1e4 (measured over 60
    steps), gradient norms 1e5-1e8; LayerNorm and Adam's bounded steps keep it finite."""
    return _trainer(Encoder(True, layers=2), _sequences(length=12), F.mse_loss,
                    optimizer="adam", lr=10.0)


@case(HEALTHY, loop=(VANISHING, _first(3)), also=(DEAD,), steps=12,
      evidence=_after_steps(11, _depth_ratio))
def weight_decay_too_strong() -> Setup:
    """Healthy at step 1, vanishing over steps. SGD with weight_decay=5 and lr=0.1 halves every
    weight each step: after 12 steps the 6-layer net's weights are ~1e-3 of their init and the
    gradient reaching the first layer fades by orders of magnitude. On the way ReLU units die
    (measured: the exact-zero share of the weight gradients of layers 6, 8 and 10 rises from
    20%, 14%, 18% at step 1 to 84%, 88%, 94% by step 12), so dead is accepted as well."""
    return _trainer(_mlp(nn.ReLU, 6, init=_kaiming), _classes(), lr=0.1, weight_decay=5.0)


@case(HEALTHY, loop=(ACCUMULATED, (ANYWHERE,)), also=(EXPLODING, NONFINITE), steps=12,
      evidence=_loss_curve(12))
def forgotten_zero_grad() -> Setup:
    """Healthy at step 1, accumulated over steps: without optimizer.zero_grad() each step adds
    its gradient to the last, so p.grad after step k is the sum of k gradients and the
    effective learning rate grows with k."""
    return _trainer(_mlp(nn.ReLU, 3, init=_kaiming), _classes(), lr=0.05, zero_grad=False)


@case(HEALTHY, steps=12, evidence=_loss_curve(12))
def gradient_accumulation_intended() -> Setup:
    """Healthy. Gradient accumulation done on purpose: the loss divided by 4, optimizer.step()
    and zero_grad() every 4th backward. p.grad grows within each group of 4, as intended; a rule
    for forgotten zero_grad() must not fire here."""
    return _trainer(_mlp(nn.ReLU, 3, init=_kaiming), _classes(), lr=0.05, accumulate=4)


@case(HEALTHY, loop=(DEAD, ("0", "1", "2", "3")), steps=12, evidence=_after_steps(11, _zero_share))
def adam_lr_too_high_relu() -> Setup:
    """Healthy at step 1, dead over steps. Adam with lr=0.5 on a ReLU MLP throws the
    pre-activations of whole layers negative within a few steps: their units never fire
    again and the layers below get all-zero gradients."""
    return _trainer(_mlp(nn.ReLU, 3, init=_kaiming), _classes(), lr=0.5, optimizer="adam")


# -- non-finite values -------------------------------------------------------------------------------
_section("nonfinite")


class Net3(nn.Module):
    """fc1 -> relu -> fc2 -> relu -> fc3, with a hook between fc2 and fc3 for a pathology."""

    def __init__(self, mid: Callable[[torch.Tensor], torch.Tensor] | None = None, d_out: int = 10):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, d_out)
        self.mid = mid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc2(F.relu(self.fc1(x))))
        if self.mid is not None:
            h = self.mid(h)
        return self.fc3(h)


class LogOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net3(d_out=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(F.relu(self.net(x)))  # log(0) where the ReLU is off


@case(NONFINITE, ["op:log"], born="forward", steps=3)
def log_of_zero() -> Setup:
    """NaN/Inf born in forward: log(relu(out)) is -inf wherever the ReLU is off, so the loss
    is Inf; backward of log divides by zero."""
    return _trainer(LogOutput(), _targets(), F.mse_loss)


class HandLayerNorm(nn.Module):
    """(x - mean) / std, with no epsilon."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - x.mean(-1, keepdim=True)) / x.std(-1, keepdim=True)


class NormFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = HandLayerNorm()
        self.net = Net3()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


def _with_constant_row(batch: Callable[[int], tuple]) -> Callable[[int], tuple]:
    def make(step: int) -> tuple:
        x, y = batch(step)
        x = x.clone()
        x[0] = 0.0  # a padding row
        return x, y

    return make


@case(NONFINITE, ["norm", "op:div"], born="forward", steps=3)
def layernorm_constant_row() -> Setup:
    """NaN born in forward: a hand-written layer norm without epsilon on a constant (all-zero
    padding) input row computes 0/0 in module norm; the loss is NaN before any backward runs.
    The norm has no parameters and its input needs no grad, so its ops are not in the autograd
    graph: the NaN enters the graph at fc1, but it was born in norm."""
    return _trainer(NormFirst(), _with_constant_row(_classes()))


class PaddedTokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, 32, padding_idx=0)  # the padding row is all zeros
        self.norm = HandLayerNorm()
        self.head = nn.Linear(32, 10)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.embed(idx)).mean(1))


def _padded_tokens(step: int) -> tuple:
    g = torch.Generator().manual_seed(9000 + step)
    idx = torch.randint(1, 64, (8, 12), generator=g)
    idx[:, 9:] = 0  # padding
    return idx, torch.randint(0, 10, (8,), generator=g)


@case(NONFINITE, ["norm", "op:div"], born="forward", steps=3)
def layernorm_padding_embedding() -> Setup:
    """NaN born in forward: the same hand-written layer norm on token embeddings, where the
    padding token's embedding (padding_idx) is all zeros: 0/0 at op div in module norm, inside
    the autograd graph this time."""
    return _trainer(PaddedTokens(), _padded_tokens)


class WhereSqrt(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(torch.where(h > 0, h.sqrt(), torch.zeros_like(h)))


@case(NONFINITE, ["op:sqrt"], born="backward", steps=3)
def sqrt_under_where() -> Setup:
    """NaN born in backward: torch.where(h > 0, h.sqrt(), 0) is finite, but sqrt was evaluated
    on the negatives too; its derivative there is NaN and 0 * NaN = NaN."""
    return _trainer(WhereSqrt(), _classes())


class PairDistance(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(32, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.enc(x), self.enc(x.roll(1, 0))
        return (a - b).norm(dim=-1)


class PairDistanceByHand(PairDistance):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.enc(x), self.enc(x.roll(1, 0))
        return ((a - b) ** 2).sum(-1).sqrt()


def _duplicated_pairs(step: int) -> tuple:
    x, _ = _classes()(step)
    x = x.clone()
    x[1] = x[0]  # a pair of identical samples: distance exactly 0
    return x, torch.ones(x.shape[0])


@case(HEALTHY)
def norm_of_zero_distance() -> Setup:
    """Healthy, surprisingly: the distance ||a - b|| of an identical pair is 0, and its
    derivative (a - b) / ||a - b|| would be 0/0, but PyTorch's norm backward defines it as 0
    there (a subgradient), so nothing is NaN (measured)."""
    return _trainer(PairDistance(), _duplicated_pairs, F.mse_loss)


@case(NONFINITE, ["op:sqrt"], born="backward", steps=3)
def sqrt_distance_of_identical_pair() -> Setup:
    """NaN born in backward: the same distance written as sqrt(((a - b) ** 2).sum()) is 0 for an
    identical pair; sqrt's derivative there is Inf and pow's is 0, so backward computes 0 * Inf."""
    return _trainer(PairDistanceByHand(), _duplicated_pairs, F.mse_loss)


class MaskedPow(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        h = h * (h > 0).float()  # a ReLU written as a multiplication by its mask
        return self.fc2(h.pow(0.5))


@case(NONFINITE, ["op:pow"], born="backward", steps=3)
def pow_half_at_zero() -> Setup:
    """NaN born in backward: (h * (h > 0)) ** 0.5 is 0 where the mask is off; d/dx x^0.5 is Inf
    at 0, and the mask multiplication's backward turns Inf * 0 into NaN, which reaches fc1."""
    return _trainer(MaskedPow(), _classes())


@case(HEALTHY, also=(NONFINITE,), steps=3)
def pow_half_after_relu() -> Setup:
    """Healthy, surprisingly, or at least harmless: relu(h) ** 0.5 has an Inf derivative where
    the ReLU is off, but ReLU's backward selects (where(h > 0, g, 0)) instead of multiplying,
    so the Inf never reaches a parameter: every parameter gradient is finite (measured). A
    warning about the Inf in the intermediate gradient is accepted (also), not required."""
    return _trainer(Net3(mid=lambda h: h.pow(0.5)), _classes())


def _softmax_by_hand(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    e = torch.exp(logits * 1000)  # a temperature of 1e-3, without subtracting the max
    return -torch.log(e / e.sum(-1, keepdim=True)).gather(1, y[:, None]).mean()


@case(NONFINITE, ["op:exp"], born="forward", steps=3)
def softmax_by_hand_overflow() -> Setup:
    """Inf/NaN born in forward: a softmax written as exp(z / T) / sum(exp(z / T)) with T = 1e-3
    and no max subtraction overflows exp (z / T > 88) to Inf, and Inf / Inf is NaN."""
    return _trainer(Net3(), _classes(), _softmax_by_hand)


def _poisoned(batch: Callable[[int], tuple], value: float) -> Callable[[int], tuple]:
    def make(step: int) -> tuple:
        x, y = batch(step)
        x = x.clone()
        x[3, 5] = value
        return x, y

    return make


@case(NONFINITE, ["fc1"], born="data", steps=3)
def nan_in_data() -> Setup:
    """NaN from the data: one NaN in the input batch; fc1 is where it enters the model."""
    return _trainer(Net3(), _poisoned(_classes(), float("nan")))


@case(NONFINITE, ["fc1"], born="data", steps=3)
def inf_in_data() -> Setup:
    """Inf/NaN from the data: one Inf in the input batch; fc1 turns it into Inf and the loss's
    softmax into NaN."""
    return _trainer(Net3(), _poisoned(_classes(), float("inf")))


@case(NONFINITE, ["fc2.weight", "fc2"], born="parameters", steps=3)
def nan_in_parameters() -> Setup:
    """NaN from the parameters: one NaN in fc2.weight (a corrupt checkpoint, an earlier bad
    step)."""
    model = Net3()
    with torch.no_grad():
        model.fc2.weight[7, 3] = float("nan")
    return _trainer(model, _classes())


def _log_softmax_by_hand(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -torch.log(torch.softmax(logits * 1e4, -1)).gather(1, y[:, None]).mean()


@case(NONFINITE, ["op:log", "op:softmax"], born="forward", steps=3)
def saturated_softmax_log() -> Setup:
    """Inf born in forward: logits x 1e4 saturate softmax to exact 0 for every class but the
    largest, and log(softmax(.)) written by hand is -inf there (F.cross_entropy would not
    be)."""
    return _trainer(Net3(), _classes(), _log_softmax_by_hand)


# -- saturation ------------------------------------------------------------------------------------
_section("saturation")


class Attention(nn.Module):
    """One attention layer over 8 tokens with a scale on the scores."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.out = nn.Linear(16, 10)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.view(x.shape[0], 8, 16)
        s = self.q(x) @ self.k(x).transpose(1, 2) * self.scale
        return self.out((torch.softmax(s, -1) @ self.v(x)).mean(1))


@case(VANISHING, ["q", "k"], also=(DEAD,), evidence=_param_rms)
def attention_scores_x1e4() -> Setup:
    """Vanishing at q and k. Scores x 1e4 make every softmax row one-hot; the softmax Jacobian
    p (delta - p) is then 0, so q and k get (numerically) no gradient while v and out do."""
    return _trainer(Attention(1e4), _classes(d_in=128))


@case(HEALTHY, evidence=_param_rms)
def attention_scaled() -> Setup:
    """Healthy. The same layer with the usual 1/sqrt(d) scale."""
    return _trainer(Attention(0.25), _classes(d_in=128))


# -- dead units and unreachable parameters -----------------------------------------------------------
_section("dead / unreachable")


class DeadMiddle(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        self.act1, self.act2 = nn.ReLU(), nn.ReLU()
        with torch.no_grad():
            self.fc2.bias.fill_(-10.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act2(self.fc2(self.act1(self.fc1(x)))))


@case(DEAD, ["act2", "fc2"], evidence=_zero_share)
def dead_relu_negative_bias() -> Setup:
    """Dead. fc2.bias = -10 turns every unit of act2 off for every input: fc1 and fc2 get
    all-zero gradients, fc3.weight too (its input is all zeros)."""
    return _trainer(DeadMiddle(), _classes())


class WithAux(nn.Module):
    def __init__(self, detach: bool) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(32, 64), nn.Linear(64, 10)
        self.branch = nn.Linear(32, 64)
        self.aux = nn.Linear(64, 10)
        self.detach = detach

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.body(x))
        if self.detach:
            h = h + self.branch(x).detach()  # the branch is cut off from the loss
        else:
            h = h + F.relu(self.branch(x))
        return self.head(h)  # self.aux is never called


@case(UNREACHABLE, ["aux"])
def never_called_layer() -> Setup:
    """Unreachable. aux is registered but never called in forward."""
    return _trainer(WithAux(detach=False), _classes())


@case(UNREACHABLE, ["branch", "aux"])
def detached_branch() -> Setup:
    """Unreachable. branch's output is .detach()ed before it joins (and aux is never called)."""
    return _trainer(WithAux(detach=True), _classes())


class Backbone(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = _mlp(nn.ReLU, 3, d_out=64, init=_kaiming)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.relu(self.backbone(x)))


class NoGradEncoder(Backbone):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # meant for evaluation, left in the training path
            h = F.relu(self.backbone(x))
        return self.head(h)


@case(UNREACHABLE, ["backbone"])
def backbone_under_no_grad() -> Setup:
    """Unreachable. The backbone runs under torch.no_grad() (left over from evaluation code)
    while its parameters still require grad: they get no gradient and never learn."""
    return _trainer(NoGradEncoder(), _classes())


@case(HEALTHY)
def frozen_backbone() -> Setup:
    """Healthy. A backbone frozen with requires_grad=False (fine-tuning the head): frozen is
    intended, not unreachable."""
    model = Backbone()
    model.backbone.requires_grad_(False)
    return _trainer(model, _classes())


@case(HEALTHY, info=("head",), evidence=_zero_share)
def zero_init_head() -> Setup:
    """Healthy at step 1, but worth one piece of information naming the head. A zero-initialised
    classification head (a common recipe) sends exactly zero gradient to the backbone at step 1
    (W^T g = 0); the head learns, and from step 2 on the backbone does too."""
    model = Backbone()
    nn.init.zeros_(model.head.weight)
    nn.init.zeros_(model.head.bias)
    return _trainer(model, _classes())


class SoftmaxSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = Net3()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), -1).sum()


@case(HEALTHY, evidence=_param_rms)
def softmax_sum() -> Setup:
    """Healthy: softmax(z).sum() is 1 for every z, so its gradient is exactly zero by
    mathematics (numerically ~1e-9). A constant loss is a bug in the objective, not a gradient
    pathology of the network."""
    return _trainer(SoftmaxSum(), _classes(), lambda out, _y: out)


# -- convolutions and normalisation -----------------------------------------------------------------
_section("cnn / batchnorm")


class SmallCNN(nn.Module):
    def __init__(self, bn: bool = True, bias_before_bn: bool = False, pool: str = "max") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=bias_before_bn or not bn)
        self.bn1 = nn.BatchNorm2d(16) if bn else nn.Identity()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=bias_before_bn or not bn)
        self.bn2 = nn.BatchNorm2d(32) if bn else nn.Identity()
        self.pool = nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2)
        self.fc = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        return self.fc(x.flatten(1))


@case(HEALTHY)
def cnn_bn() -> Setup:
    """Healthy. conv-BN-ReLU-pool x2 and a linear head."""
    return _trainer(SmallCNN(), _images(), lr=0.01)


@case(HEALTHY, evidence=_zero_share)
def relu_maxpool() -> Setup:
    """Healthy. ReLU followed by 2x2 max-pool, no BatchNorm: max-pool sends gradient to one
    position in four and ReLU zeroes the rest of its off units, so most activation-gradient
    values are exact zeros; that is routing, not death."""
    return _trainer(SmallCNN(bn=False), _images(), lr=0.01)


@case(HEALTHY, evidence=_param_rms)
def bias_before_batchnorm() -> Setup:
    """Healthy (issue 17, class 2). A conv bias right before BatchNorm is cancelled by the mean
    subtraction: its gradient is exactly zero by mathematics (numerically ~1e-9). Wasteful, not
    a pathology."""
    return _trainer(SmallCNN(bias_before_bn=True), _images(), lr=0.01)


@case(HEALTHY)
def batchnorm_batch1_train() -> Setup:
    """Healthy. BatchNorm2d in train mode on a batch of 1: the statistics are taken over the
    16x16 positions, so it works (BatchNorm1d on a batch of 1 raises instead)."""
    return _trainer(SmallCNN(), _images(batch=1), lr=0.01)


@case(HEALTHY)
def batchnorm_eval_batch1() -> Setup:
    """Healthy. BatchNorm in eval mode (running statistics) on a batch of 1."""
    model = SmallCNN()
    model.eval()
    return _trainer(model, _images(batch=1), lr=0.01)


# -- mixed precision ---------------------------------------------------------------------------------
_section("precision")


def _small_loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """An auxiliary regression loss with a small weight (1e-4), averaged over 16,384 outputs."""
    return 1e-4 * F.mse_loss(out.float(), y)


def _wide_targets(step: int) -> tuple:
    g = torch.Generator().manual_seed(7000 + step)
    x = torch.randn(64, 32, generator=g)
    return x, 0.1 * torch.randn(64, 256, generator=g)


def _precision_model() -> nn.Module:
    return _mlp(nn.ReLU, 8, width=128, d_out=256, init=_kaiming)


def _precision(amp: torch.dtype, scaler: bool = False) -> Setup:
    # Adam: the update does not depend on the gradient's scale, so float32 learns from these
    # small gradients and only an underflow stops it.
    return _trainer(_precision_model(), _wide_targets, _small_loss, amp=amp, scaler=scaler,
                    optimizer="adam", lr=1e-3)


@case(UNDERFLOW, [ANYWHERE], evidence=_underflow, also=(VANISHING, DEAD))
def fp16_no_scaler() -> Setup:
    """Underflow. fp16 autocast without a GradScaler: the loss's gradient (~1e-4 x 2 err /
    16384 ~ 1e-9 per output) is below float16's smallest subnormal (6e-8) and flushes to zero
    as it enters the float16 layers: every weight gradient is 100% exact zeros, where float32
    has 0-25% (the ReLU zeros) and RMS ~1e-7 (measured). Every layer is the right place; a
    diagnosis of vanishing or of all-zero gradients is accepted as half right."""
    return _precision(torch.float16)


@case(HEALTHY, evidence=_param_rms)
def fp16_grad_scaler() -> Setup:
    """Healthy. The same with GradScaler (65536x loss scale): nothing underflows, and the
    scaled gradients are 65536x the true ones by design."""
    return _precision(torch.float16, scaler=True)


@case(HEALTHY, evidence=_param_rms)
def bf16_autocast() -> Setup:
    """Healthy. bfloat16 has float32's exponent range: the same small gradients (RMS ~1e-7)
    do not underflow."""
    return _precision(torch.bfloat16)


def _large_targets(step: int) -> tuple:
    g = torch.Generator().manual_seed(8000 + step)
    return torch.randn(8, 32, generator=g), 2 + torch.randn(8, 1, generator=g)


def _skipped_steps(n: int) -> Callable[[Setup], str]:
    def measure(s: Setup) -> str:
        skipped, scales = 0, []
        for i in range(n):
            s.forward(i).backward()
            scales.append(s.scale())
            skipped += not all(torch.isfinite(p.grad).all() for p in s.model.parameters())
            s.update()
        return (f"{skipped} of {n} steps had Inf gradients and were skipped; scale "
                f"{scales[0]:g} -> {scales[-1]:g}")

    return measure


@case(HEALTHY, steps=8, evidence=_skipped_steps(8))
def fp16_grad_scaler_overflow_skipped() -> Setup:
    """Healthy, by GradScaler's design. Targets ~2 make some scaled activation gradients exceed
    float16's 65504 at the initial 65536 scale, so they overflow to Inf in backward; GradScaler
    finds the Inf, skips the step and halves the scale, and after 4 skipped steps training goes
    on (measured). Every mixed-precision run starts like this; it is not a NaN to hunt."""
    return _trainer(_mlp(nn.ReLU, 3, d_out=1, init=_kaiming), _large_targets, F.mse_loss,
                    amp=torch.float16, scaler=True, lr=1e-3, optimizer="adam")


# -- architectures at init ---------------------------------------------------------------------------
_section("architectures")


_ADAM = {"optimizer": "adam", "lr": 1e-3}  # how the architectures below are trained


class Encoder(nn.Module):
    def __init__(self, norm_first: bool, layers: int = 6) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 64)
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.0, batch_first=True,
                                           norm_first=norm_first)
        final = nn.LayerNorm(64) if norm_first else None  # pre-LN stacks end with a norm
        self.encoder = nn.TransformerEncoder(layer, layers, norm=final, enable_nested_tensor=False)
        self.head = nn.Linear(64, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


@case(HEALTHY, evidence=_param_rms)
def transformer_pre_ln() -> Setup:
    """Healthy. A 6-layer pre-LN transformer encoder at init."""
    return _trainer(Encoder(True), _sequences(length=12), F.mse_loss, **_ADAM)


@case(HEALTHY, evidence=_param_rms)
def transformer_post_ln() -> Setup:
    """Healthy at init. A 6-layer post-LN encoder: its gradients are larger near the output
    (why it needs warm-up), but within a small factor at this depth."""
    return _trainer(Encoder(False), _sequences(length=12), F.mse_loss, **_ADAM)


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, *, bias: bool = True, rope: bool = False) -> None:
        super().__init__()
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=bias), nn.Linear(d, d, bias=bias)
        self.heads, self.rope, self.causal = heads, rope, True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in self.qkv(x).chunk(3, -1))
        if self.rope:
            q, k = _rope(q), _rope(k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


def _rope(x: torch.Tensor) -> torch.Tensor:
    t, h = x.shape[-2], x.shape[-1] // 2
    freq = 10000 ** (-torch.arange(h, dtype=x.dtype) / h)
    ang = torch.arange(t, dtype=x.dtype)[:, None] * freq
    cos, sin = ang.cos(), ang.sin()
    x1, x2 = x[..., :h], x[..., h:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class GPT2Block(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln_1, self.attn, self.ln_2 = nn.LayerNorm(d), CausalSelfAttention(d, 4), nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(approximate="tanh"), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2Like(nn.Module):
    def __init__(self, vocab: int = 128, d: int = 64, layers: int = 4, length: int = 16) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(length, d)
        self.h = nn.ModuleList(GPT2Block(d) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # tied head


@case(HEALTHY, evidence=_param_rms)
def gpt2_like() -> Setup:
    """Healthy. A 4-layer GPT-2-style LM (pre-LN, GELU, tied embeddings, std 0.02 init)."""
    return _trainer(GPT2Like(), _tokens(), _lm_loss, **_ADAM)


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d, hidden, bias=False)
        self.up_proj = nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.input_layernorm, self.post_attention_layernorm = RMSNorm(d), RMSNorm(d)
        self.self_attn = CausalSelfAttention(d, 4, bias=False, rope=True)
        self.mlp = SwiGLU(d, 176)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaLike(nn.Module):
    def __init__(self, vocab: int = 128, d: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(LlamaBlock(d) for _ in range(layers))
        self.norm, self.lm_head = RMSNorm(d), nn.Linear(d, vocab, bias=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


@case(HEALTHY, evidence=_param_rms)
def llama_like() -> Setup:
    """Healthy. A 4-layer Llama-style LM (RMSNorm, RoPE, SwiGLU, no biases, std 0.02 init)."""
    return _trainer(LlamaLike(), _tokens(), _lm_loss, **_ADAM)


class BertLike(nn.Module):
    """Post-LN encoder with token, position and segment embeddings and an MLM-style head."""

    def __init__(self, vocab: int = 128, d: int = 64, layers: int = 4, length: int = 16) -> None:
        super().__init__()
        self.word_embeddings, self.position_embeddings = nn.Embedding(vocab, d), nn.Embedding(length, d)
        self.token_type_embeddings = nn.Embedding(2, d)
        self.emb_norm = nn.LayerNorm(d)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.mlm = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, vocab))
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1])
        seg = (pos >= idx.shape[1] // 2).long()
        x = self.word_embeddings(idx) + self.position_embeddings(pos) + self.token_type_embeddings(seg)
        return self.mlm(self.encoder(self.emb_norm(x)))


@case(HEALTHY, evidence=_param_rms)
def bert_like() -> Setup:
    """Healthy. A 4-layer BERT-style post-LN encoder with an MLM head (std 0.02 init)."""
    return _trainer(BertLike(), _tokens(), _lm_loss, **_ADAM)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class ResNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 16, 1))
        self.layer2 = nn.Sequential(BasicBlock(16, 32, 2), BasicBlock(32, 32, 1))
        self.layer3 = nn.Sequential(BasicBlock(32, 64, 2), BasicBlock(64, 64, 1))
        self.fc = nn.Linear(64, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean((2, 3)))


@case(HEALTHY, evidence=_param_rms)
def resnet_like() -> Setup:
    """Healthy. A ResNet-style CNN (3 stages of 2 BasicBlocks with BatchNorm, Kaiming fan-out
    init) on 16x16 images."""
    return _trainer(ResNetLike(), _images(), **_ADAM)


class ViTLike(nn.Module):
    def __init__(self, d: int = 64, layers: int = 4) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, 4, 4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.randn(1, 17, d) * 0.02)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


@case(HEALTHY, evidence=_param_rms)
def vit_like() -> Setup:
    """Healthy. A 4-layer ViT-style classifier (4x4 patches, class token, pre-LN)."""
    return _trainer(ViTLike(), _images(), **_ADAM)


class ConvNeXtBlock(nn.Module):
    def __init__(self, d: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(d, d, 7, padding=3, groups=d)
        self.norm = nn.LayerNorm(d)
        self.pwconv1, self.pwconv2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        self.gamma = nn.Parameter(torch.full((d,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.dwconv(x).permute(0, 2, 3, 1)
        h = self.pwconv2(F.gelu(self.pwconv1(self.norm(h)))) * self.gamma
        return x + h.permute(0, 3, 1, 2)


class ConvNeXtLike(nn.Module):
    def __init__(self, d: int = 32, blocks: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, d, 4, 4)
        self.stages = nn.Sequential(*(ConvNeXtBlock(d, 1e-6) for _ in range(blocks)))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.stages(self.stem(x)).mean((2, 3))))


@case(HEALTHY, evidence=_param_rms)
def convnext_like() -> Setup:
    """Healthy at init, by design. ConvNeXt's layer scale (gamma = 1e-6) multiplies every
    block's branch, so the branch weights' gradients are ~1e-6 of the stem's: the blocks start
    as identities and gamma (with a healthy gradient) grows first."""
    return _trainer(ConvNeXtLike(), _images(), **_ADAM)


class PackedLSTM(nn.Module):
    """Token sequences of different lengths through a packed nn.LSTM from a zero state."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(64, 16, padding_idx=0)
        self.lstm = nn.LSTM(16, 32, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        idx, lengths = batch
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(idx), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, (h, _) = self.lstm(packed)
        return self.head(h[-1])


def _ragged_tokens(step: int) -> tuple:
    g = torch.Generator().manual_seed(9500 + step)
    lengths = torch.randint(3, 13, (8,), generator=g)
    idx = torch.randint(1, 64, (8, 12), generator=g)
    idx[torch.arange(12)[None, :] >= lengths[:, None]] = 0  # padding after each length
    return (idx, lengths), idx[:, 0] % 10


@case(HEALTHY, evidence=_param_rms)
def packed_lstm() -> Setup:
    """Healthy. A packed nn.LSTM over ragged sequences from a zero initial state: the forget
    gate times the zero c0 has a zero derivative by construction, the padding embedding row gets
    no gradient (padding_idx), and neither is a fault."""
    return _trainer(PackedLSTM(), _ragged_tokens, **_ADAM)


class MaskRCNNLike(nn.Module):
    """A two-stage detector's shape in plain PyTorch: a BatchNorm backbone, an RPN head
    (objectness and box deltas per anchor), region features cropped from fixed proposals, and
    box (class + box) and mask heads, as Mask R-CNN's; its loss sums five terms, and the
    box-regression and mask terms see only the positive regions (none in some batches)."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.rpn_conv = nn.Conv2d(32, 32, 3, 1, 1)
        self.rpn_logits = nn.Conv2d(32, 3, 1)  # 3 anchors per position
        self.rpn_deltas = nn.Conv2d(32, 12, 1)
        self.box_head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU())
        self.cls_score = nn.Linear(64, classes + 1)
        self.bbox_pred = nn.Linear(64, 4 * (classes + 1))
        self.mask_head = nn.Sequential(
            nn.Conv2d(32, 16, 3, 1, 1), nn.ReLU(), nn.ConvTranspose2d(16, 16, 2, 2), nn.ReLU(),
            nn.Conv2d(16, classes, 1),
        )

    def forward(self, x: torch.Tensor) -> tuple:
        f = self.backbone(x)  # (B, 32, 8, 8)
        r = F.relu(self.rpn_conv(f))
        # Four fixed proposals per image (the quadrants), pooled to 4x4 as RoIAlign would.
        rois = torch.cat([f[:, :, i:i + 4, j:j + 4] for i in (0, 4) for j in (0, 4)])
        h = self.box_head(rois)
        return self.rpn_logits(r), self.rpn_deltas(r), self.cls_score(h), self.bbox_pred(h), \
            self.mask_head(rois)


def _detection_batches(step: int) -> tuple:
    g = torch.Generator().manual_seed(9700 + step)
    x = torch.randn(4, 3, 16, 16, generator=g)
    objectness = (torch.rand(4, 3, 8, 8, generator=g) < 0.1).float()
    labels = torch.randint(0, 6, (16,), generator=g)
    if step % 3 == 0:
        labels.zero_()  # every region background: no positive, no box or mask loss
    boxes = torch.randn(16, 4, generator=g)
    masks = (torch.rand(16, 8, 8, generator=g) < 0.5).float()
    return x, (objectness, labels, boxes, masks)


def _detection_loss(out: tuple, y: tuple) -> torch.Tensor:
    rpn_logits, rpn_deltas, cls, bbox, mask = out
    objectness, labels, boxes, masks = y
    pos = labels > 0
    loss = F.binary_cross_entropy_with_logits(rpn_logits, objectness)
    loss = loss + 0.1 * rpn_deltas.square().mean()  # no box targets: keep the deltas small
    loss = loss + F.cross_entropy(cls, labels)
    # As torchvision's fastrcnn_loss and maskrcnn_loss: summed over the positives and divided
    # by the regions, and 0 * the logits without a positive, so the graph always reaches both.
    deltas = bbox.view(-1, bbox.shape[1] // 4, 4)[pos, labels[pos]]
    loss = loss + F.smooth_l1_loss(deltas, boxes[pos], reduction="sum") / labels.numel()
    if pos.any():
        loss = loss + F.binary_cross_entropy_with_logits(mask[pos, labels[pos] - 1], masks[pos])
    else:
        loss = loss + mask.sum() * 0
    return loss


@case(HEALTHY, evidence=_param_rms)
def mask_rcnn_like() -> Setup:
    """Healthy. A Mask R-CNN-shaped detector (BatchNorm backbone, RPN, box and mask heads) at
    random init; every third batch has no positive region, so the box-regression and mask heads
    get no gradient from that batch's loss (not dead: idle)."""
    return _trainer(MaskRCNNLike(), _detection_batches, _detection_loss, **_ADAM)


# -- the peer suite's classes (issue 17): one set-up per class of false alarm or silent miss ------
_section("peer suite")


class Siamese(nn.Module):
    """One encoder applied to both halves of a pair; the output is their distance."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.norm(self.enc(x) - self.enc(x.roll(1, 0)), dim=-1)


def _pairs(step: int) -> tuple:
    x, _ = _classes()(step)
    return x, torch.ones(x.shape[0])


@case(HEALTHY, evidence=_zero_share)
def siamese_bias_cancels() -> Setup:
    """Healthy (issue 17, class 1). norm(f(x1) - f(x2)): the encoder's last bias is added to
    both sides and cancels, so its gradient is exactly zero (measured) while every other
    parameter's is healthy; zero is "no gradient here", not a magnitude for a depth trend."""
    return _trainer(Siamese(), _pairs, F.mse_loss)


class TinyScaled(nn.Module):
    """Two heads summed, one multiplied by a constant 1e-23."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(32, 10), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a(x) * 1e-23 + self.b(x)


@case(VANISHING, ["a"], evidence=_param_rms)
def tiny_scaled_parameter() -> Setup:
    """Vanishing at a (issue 17, class 3). A head scaled by a constant 1e-23 gets a gradient
    1e-23 of its twin's (RMS 6.5e-25, measured): a's float32 sum of squares underflows, and it
    never learns (SGD moves it by ~1e-24 per step). No layer-scale design or rounding residual
    is that small."""
    return _trainer(TinyScaled(), _classes())


class ReluGlobalMax(nn.Module):
    """A 1x1 conv, ReLU, then a max over the whole length."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.head = nn.Conv1d(3, 16, 1), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).max(dim=-1)[0])


def _signals(step: int) -> tuple:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(8, 3, 128, generator=g)
    return x, x.mean(-1).argmax(-1)


@case(HEALTHY, evidence=_zero_share)
def relu_global_max() -> Setup:
    """Healthy (issue 17, class 4). ReLU followed by a max over 128 positions: the max sends
    gradient to one position in 128, so the ReLU receives ~99% zeros and passes them on; the
    zeros are the pooling's routing, not dead units."""
    return _trainer(ReluGlobalMax(), _signals)


class TanhRecurrence(nn.Module):
    """h = tanh(A h + B u_t) unrolled in Python from h = 0."""

    def __init__(self) -> None:
        super().__init__()
        self.A, self.B, self.head = nn.Linear(32, 32), nn.Linear(16, 32), nn.Linear(32, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.new_zeros(x.shape[0], 32)
        for t in range(x.shape[1]):
            h = torch.tanh(self.A(h) + self.B(x[:, t]))
        return self.head(h)


@case(HEALTHY, evidence=_time_ratio)
def tanh_recurrence_zero_state() -> Setup:
    """Healthy (issue 17, class 5). A hand-unrolled tanh recurrence from h = 0: the first
    step's matmul A(h0) sends back an all-zero gradient to A's weight (h0 = 0), while A learns
    from every later step."""
    return _trainer(TanhRecurrence(), _sequences(length=12), F.mse_loss, lr=0.1)


class LogThenSin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(torch.log(torch.sigmoid(self.fc(x)) - 2))


@case(NONFINITE, ["op:log"], born="forward", steps=3)
def log_of_negative() -> Setup:
    """NaN born in forward (issue 17, class 6). log(sigmoid(z) - 2) takes the log of a number
    in (-2, -1): NaN in forward, at log; sin after it only reads the NaN and must not be
    blamed."""
    return _trainer(LogThenSin(), _classes())


_section("optimisation")


@case(HEALTHY, loop=(EXPLODING, (ANYWHERE,)), also=(NONFINITE, DEAD), steps=50,
      evidence=_loss_curve(50), diverges=True)
def momentum_lr_growing() -> Setup:
    """Healthy at step 1, exploding over steps (issue 12). SGD with momentum 0.9 on a 2-layer
    GELU regressor, its learning rate growing 10% a step from 0.03 (a warm-up with no end):
    momentum makes each step lr / (1 - momentum), 10x lr, so from lr ~0.2 on the updates
    overshoot and swing back, and the loss and gradient norm rise in a zigzag, one step up,
    the next down, before they blow up at once (measured: loss 0.412 at step 1, non-finite at
    step 49; per-step growth is seen only at step 48, the zigzag from step 31 at step 45)."""
    s = _trainer(_mlp(nn.GELU, 2, d_out=1, init=_kaiming), _targets(), F.mse_loss, lr=0.03,
                 momentum=0.9)
    step = s.update

    def update() -> None:
        step()
        for group in s.optimizer.param_groups:
            group["lr"] *= 1.1

    return replace(s, update=update)
