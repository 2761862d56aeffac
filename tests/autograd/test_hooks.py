"""Which backward passes a capture records, what it says when recording fails, and the hooks'
lifetime: removed after the pass, on error, with the user's own hooks left firing, nothing kept
alive, and the same records from worker threads.

Parameters' ``AccumulateGrad`` nodes are shared by every graph that uses them, so a capture's
hooks also fire for other graphs' backwards; those passes must leave the capture untouched.
"""

from __future__ import annotations

import gc
import json
import threading
import tracemalloc
import warnings
import weakref

import pytest
import torch
from torch import nn

import graphscope
from graphscope.autograd import stats as statsmod
from graphscope.errors import RecordingWarning
from tests.models import (
    Checkpointed,
    Reused,
    TinyMLP,
    assert_grads_identical,
    assert_norm,
    assert_param_norms,
    assert_same_structure,
    assert_stats,
    mlp_batch,
    mse,
    node_by_op,
    seeded,
    twins,
)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def _batch(seed: int) -> torch.Tensor:
    return torch.randn(5, 4, generator=torch.Generator().manual_seed(seed))


def _snapshot(g: graphscope.Graph) -> list:
    return [(n.executed, n.exec_order, n.grad) for n in g.nodes] + [e.grad for e in g.edges]


def _param_norms_match(g: graphscope.Graph, grads: dict[str, torch.Tensor]) -> None:
    for name, grad in grads.items():
        assert g.find(name).grad.norm == pytest.approx(grad.double().norm().item(), rel=1e-6), name


def test_unrelated_backward_leaves_a_retained_capture_untouched():
    """A second graph's backward through shared parameters is not recorded as the capture's pass."""
    model = _mlp()
    loss1 = model(_batch(1)).pow(2).mean()
    g = graphscope.capture(loss1, model=model, warn=False)
    loss1.backward(retain_graph=True)
    first = {name: p.grad.clone() for name, p in model.named_parameters()}
    before = _snapshot(g)
    model.zero_grad()
    model(_batch(2)).sum().backward()  # another graph: same AccumulateGrad nodes
    assert g.passes == 1
    assert _snapshot(g) == before
    assert all(n.executed for n in g.nodes)
    _param_norms_match(g, first)
    # The capture's own graph is still recorded when it runs again.
    loss1.backward(torch.tensor(2.0))
    assert g.passes == 2
    assert g.nodes[g.roots[0]].grad.max == 2.0
    assert graphscope.active_hook_count() == 0


def test_gan_style_two_losses_each_capture_keeps_its_own():
    """Two captures over one model (real and fake batches): each records only its own loss."""
    model = _mlp()
    real = model(_batch(1)).mean()
    fake = model(_batch(2)).mean()
    g_real = graphscope.capture(real, model=model, warn=False)
    g_fake = graphscope.capture(fake, model=model, warn=False)
    (ref_real,) = torch.autograd.grad(real, [model[0].weight], retain_graph=True)
    (ref_fake,) = torch.autograd.grad(fake, [model[0].weight], retain_graph=True)
    assert g_real.passes == g_fake.passes == 1  # autograd.grad through each root is a pass
    model.zero_grad()
    real.backward()
    assert (g_real.passes, g_fake.passes) == (2, 1)
    fake.backward()
    assert (g_real.passes, g_fake.passes) == (2, 2)
    assert g_real.find("0.weight").grad.norm == pytest.approx(ref_real.norm().item(), rel=1e-6)
    assert g_fake.find("0.weight").grad.norm == pytest.approx(ref_fake.norm().item(), rel=1e-6)
    assert graphscope.active_hook_count() == 0


class _Boom(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        raise RuntimeError("boom")


def test_backward_after_a_raised_pass_is_not_recorded():
    """After a backward that raised (hooks still armed), another graph's backward is not ours."""
    model = _mlp()
    loss = _Boom.apply(model(_batch(1))).sum()
    with graphscope.capture(loss, model=model, warn=False) as g:
        with pytest.raises(RuntimeError, match="boom"):
            loss.backward()
        model.zero_grad()
        model(_batch(2)).sum().backward()
        assert g.passes == 0
        assert not any(n.executed for n in g.nodes)
        assert all(n.grad is None for n in g.nodes)
    assert graphscope.active_hook_count() == 0


def test_gradient_penalty_double_backward_keeps_the_first_pass():
    """autograd.grad(create_graph=True) then a backward through the gradients: the capture keeps
    the first pass's statistics, and the user's gradients are torch's."""
    model = _mlp()
    x = _batch(1)
    loss = model(x).pow(2).mean()
    params = list(model.parameters())
    with graphscope.capture(loss, model=model, warn=False) as g:
        grads = torch.autograd.grad(loss, params, create_graph=True)
        before = _snapshot(g)
        penalty = sum(gr.pow(2).sum() for gr in grads)
        penalty.backward()
        assert g.passes == 1
        assert _snapshot(g) == before
    # torch is the oracle: the same steps without graphscope give the same .grad.
    twin = _mlp()
    tl = twin(x).pow(2).mean()
    tgrads = torch.autograd.grad(tl, list(twin.parameters()), create_graph=True)
    sum(gr.pow(2).sum() for gr in tgrads).backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad)
    for (name, _), gr in zip(model.named_parameters(), grads):
        node = g.find(name)
        # autograd.grad runs no AccumulateGrad: the leaf is not executed, its consumer's edge is.
        assert node.grad is None and not node.executed
        (edge,) = [e for e in g.edges if e.src == node.id]
        assert_stats(edge.grad, gr)


def test_a_bigger_graph_through_the_root_is_a_pass():
    """A backward from a loss built on top of the captured one runs through its root: recorded."""
    model = _mlp()
    loss = model(_batch(1)).mean()
    g = graphscope.capture(loss, model=model, warn=False)
    (loss * 3).backward()
    assert g.passes == 1
    assert g.nodes[g.roots[0]].grad.max == pytest.approx(3.0)
    assert all(n.executed for n in g.nodes)


def test_an_error_inside_a_hook_is_a_warning_naming_the_node(monkeypatch):
    """A statistics failure during backward warns once, naming the op; the backward is unharmed."""
    model = _mlp()
    twin = _mlp()
    x = _batch(1)
    loss = model(x).pow(2).mean()
    g = graphscope.capture(loss, model=model, warn=False)
    tanh = next(n for n in g.nodes if n.op == "TanhBackward0")
    real_add = statsmod.StatsBatch.add

    def failing_add(self, t):
        if t.shape == (5, 8):  # the gradient the last addmm sends to the tanh, and the tanh's
            raise RuntimeError("simulated kernel failure")
        return real_add(self, t)

    monkeypatch.setattr(statsmod.StatsBatch, "add", failing_add)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        loss.backward()
    mine = [w for w in seen if issubclass(w.category, RecordingWarning)]
    assert len(mine) == 1, [str(w.message) for w in seen]
    text = str(mine[0].message)
    # The first node that failed is named (the addmm sending the gradient); the others that
    # failed after it (the tanh) add no second warning.
    assert "addmm" in text and "module 2" in text and "simulated kernel failure" in text
    assert tanh.executed and tanh.grad is None  # missing, and said so, not silently absent
    assert g.passes == 1 and g.find("0.weight").grad is not None
    twin(x).pow(2).mean().backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p.grad, q.grad)
    assert graphscope.active_hook_count() == 0


# -- passes through a freed, retained, pruned or partial graph ------------------------------------


def _backward_error(loss: torch.Tensor, **kw) -> RuntimeError:
    with pytest.raises(RuntimeError) as info:
        loss.backward(**kw)
    return info.value


def test_capture_after_backward_walks_structure_and_passes_torch_error_through():
    """Capturing a freed graph gives its structure; the second backward's error is torch's own."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()
    loss, plain = mse(model, x, y), mse(twin, x, y)
    loss.backward()
    plain.backward()
    with pytest.warns(graphscope.RecordingWarning, match="already ran"):
        g = graphscope.capture(loss, model=model, warn=False)
    with g:
        assert_same_structure(g, [loss])
        assert all(info.status == "reached" for info in g.params)
        err = _backward_error(loss)
    expected = _backward_error(plain)
    assert type(err) is type(expected) and str(err) == str(expected)
    assert graphscope.active_hook_count() == 0
    assert_grads_identical(model, twin)


def test_retain_graph_twice_records_two_separate_passes():
    """Two backwards through a retained graph: two passes, the second one's numbers only."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()
    loss = mse(model, x, y)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward(retain_graph=True)
    mse(twin, x, y).backward(torch.tensor(3.0))  # what pass two alone gives
    first = {name: p.grad.clone() for name, p in model.named_parameters()}
    assert g.passes == 1
    assert graphscope.active_hook_count() > 0  # still armed: the user may backward again
    for name, grad in first.items():
        assert_norm(g.find(name).grad.norm, grad)
    loss.backward(torch.tensor(3.0))
    assert g.passes == 2
    assert graphscope.active_hook_count() == 0
    for name, p in twin.named_parameters():
        assert_stats(g.find(name).grad, p.grad)
        assert g.find(name).grad.norm != float(first[name].norm())
    assert_stats(g.nodes[g.roots[0]].grad, torch.tensor(3.0))
    order = [n.exec_order for n in g.backward_order()]
    assert order == list(range(len(order)))


def test_autograd_grad_on_an_intermediate_prunes_the_rest():
    """autograd.grad(loss, h): nodes below h are reported not executed with no gradient (not
    zero), and are never called vanishing or dead."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    h = torch.tanh(model.fc1(x))
    loss = nn.functional.mse_loss(model.head(torch.sigmoid(model.fc2(h))), y)
    g = graphscope.capture(loss, model=model, warn=False)
    (gh,) = torch.autograd.grad(loss, h)
    assert g.passes == 1
    assert graphscope.active_hook_count() == 0
    for name in ("fc1.weight", "fc1.bias"):
        node = g.find(name)
        assert node.grad is None and not node.executed and node.exec_order is None
    tanh = node_by_op(g, "TanhBackward0")
    assert tanh.grad is None and not tanh.executed
    assert node_by_op(g, "SigmoidBackward0").executed
    # h's consumer (fc2's addmm) sent exactly torch's gradient back along the edge to tanh.
    (edge,) = [e for e in g.edges if e.src == tanh.id]
    assert_stats(edge.grad, gh)
    for name in ("fc2.weight", "head.weight"):
        assert g.find(name).grad is None  # autograd.grad does not accumulate into leaves
    pruned = {n.id for n in g.nodes if not n.executed}
    assert not [f for f in g.findings if f.node in pruned and f.kind in ("vanishing", "dead")]
    assert all(info.status == "reached" for info in g.params)


def test_backward_inputs_records_only_what_ran():
    """backward(inputs=[w]) : only w's branch runs; other parameters are pruned, not zero."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()
    loss = mse(model, x, y)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward(inputs=[model.fc2.weight])
    mse(twin, x, y).backward(inputs=[twin.fc2.weight])
    assert_grads_identical(model, twin)
    assert graphscope.active_hook_count() == 0
    w = g.find("fc2.weight")
    assert w.executed
    assert_norm(w.grad.norm, model.fc2.weight.grad)
    for name, p in model.named_parameters():
        if name != "fc2.weight":
            node = g.find(name)
            assert p.grad is None and node.grad is None and not node.executed, name
    pruned = {n.id for n in g.nodes if not n.executed}
    assert not [f for f in g.findings if f.node in pruned and f.kind in ("vanishing", "dead")]
    assert not [f for f in g.findings if f.kind == "unreachable_param"]


def test_dynamic_control_flow_each_step_its_own_graph():
    """A forward whose depth changes per step: each capture matches that step's graph only."""
    model = seeded(TinyMLP)
    x, y = mlp_batch()
    sizes = []
    for step in range(6):
        h = model.fc1(x)
        for _ in range(step % 3):
            h = torch.tanh(model.fc2(h)) if step % 2 else torch.relu(model.fc2(h))
        loss = nn.functional.mse_loss(model.head(h), y)
        model.zero_grad()
        g = graphscope.capture(loss, model=model, warn=False)
        assert_same_structure(g, [loss])
        loss.backward()
        assert g.passes == 1
        assert graphscope.active_hook_count() == 0
        assert all(n.executed for n in g.nodes)
        used = {"fc1.weight", "fc1.bias", "head.weight", "head.bias"}
        if step % 3:
            used |= {"fc2.weight", "fc2.bias"}
        for info in g.params:
            assert info.status == ("reached" if info.name in used else "unreachable"), info
        sizes.append(len(g.nodes))
    assert len(set(sizes)) == 3


def test_reentrant_nested_backward_does_not_end_the_outer_pass():
    """A parameter used both outside and inside a reentrant region: the nested backward that
    runs the region must not close the recording of the outer backward."""
    model, twin = twins(lambda: Checkpointed(reentrant=True, share=True))
    x, _ = mlp_batch()
    loss = model(x)
    g = graphscope.capture(loss, model=model, warn=False)
    loss.backward()
    twin(x).backward()
    assert_grads_identical(model, twin)
    assert g.passes == 1
    assert graphscope.active_hook_count() == 0
    # Every node of the outer graph ran in the outer backward, the pre layer included.
    assert [n.op for n in g.nodes if not n.executed] == []
    for name in ("pre.weight", "pre.bias", "head.weight", "head.bias"):
        assert_norm(g.find(name).grad.norm, model.get_parameter(name).grad)


class Clobber(nn.Module):
    """Modifies sigmoid's saved output in place: an illegal in-place op."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        s = torch.sigmoid(self.fc(x))
        out = s.sum()
        s.mul_(2)
        return out + s.sum()


@pytest.mark.parametrize("when", ["after_inplace", "before_inplace"])
def test_version_counter_error_passes_through(when):
    """torch's 'modified by an inplace operation' error reaches the user word for word."""
    model, twin = twins(Clobber)
    x, _ = mlp_batch()
    if when == "after_inplace":
        loss = model(x)
        g = graphscope.capture(loss, model=model, warn=False)
    else:  # capture a graph whose saved tensor is clobbered after the capture
        s = torch.sigmoid(model.fc(x))
        loss = s.sum()
        g = graphscope.capture(loss, model=model, warn=False)
        s.mul_(2)
    with g:
        err = _backward_error(loss)
    if when == "after_inplace":
        expected = _backward_error(twin(x))
    else:
        s2 = torch.sigmoid(twin.fc(x))
        plain = s2.sum()
        s2.mul_(2)
        expected = _backward_error(plain)
    assert type(err) is type(expected) and str(err) == str(expected)
    assert graphscope.active_hook_count() == 0
    assert_grads_identical(model, twin)


# -- the user's own hooks (issue 5.10) -------------------------------------------------------------


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


def test_a_hook_changing_its_gradient_in_place_is_named_and_kept():
    """A user hook that changes its gradient in place (torch asks hooks not to) still gets the
    same gradients as without graphscope, and a RecordingWarning says which statistics it hit."""
    model, twin = twins(TinyMLP)
    x, y = mlp_batch()

    def loss_of(m: nn.Module) -> torch.Tensor:
        h = torch.tanh(m.fc1(x))
        h.register_hook(lambda g: g.mul_(2))  # in place: the tensor graphscope already holds
        return nn.functional.mse_loss(m.head(torch.sigmoid(m.fc2(h))), y)

    loss = loss_of(model)
    graphscope.capture(loss, model=model, warn=False)
    with pytest.warns(RecordingWarning, match="changed in place"):
        loss.backward()
    loss_of(twin).backward()
    assert_grads_identical(model, twin)


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


# -- soak: nothing left behind (issue 5.12) --------------------------------------------------------

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


# -- threads (issue 5.11) --------------------------------------------------------------------------

WORKERS = 4
STEPS = 5


def _job(seed: int):
    """A model and a batch, built in the main thread so the seeds are not shared across threads."""
    make = TinyMLP if seed % 2 else Reused
    model = seeded(make, seed)
    x, y = seeded(lambda: (torch.randn(6, 4), torch.randn(6, 1)), 100 + seed)
    return model, x, y


def _train(model: nn.Module, x, y, out: list, start: threading.Barrier | None = None) -> None:
    if start is not None:
        start.wait()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(STEPS):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        g = graphscope.capture(loss, model=model, warn=False)
        loss.backward()
        record = g.to_dict()
        record.pop("meta")
        out.append((json.dumps(record, sort_keys=True), [p.grad.clone() for p in model.parameters()]))
        opt.step()


def test_threaded_captures_equal_sequential_ones():
    """Four threads training their own models with a capture per step record the same graphs,
    statistics and findings, and produce the same gradients, as one thread running them in turn."""
    sequential: list[list] = [[] for _ in range(WORKERS)]
    for i in range(WORKERS):
        _train(*_job(i), sequential[i])
    threaded: list[list] = [[] for _ in range(WORKERS)]
    start = threading.Barrier(WORKERS)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            _train(*jobs[i], threaded[i], start)
        except BaseException as exc:  # surfaced below, with the thread's own traceback
            errors.append(exc)

    jobs = [_job(i) for i in range(WORKERS)]
    threads = [threading.Thread(target=run, args=(i,)) for i in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert graphscope.active_hook_count() == 0
    for i in range(WORKERS):
        assert len(threaded[i]) == STEPS
        for (doc_t, grads_t), (doc_s, grads_s) in zip(threaded[i], sequential[i]):
            assert doc_t == doc_s
            assert all(torch.equal(a, b) for a, b in zip(grads_t, grads_s))
