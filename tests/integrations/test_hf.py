"""GraphscopeCallback inside a real transformers.Trainer: a tiny GPT-2 built from a config."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

# Never the network: the model is built from a config, and nothing is reported anywhere.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["WANDB_DISABLED"] = "true"

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from graphscope.errors import NonFiniteGradientError, RunError  # noqa: E402
from graphscope.integrations.hf import GraphscopeCallback  # noqa: E402
from graphscope.runs import open_run  # noqa: E402


def _model(seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(config)


def _data(n: int = 32):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 64, (n, 8), generator=g)
    return [{"input_ids": x, "labels": x} for x in ids]


class Oracle(transformers.TrainerCallback):
    """The gradients and learning rate the optimizer steps with, per global step (clipping is off)."""

    def __init__(self) -> None:
        self.grads: dict[int, dict[str, torch.Tensor]] = {}
        self.lrs: dict[int, float] = {}
        self.model = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        self.lrs[state.global_step + 1] = optimizer.param_groups[0]["lr"]
        self.grads[state.global_step + 1] = {
            n: p.grad.detach().clone() for n, p in self.model.named_parameters() if p.grad is not None}


class LossTrainer(transformers.Trainer):
    """Keeps the loss each training_step's backward started from, per global step."""

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.losses.setdefault(self.state.global_step + 1, []).append(float(loss))
        return loss


def _train(tmp_path, callbacks, *, steps=4, accumulate=2, model=None, trainer_cls=None,
           before_train=None, **args_kw):
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=2,
        gradient_accumulation_steps=accumulate, learning_rate=1e-3, max_grad_norm=0.0,
        report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        use_cpu=True, seed=0, data_seed=0, dataloader_num_workers=0, **args_kw)
    trainer = (trainer_cls or LossTrainer)(model=model or _model(), args=args, train_dataset=_data(),
                                           callbacks=callbacks)
    trainer.losses = {}
    if before_train is not None:
        before_train(trainer)
    trainer.train()
    return trainer


def test_records_each_optimizer_step_at_the_global_step(tmp_path):
    """Each optimizer step is one row at the Trainer's global step: the accumulated gradients
    the optimizer got and the sum of the micro-batch losses; a capture every `every` steps."""
    oracle = Oracle()
    cb = GraphscopeCallback(tmp_path / "run", every=2)
    trainer = _train(tmp_path, [cb, oracle])
    assert trainer.state.global_step == 4
    with open_run(tmp_path / "run") as run:
        steps = run.steps()
        params = run.params()
        series = run.param_series()
        assert steps.step.tolist() == [1, 2, 3, 4]
        assert [c.step for c in run.captures()] == [1, 3]
        assert sorted(run.updates()) == [1, 3]
        graph = run.capture(3)
    assert graph.meta["step"] == 3
    for i, step in enumerate(steps.step.tolist()):
        assert steps.loss[i] == pytest.approx(sum(trainer.losses[step]), rel=1e-6)
        for p in params:
            assert series.norm[i, p.idx] == pytest.approx(float(oracle.grads[step][p.name].norm()), rel=1e-5)
    assert steps.lr.tolist() == [oracle.lrs[s] for s in (1, 2, 3, 4)]
    assert steps.lr[0] > steps.lr[-1]  # the Trainer's linear decay
    assert cb.watch.steps == 8 and not cb.watch.active


def test_gradients_bit_identical_with_and_without_the_callback(tmp_path):
    """The callback only reads: every step's gradients and the final weights are bit-identical."""
    plain, watched = Oracle(), Oracle()
    t0 = _train(tmp_path / "a", [plain])
    t1 = _train(tmp_path / "b", [watched, GraphscopeCallback(tmp_path / "run", every=2)])
    assert sorted(plain.grads) == sorted(watched.grads) == [1, 2, 3, 4]
    for step, grads in plain.grads.items():
        for name, g in grads.items():
            assert torch.equal(g, watched.grads[step][name]), (step, name)
    for (name, a), (_, b) in zip(t0.model.named_parameters(), t1.model.named_parameters()):
        assert torch.equal(a, b), name


@pytest.mark.parametrize(("flag", "activations"), [("bf16", "bfloat16"), ("fp16", "float32")])
def test_mixed_precision_on_the_cpu(tmp_path, flag, activations):
    """bf16=True on the CPU is bfloat16 autocast without a GradScaler; fp16=True on the CPU
    gets neither autocast nor a scaler from accelerate (it trains in float32). Either way no
    loss scale is recorded, the norms are those of the float32 gradients the optimizer got, and
    the capture shows the activations' real dtype."""
    oracle = Oracle()
    trainer = _train(tmp_path, [GraphscopeCallback(tmp_path / "run", every=2), oracle], **{flag: True})
    assert trainer.accelerator.scaler is None
    with open_run(tmp_path / "run") as run:
        steps = run.steps()
        params = run.params()
        series = run.param_series()
        graph = run.capture(1)
    assert steps.step.tolist() == [1, 2, 3, 4]
    assert not np.isfinite(steps.loss_scale).any()
    assert {p.dtype for p in params} == {"float32"}
    for i, step in enumerate(steps.step.tolist()):
        for p in params:
            assert series.norm[i, p.idx] == pytest.approx(float(oracle.grads[step][p.name].norm()), rel=1e-5)
    linears = [n for n in graph.nodes if n.op == "AddmmBackward0"]
    assert linears and {n.dtype for n in linears} == {activations}


class Overflow(LossTrainer):
    """Multiplies the loss by 1e30 at global step ``overflow_at`` (finite in float32; its
    float16 gradients overflow under the GradScaler's scale)."""

    overflow_at = 2

    def compute_loss(self, model, inputs, *args, **kwargs):
        loss = super().compute_loss(model, inputs, *args, **kwargs)
        return loss * 1e30 if self.state.global_step == self.overflow_at else loss


class Weights(transformers.TrainerCallback):
    """One weight after each optimizer step, by global step."""

    def __init__(self) -> None:
        self.after: dict[int, torch.Tensor] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.after[state.global_step] = model.transformer.h[0].mlp.c_fc.weight.detach().clone()


def test_grad_scaler_overflow_recorded_as_a_skipped_step(tmp_path):
    """fp16 with a GradScaler (what fp16=True sets up on a GPU; here accelerate's CPU scaler and
    float16 autocast): each step is recorded with its scale, the step whose float16 gradients
    overflowed (step 3, which the scaler skips) with its non-finite gradients and finite loss,
    so the run's analysis names it a skipped step, not a NaN, and on_nonfinite='raise' lets
    the training go on; the other steps, divided by their scale, are the gradients the
    optimizer got (unscaled by the Trainer's norm), and the export reports them so."""
    from graphscope.export.metrics import run_metrics
    from graphscope.trends import analyze

    oracle, weights = Oracle(), Weights()

    def fp16_scaler(trainer):
        # Set before train() prepares the model and optimizer, as Accelerator does on a GPU.
        trainer.accelerator.scaler = torch.amp.GradScaler("cpu")
        trainer.accelerator.native_amp = True

    cb = GraphscopeCallback(tmp_path / "run", every=100, on_nonfinite="raise")
    trainer = _train(tmp_path, [cb, oracle, weights], steps=5, accumulate=1, trainer_cls=Overflow,
                     before_train=fp16_scaler, fp16=True)
    assert trainer.state.global_step == 5
    assert torch.equal(weights.after[2], weights.after[3])  # the scaler skipped step 3
    with open_run(tmp_path / "run") as run:
        steps = run.steps()
        params = run.params()
        series = run.param_series()
        findings = analyze(run)
        metrics = run_metrics(run)
        graph = run.capture(1)
    assert {n.dtype for n in graph.nodes if n.op == "AddmmBackward0"} == {"float16"}
    assert steps.loss_scale.tolist() == [65536.0] * 3 + [32768.0] * 2
    assert steps.nonfinite[2] > 0 and not steps.loss_nonfinite[2] and np.isfinite(steps.loss[2])
    assert [(f.step, f.last_step) for f in findings if f.kind == "skipped_steps"] == [(3, 3)]
    assert not [f for f in findings if f.kind == "nonfinite"]
    exported = {step: value for step, _, value in metrics.scalars["grad_norm"]}
    assert sorted(exported) == [1, 2, 4, 5]
    for i, step in enumerate(steps.step.tolist()):
        if step == 3:
            continue
        want = {p.name: float(oracle.grads[step][p.name].norm()) for p in params}
        for p in params:
            assert series.norm[i, p.idx] / steps.loss_scale[i] == pytest.approx(want[p.name], rel=1e-5)
        assert exported[step] == pytest.approx(math.sqrt(sum(w * w for w in want.values())), rel=1e-5)


class Poison(transformers.TrainerCallback):
    """Sets one weight to NaN before global step ``at`` + 1."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.model = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.model = model

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            with torch.no_grad():
                self.model.transformer.h[1].mlp.c_fc.weight[0, 0] = float("nan")


def test_on_nonfinite_raise_ends_train_and_unpatches(tmp_path):
    """on_nonfinite='raise' ends train() with graphscope's error at the NaN step, and the
    watch is left although the Trainer has no exception hook."""
    backward = torch.autograd.backward
    cb = GraphscopeCallback(tmp_path / "run", every=100, on_nonfinite="raise")
    model = _model()
    with pytest.raises(NonFiniteGradientError) as info:
        _train(tmp_path, [Poison(2), cb], steps=6, model=model)
    assert info.value.step == 3
    assert torch.autograd.backward is backward
    assert not cb.watch.active
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    with open_run(tmp_path / "run") as run:
        assert run.steps().step.tolist() == [1, 2, 3]


def test_a_new_training_into_a_used_run_is_refused(tmp_path):
    """A training starting at step 1 into a run holding earlier steps fails before writing."""
    _train(tmp_path, [GraphscopeCallback(tmp_path / "run")], steps=1, accumulate=1)
    backward = torch.autograd.backward
    with pytest.raises(RunError, match="already holds steps up to 1"):
        _train(tmp_path, [GraphscopeCallback(tmp_path / "run")], steps=1, accumulate=1)
    assert torch.autograd.backward is backward
