"""GraphscopeCallback inside a real Lightning Trainer, on the CPU, a few steps each."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

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
    """A two-layer regressor; ``poison_at`` makes the loss NaN from that global step on."""

    def __init__(self, poison_at: int | None = None) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.poison_at = poison_at

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        if self.poison_at is not None and self.global_step >= self.poison_at:
            loss = loss * float("nan")
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


def _fit(callbacks, *, steps=6, accumulate=2, seed=0, poison_at=None, **trainer_kw):
    torch.manual_seed(seed)
    data = TensorDataset(torch.randn(64, 4), torch.randn(64, 1))
    model = Regressor(poison_at)
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
