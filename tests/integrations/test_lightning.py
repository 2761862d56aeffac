"""GraphscopeCallback inside a real Lightning Trainer, on the CPU, a few steps each."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from graphscope.errors import NonFiniteGradientError, RunError  # noqa: E402
from graphscope.integrations.lightning import GraphscopeCallback  # noqa: E402
from graphscope.ranks import analyze_ranks, first_rank, nonfinite_birth  # noqa: E402
from graphscope.runs import open_run  # noqa: E402
from tests.processes import free_port, run_session  # noqa: E402


class Regressor(L.LightningModule):
    """A two-layer regressor; ``poison_at`` makes the loss NaN from that global step on;
    ``overflow_at`` multiplies it by 1e30 at that global step (finite in float32, but its
    gradients overflow float16 under a GradScaler's scale)."""

    def __init__(self, poison_at: int | None = None, overflow_at: int | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.poison_at = poison_at
        self.overflow_at = overflow_at

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if self.poison_at is not None and self.global_step >= self.poison_at:
            loss = loss * float("nan")
        if self.global_step == self.overflow_at:
            loss = loss * 1e30
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Oracle(L.Callback):
    """What Lightning itself hands the optimizer: per step, the losses backward starts from
    (divided by the accumulation; scaled under a GradScaler) and the gradients (unscaled)."""

    def __init__(self) -> None:
        self.losses: dict[int, list[float]] = {}
        self.grads: dict[int, dict[str, torch.Tensor]] = {}

    def on_before_backward(self, trainer, pl_module, loss):
        self.losses.setdefault(trainer.global_step + 1, []).append(float(loss.detach()))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.grads[trainer.global_step + 1] = {
            n: p.grad.detach().clone() for n, p in pl_module.named_parameters()}


def _fit(callbacks, *, steps=6, accumulate=2, seed=0, poison_at=None, overflow_at=None, **trainer_kw):
    torch.manual_seed(seed)
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    model = Regressor(poison_at, overflow_at)
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", accumulate_grad_batches=accumulate, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=callbacks, **trainer_kw)
    trainer.fit(model, DataLoader(data, batch_size=4))
    return trainer, model


def _norms(grads: dict[str, torch.Tensor], names: list[str]) -> list[float]:
    return [float(grads[n].norm()) for n in names]


def test_records_each_optimizer_step_at_the_global_step(tmp_path):
    """Under accumulation each optimizer step is one row at Lightning's global step, holding
    the accumulated gradients and the sum of the micro-batch losses; captures every `every`."""
    oracle = Oracle()
    cb = GraphscopeCallback(tmp_path / "run", every=3)
    trainer, _ = _fit([cb, oracle])
    assert trainer.global_step == 6
    with open_run(tmp_path / "run") as run:
        steps = run.steps()
        names = [p.name for p in run.params()]
        series = run.param_series()
        assert steps.step.tolist() == [1, 2, 3, 4, 5, 6]
        assert [c.step for c in run.captures()] == [1, 4]
        assert sorted(run.updates()) == [1, 4]
        for i, step in enumerate(steps.step.tolist()):
            assert steps.loss[i] == pytest.approx(sum(oracle.losses[step]), rel=1e-6)
            assert series.norm[i].tolist() == pytest.approx(_norms(oracle.grads[step], names), rel=1e-6)
        assert steps.accumulating.tolist() == [0] * 6  # accumulating on purpose is not a forgotten zero_grad
        capture = run.capture(4)
        assert capture.meta["step"] == 4
        assert not capture.meta.get("accumulated_grad")  # the step's first micro-batch is captured
        assert (run.updates()[1] > 0).all()  # over the optimizer step, not between micro-batches
    assert cb.watch.steps == 12  # backward calls: two micro-batches per step
    assert not cb.watch.active


def test_gradients_bit_identical_with_and_without_the_callback(tmp_path):
    """The callback only reads: every step's gradients and the final weights are bit-identical."""
    plain, watched = Oracle(), Oracle()
    _, m0 = _fit([plain])
    _, m1 = _fit([watched, GraphscopeCallback(tmp_path / "run", every=2)])
    assert sorted(plain.grads) == sorted(watched.grads) == [1, 2, 3, 4, 5, 6]
    for step in plain.grads:
        for name, g in plain.grads[step].items():
            assert torch.equal(g, watched.grads[step][name]), (step, name)
    for (name, a), (_, b) in zip(m0.named_parameters(), m1.named_parameters()):
        assert torch.equal(a, b), name


def test_grad_scaler_scale_recorded_with_each_step(tmp_path):
    """Under 16-mixed with a GradScaler the scale is stored per step, and the stored numbers
    are the scaled loss and gradients: divided by it, they are what the optimizer got."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    oracle, full = Oracle(), Oracle()
    scaler = torch.amp.GradScaler("cpu")
    _fit([GraphscopeCallback(tmp_path / "run", every=3), oracle],
         plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    _fit([full], steps=1)  # the same first step in float32
    with open_run(tmp_path / "run") as run:
        steps = run.steps()
        names = [p.name for p in run.params()]
        series = run.param_series()
    assert steps.step.tolist() == [1, 2, 3, 4, 5, 6]
    assert all(s >= 2 and math.log2(s).is_integer() for s in steps.loss_scale)
    assert steps.loss_scale[0] == 65536.0  # the scaler's initial scale
    assert steps.loss[0] / 65536.0 == pytest.approx(sum(full.losses[1]), rel=1e-2)
    for i, step in enumerate(steps.step.tolist()):
        scale = steps.loss_scale[i]
        assert steps.loss[i] == pytest.approx(sum(oracle.losses[step]), rel=1e-6)
        if step in oracle.grads and math.isfinite(steps.grad_norm[i]):
            assert (series.norm[i] / scale).tolist() == pytest.approx(
                _norms(oracle.grads[step], names), rel=1e-5)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_on_the_cpu_is_bfloat16_autocast(tmp_path, precision):
    """Trainer(precision='16-mixed' or 'bf16-mixed') on the CPU runs bfloat16 autocast without a
    GradScaler (Lightning turns 16-mixed into bf16-mixed there, with a warning): no loss scale
    is recorded, the norms are those of the gradients the optimizer got (float32 parameters),
    and the capture shows the bfloat16 activations autocast made."""
    oracle = Oracle()
    cb = GraphscopeCallback(tmp_path / "run", every=3)
    if precision == "16-mixed":
        with pytest.warns(UserWarning, match="not supported on CPU"):
            trainer, _ = _fit([cb, oracle], precision=precision)
    else:
        trainer, _ = _fit([cb, oracle], precision=precision)
    assert trainer.precision == "bf16-mixed"
    with open_run(tmp_path / "run") as run:
        steps = run.steps()
        params = run.params()
        series = run.param_series()
        graph = run.capture(1)
    assert steps.step.tolist() == [1, 2, 3, 4, 5, 6]
    assert not np.isfinite(steps.loss_scale).any()
    assert {p.dtype for p in params} == {"float32"}
    names = [p.name for p in params]
    for i, step in enumerate(steps.step.tolist()):
        assert steps.loss[i] == pytest.approx(sum(oracle.losses[step]), rel=1e-6)
        assert series.norm[i].tolist() == pytest.approx(_norms(oracle.grads[step], names), rel=1e-6)
    linears = [n for n in graph.nodes if n.op == "AddmmBackward0"]
    assert len(linears) == 2 and {n.dtype for n in linears} == {"bfloat16"}


def test_bf16_true_records_bfloat16_parameters(tmp_path):
    """precision='bf16-true' (the weights themselves in bfloat16): the parameters are recorded
    as bfloat16 and their norms (taken in float32) equal torch's of the bfloat16 gradients."""
    oracle = Oracle()
    _fit([GraphscopeCallback(tmp_path / "run", every=3), oracle], precision="bf16-true")
    with open_run(tmp_path / "run") as run:
        params = run.params()
        series = run.param_series()
        steps = run.steps()
    assert {p.dtype for p in params} == {"bfloat16"}
    assert all(g.dtype == torch.bfloat16 for g in oracle.grads[1].values())
    for i, step in enumerate(steps.step.tolist()):
        want = [float(oracle.grads[step][p.name].norm(dtype=torch.float32)) for p in params]
        assert series.norm[i].tolist() == pytest.approx(want, rel=1e-6)


class Weights(L.Callback):
    """The first weight after each batch (with no accumulation: after its optimizer step)."""

    def __init__(self) -> None:
        self.after: dict[int, torch.Tensor] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after[trainer.global_step] = pl_module.net[0].weight.detach().clone()


@pytest.mark.parametrize("every", [1, 100])
def test_grad_scaler_overflow_recorded_as_a_skipped_step(tmp_path, every):
    """A GradScaler step whose float16 gradients overflow (finite loss, step 3) is recorded
    with its scale and its non-finite gradients, so the run's analysis names it a skipped
    step (information), not a NaN; on_nonfinite='raise' lets the fit go on, as the scaler
    does; the other steps, divided by their scale, are the gradients the optimizer got, and the
    export reports them so."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    from graphscope.export.metrics import run_metrics
    from graphscope.trends import analyze

    oracle, weights = Oracle(), Weights()
    scaler = torch.amp.GradScaler("cpu")
    _fit([GraphscopeCallback(tmp_path / "run", every=every, on_nonfinite="raise"), oracle, weights],
         accumulate=1, overflow_at=2, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    assert torch.equal(weights.after[2], weights.after[3])  # the scaler skipped step 3
    with open_run(tmp_path / "run") as run:
        steps = run.steps()
        names = [p.name for p in run.params()]
        series = run.param_series()
        findings = analyze(run)
        metrics = run_metrics(run)
    assert steps.step.tolist() == [1, 2, 3, 4, 5, 6]
    assert steps.loss_scale.tolist() == [65536.0] * 3 + [32768.0] * 3
    assert steps.nonfinite[2] > 0 and not steps.loss_nonfinite[2] and np.isfinite(steps.loss[2])
    skipped = [f for f in findings if f.kind == "skipped_steps"]
    assert [(f.step, f.last_step) for f in skipped] == [(3, 3)]
    assert not [f for f in findings if f.kind == "nonfinite"]
    exported = {step: value for step, _, value in metrics.scalars["grad_norm"]}
    assert sorted(exported) == [1, 2, 4, 5, 6]
    for i, step in enumerate(steps.step.tolist()):
        if step == 3:
            continue
        want = _norms(oracle.grads[step], names)
        assert (series.norm[i] / steps.loss_scale[i]).tolist() == pytest.approx(want, rel=1e-5)
        assert exported[step] == pytest.approx(math.sqrt(sum(w * w for w in want)), rel=1e-5)


def test_a_nan_after_a_skipped_overflow_still_stops_the_fit(tmp_path):
    """A real NaN (step 5) after a GradScaler overflow the scaler skipped (step 3) still
    stops the fit under on_nonfinite='raise', though neither step is a regular capture."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    with pytest.raises(NonFiniteGradientError) as info:
        _fit([GraphscopeCallback(tmp_path / "run", every=100, on_nonfinite="raise")],
             accumulate=1, overflow_at=2, poison_at=4,
             plugins=[MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu"))])
    assert info.value.step == 5


def test_on_nonfinite_raise_stops_the_fit_and_unpatches(tmp_path):
    """on_nonfinite='raise' fails the fit with graphscope's error at the NaN step, and the
    watch is left: torch.autograd and the model's hooks are as before."""
    backward = torch.autograd.backward
    cb = GraphscopeCallback(tmp_path / "run", every=100, on_nonfinite="raise")
    torch.manual_seed(0)
    model = Regressor(poison_at=2)
    trainer = L.Trainer(max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    with pytest.raises(NonFiniteGradientError) as info:
        trainer.fit(model, DataLoader(data, batch_size=4))
    assert info.value.step == 3
    assert trainer.global_step == 2
    assert torch.autograd.backward is backward
    assert not cb.watch.active
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with open_run(tmp_path / "run") as run:
        assert run.steps().step.tolist() == [1, 2, 3]
        assert [c.step for c in run.captures()][-1] == 3


def test_a_new_fit_into_a_used_run_is_refused(tmp_path):
    """A fit starting at step 1 into a run holding an earlier fit's steps fails before it
    writes, instead of replacing them."""
    _fit([GraphscopeCallback(tmp_path / "run")], steps=2)
    backward = torch.autograd.backward
    with pytest.raises(RunError, match="already holds steps up to 2"):
        _fit([GraphscopeCallback(tmp_path / "run")], steps=2)
    assert torch.autograd.backward is backward
    with open_run(tmp_path / "run") as run:
        assert run.steps().step.tolist() == [1, 2]


def test_arguments_checked_when_made():
    """A wrong argument fails where the callback is made, not at the fit's start."""
    with pytest.raises(ValueError, match="on_nonfinite"):
        GraphscopeCallback("runs/x", on_nonfinite="stop")
    with pytest.raises(ValueError, match="every"):
        GraphscopeCallback("runs/x", every=0)


def test_ddp_strategy_records_each_rank_and_traces_the_nan_to_its_rank(tmp_path):
    """Trainer(strategy='ddp', devices=2, accelerator='cpu') over gloo: both ranks' steps are in
    one store at Lightning's global steps, their norms those of the gradients Lightning hands
    each optimizer, named as in the LightningModule; the NaN born in rank 1's backward at step 3
    is traced to rank 1 (the check before the DDP wrapper's all-reduce), rank 0 received it;
    both processes have exited when the test ends."""
    script = Path(__file__).with_name("lightning_ddp.py")
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    # Lightning's launcher starts rank 1 as a child of rank 0 (MASTER_PORT: a free port).
    run_session(["env", "MASTER_ADDR=127.0.0.1", f"MASTER_PORT={free_port()}", sys.executable,
                 str(script), str(run), str(out)], timeout=240, cwd=tmp_path)
    oracle = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    with open_run(run) as store:
        assert store.ranks() == [0, 1]
        assert store.meta["world_size"] == 2 and store.meta["distributed"]["wrapper"] == "ddp"
        for r in (0, 1):
            assert store.steps(r).step.tolist() == [1, 2, 3, 4, 5]
            assert [p.name for p in store.params(r)] == oracle[r]["names"] == [
                "scale", "net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]
            norms = store.param_series(r).norm
            for step in (1, 2):  # the reduced gradients, equal on both ranks
                assert norms[step - 1].tolist() == pytest.approx(oracle[r]["norms"][str(step)], rel=1e-6)
        birth = nonfinite_birth(store)
        findings = analyze_ranks(store)
    assert (birth.step, birth.born, birth.received) == (3, (1,), (0,))
    assert birth.params[1] == ("scale",)
    assert first_rank(findings) == 1
