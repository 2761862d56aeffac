"""The user's own state (issue 5.10, issue 2.4): their hooks fire once, in order, with their
effects kept; graphscope removes only its own handles, also when backward raises; outputs, RNG
state, train/eval mode and grad_fn metadata are left as they were."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import graphscope

from .models import TinyMLP, assert_grads_identical, assert_param_norms, mlp_batch, twins
from .oracle import assert_same_structure


def _hooked_loss(model: TinyMLP, x, y, log: list[str], handles: list) -> torch.Tensor:
    """A forward with every kind of user hook; each logs, the tensor hook also doubles."""
    handles.append(model.fc2.register_full_backward_hook(lambda m, gi, go: log.append("module fc2")))
    handles.append(model.fc1.weight.register_hook(lambda g: log.append("param fc1.weight")))
    handles.append(
        model.fc1.bias.register_post_accumulate_grad_hook(lambda p: log.append("post-acc fc1.bias"))
    )
    h = model.fc1(x)
    handles.append(h.register_hook(lambda g: (log.append("tensor h"), g * 2)[1]))
    s = torch.sigmoid(model.fc2(torch.tanh(h)))
    handles.append(s.grad_fn.register_prehook(lambda go: log.append("pre sigmoid")))
    handles.append(s.grad_fn.register_hook(lambda gi, go: log.append("post sigmoid")))
    return nn.functional.mse_loss(model.head(s), y)


def test_user_hooks_fire_once_in_order_with_effects_kept():
    """Tensor, node pre/post, module and post-accumulate hooks fire exactly as without graphscope,
    and the gradient a hook doubled is what torch and graphscope both see."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()
    log, ref_log, handles = [], [], []
    loss = _hooked_loss(model, x, y, log, handles)
    g = graphscope.capture(loss, model=model, warn=False)
    assert_same_structure(g, [loss])
    loss.backward()
    _hooked_loss(twin, x, y, ref_log, []).backward()
    assert log == ref_log
    assert sorted(set(log)) == sorted(log)  # each fired once
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 6
    assert graphscope.active_hook_count() == 0


def test_graphscope_removes_only_its_own_hooks():
    """After graphscope's hooks are gone the user's still fire on the next backward, and that
    backward is not recorded."""
    model = twins(TinyMLP)[0]
    x, y = mlp_batch()
    log, handles = [], []
    loss = _hooked_loss(model, x, y, log, handles)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward(retain_graph=True)
    g.close()
    assert graphscope.active_hook_count() == 0
    first = list(log)
    log.clear()
    loss.backward()
    assert log == first
    assert g.passes == 1


def test_user_hook_error_passes_through_and_hooks_end():
    """A user hook that raises: the user's exception reaches them unchanged, graphscope's hooks are
    gone after the `with` block, and the user's other hooks are still in place."""
    model = twins(TinyMLP)[0]
    x, y = mlp_batch()
    h = model.fc1(x)
    boom = ValueError("boom from the user's hook")

    def raising(_grad):
        raise boom

    handle = h.register_hook(raising)
    s = torch.sigmoid(model.fc2(torch.tanh(h)))
    log: list[str] = []
    s.grad_fn.register_hook(lambda gi, go: log.append("post sigmoid"))
    loss = nn.functional.mse_loss(model.head(s), y)
    with graphscope.capture(loss, model=model, warn=False) as g:
        with pytest.raises(ValueError) as info:
            loss.backward(retain_graph=True)
        assert info.value is boom
    assert graphscope.active_hook_count() == 0
    assert g.passes == 0
    assert log == ["post sigmoid"]
    handle.remove()
    loss.backward()
    assert log == ["post sigmoid"] * 2
    assert g.passes == 0


def test_retry_after_a_failed_backward_is_one_clean_pass():
    """A backward that raised halfway leaves no half-recorded pass: the retry alone is recorded."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()
    h = model.fc1(x)
    armed = [True]

    def flaky(grad):
        if armed[0]:
            raise RuntimeError("transient failure in a user hook")
        return grad

    h.register_hook(flaky)
    loss = nn.functional.mse_loss(model.head(torch.sigmoid(model.fc2(torch.tanh(h)))), y)
    g = graphscope.capture(loss, model=model, warn=False)
    with pytest.raises(RuntimeError, match="transient failure"):
        loss.backward(retain_graph=True)
    armed[0] = False
    model.zero_grad()
    loss.backward()
    nn.functional.mse_loss(twin(x), y).backward()
    assert g.passes == 1
    assert all(n.executed for n in g.nodes)
    assert_grads_identical(model, twin)
    assert assert_param_norms(g, model) == 6
    assert graphscope.active_hook_count() == 0


class Noisy(nn.Module):
    """Dropout and batch norm: a model whose forward uses the RNG and whose mode matters."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 8)
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm1d(8)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        return self.head(self.bn(self.drop(torch.relu(self.fc(x)))))


def test_outputs_rng_mode_and_metadata_unchanged():
    """Capture and backward leave the loss value, the RNG state, every module's train/eval mode
    and the user's grad_fn metadata exactly as they were."""
    model = twins(Noisy)[0]
    model.train()
    model.bn.eval()  # a mixed-mode model, as in fine-tuning
    modes = [m.training for m in model.modules()]
    x, y = mlp_batch()
    loss = nn.functional.mse_loss(model(x), y)
    value, fn = loss.detach().clone(), loss.grad_fn
    loss.grad_fn.metadata["user"] = "mine"
    rng = torch.get_rng_state()
    g = graphscope.capture(loss, model=model, warn=False)
    assert torch.equal(torch.get_rng_state(), rng)
    loss.backward()
    assert torch.equal(torch.get_rng_state(), rng)
    assert [m.training for m in model.modules()] == modes
    assert torch.equal(loss.detach(), value) and loss.grad_fn is fn
    assert loss.grad_fn.metadata["user"] == "mine"
    assert g.passes == 1
    assert graphscope.graph_of(loss) is g
