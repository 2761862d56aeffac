"""The distributed side of ``watch``: which rank a process is, and its gradients before the all-reduce.

Under ``torch.distributed`` every process runs its own ``watch`` and records its own steps into
the same run store, tagged with its rank (``rank_info``); nothing here talks to the other ranks.

DistributedDataParallel averages every gradient across the ranks inside the backward, so after
``loss.backward()`` every rank holds the same (reduced) gradients, and a NaN born on one rank is
on all of them. ``LocalCheck`` sees each rank's own gradients before that: it registers a DDP
communication hook that takes one norm of each gradient bucket as it becomes ready (one fused
reduction over the bucket's flat buffer, no host transfer, no communication) and then runs the
default all-reduce (``allreduce_hook``: divide by the world size, sum; the same arithmetic as
DDP's built-in reduction, so the gradients are bit-identical). The recorder reads the norms with
the step's other numbers, in its one host transfer. A non-finite local norm says the NaN/Inf was
born on this rank, in that bucket's parameters; a finite one on a rank whose reduced gradients are
not says it arrived through the all-reduce.

DDP takes one communication hook, for good, before the first backward: a model that already has
one (its own compression hook), or that already ran a backward, is left alone and recorded
without the local check (``LocalCheck.attach`` warns once and returns ``None``). Outside a watch
block the hook only all-reduces.

A trainer that wraps the user's module in DDP itself (Lightning's ``strategy="ddp"``) hands
``watch`` the module, not the wrapper: ``reduced_by(module, ddp)`` says which DDP reduces that
module's gradients, so the check hooks that wrapper and the parameters keep their own names.

FSDP2 (``fully_shard``) needs no hook here: its parameters' gradients are local shards
(``DTensor``), and the recorder takes the norms of the local shard on each rank (``local_tensor``).
A capture, though, walks the autograd graph, whose leaves are not those registered parameters:
``fully_shard`` all-gathers each sharded parameter into an unsharded one of the full shape (a
plain ``nn.Parameter`` it keeps for good, its storage freed between uses) and swaps it into the
module for the forward, so the ``AccumulateGrad`` nodes hold the unsharded parameters, and after
the forward the module holds the sharded one again (unless ``reshard_after_forward=False``).
``unsharded_pairs`` gives both of each parameter, so a capture names either by the qualified name.

FSDP2 has no communication hook, and its reduce-scatter leaves each element of a gradient on one
rank only: a NaN born on rank 1 can land in rank 0's shard alone, and the stored gradients would
name the wrong rank. ``LocalCheck`` takes the rank's own gradient there from a post-accumulate-grad
hook on each unsharded parameter (the gradient before FSDP reads it for the reduce-scatter), one
norm per parameter, armed after the model's first forward (when FSDP has made the unsharded
parameters); the recorder reads those norms as DDP's bucket norms, each "bucket" one parameter.

Imports torch; only the capture layer may import this module.
"""

from __future__ import annotations

import functools
import sys
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any

import torch

from graphscope.autograd.capture import uncompiled
from graphscope.errors import RecordingWarning


def rank_info() -> tuple[int, int]:
    """``(rank, world_size)`` of this process in the default process group; ``(0, 1)`` when
    ``torch.distributed`` is not available or not initialised."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return 0, 1
    return int(dist.get_rank()), int(dist.get_world_size())


def backend() -> str | None:
    """The default process group's backend (``gloo``, ``nccl``), or ``None`` without one."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized():
        return None
    return str(dist.get_backend())


# module -> the DDP wrapper a trainer made around it (weak both ways: the trainer owns both).
_reducers: weakref.WeakKeyDictionary[torch.nn.Module, weakref.ref] = weakref.WeakKeyDictionary()


def reduced_by(module: torch.nn.Module, ddp: torch.nn.parallel.DistributedDataParallel) -> None:
    """Record that ``ddp`` (a wrapper a trainer made) all-reduces ``module``'s gradients, so a
    watch over ``module`` checks each rank's gradients before that all-reduce."""
    if not isinstance(ddp, torch.nn.parallel.DistributedDataParallel):
        raise TypeError(f"reduced_by() takes a DistributedDataParallel wrapper, got {type(ddp).__name__}")
    _reducers[uncompiled(module)] = weakref.ref(ddp)


def ddp_of(model: torch.nn.Module) -> torch.nn.parallel.DistributedDataParallel | None:
    """``model`` itself when it is DDP, the wrapper ``reduced_by`` named for it, else ``None``."""
    model = uncompiled(model)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model
    ref = _reducers.get(model)
    return None if ref is None else ref()


def wrapper_of(model: torch.nn.Module) -> str | None:
    """``"ddp"`` for a DistributedDataParallel model (or one a trainer wrapped, ``reduced_by``),
    ``"fsdp"`` for one with FSDP2 ``fully_shard`` applied (its parameters are DTensors), else
    ``None``."""
    if ddp_of(model) is not None:
        return "ddp"
    model = uncompiled(model)
    if type(model).__name__.startswith("FSDP") or any(
            is_dtensor(p) for p in model.parameters()):
        return "fsdp"
    return None


def is_dtensor(t: Any) -> bool:
    return type(t).__name__ == "DTensor" and hasattr(t, "to_local")


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``t``: the local shard of a DTensor, else ``t`` itself."""
    return t.to_local() if is_dtensor(t) else t


def unsharded_pairs(model: torch.nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``(sharded, unsharded)`` of each FSDP2 parameter of ``model`` (``fully_shard`` applied to
    it or to its submodules) whose unsharded parameter exists (made at the first forward's
    all-gather); empty for a model without FSDP2.

    Reads FSDP2's own records (``FSDPState`` -> ``FSDPParamGroup.fsdp_params`` -> ``FSDPParam``),
    private in this torch: a torch that moves them gives no pairs (the capture then names only the
    parameters the modules hold), never an error.
    """
    return _fsdp_params(model)[0]


def _fsdp_params(model: torch.nn.Module) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], int]:
    """``unsharded_pairs`` and the count of FSDP parameters, with an unsharded one or not yet."""
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    total = 0
    # A script that shards a model has imported FSDP2 (torch 2.4-2.5 kept it in _composable):
    # for every other one, this costs nothing.
    types = tuple(t for name in ("torch.distributed.fsdp", "torch.distributed._composable.fsdp")
                  if (t := getattr(sys.modules.get(name), "FSDPModule", None)) is not None)
    if not types:
        return pairs, total
    for m in model.modules():
        if not isinstance(m, types):
            continue
        try:
            state = m._get_fsdp_state()
            groups = getattr(state, "_fsdp_param_groups", None)
            if groups is None:  # torch before per-parameter meshes: one group or none
                groups = [g for g in (getattr(state, "_fsdp_param_group", None),) if g is not None]
            for group in groups:
                for fp in group.fsdp_params:
                    total += 1
                    unsharded = getattr(fp, "_unsharded_param", None)
                    if isinstance(unsharded, torch.Tensor):
                        pairs.append((fp.sharded_param, unsharded))
        except (AttributeError, AssertionError, RuntimeError):
            continue
    return pairs, total


def _check_unsharded(state: _State, ids: list[int], p: torch.Tensor) -> None:
    """An unsharded FSDP2 parameter's gradient, this rank's own, before the reduce-scatter."""
    if not state.on or p.grad is None:
        return
    g = local_tensor(p.grad)
    norm = torch.linalg.vector_norm(g, dtype=torch.float32).reshape(1)
    state.norms.append(norm)
    state.buckets.append(ids)
    if g.device.type == "cpu" and not bool(torch.isfinite(norm)):  # as DDP's check: CPU only
        n = int((~torch.isfinite(g)).sum())
        for i in ids:
            state.bad[i] = n


@dataclass
class _State:
    """The hook's state (DDP keeps it): on while a watch records, and this step's norms."""

    process_group: Any = None
    on: bool = False
    norms: list[torch.Tensor] = field(default_factory=list)
    buckets: list[list[int]] = field(default_factory=list)  # the parameter ids of each norm
    bad: dict[int, int] = field(default_factory=dict)  # parameter id -> NaN/Inf elements (CPU)


def _check_then_allreduce(state: _State, bucket: Any) -> torch.futures.Future:
    if state.on:
        buf = bucket.buffer()
        # The rank's own gradients: DDP does not divide a hooked bucket beforehand.
        norm = torch.linalg.vector_norm(buf, dtype=torch.float32).reshape(1)
        state.norms.append(norm)
        params = bucket.parameters()
        state.buckets.append([id(p) for p in params])
        # On the CPU the norm is read at no sync cost: a non-finite bucket (rare) is searched
        # for its parameters now, while the buffer still holds this rank's own gradients. On an
        # accelerator that would stall the backward; the bucket is named instead.
        if buf.device.type == "cpu" and not bool(torch.isfinite(norm)):
            for p, g in zip(params, bucket.gradients()):
                n = int((~torch.isfinite(g)).sum())
                if n:
                    state.bad[id(p)] = n
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    return allreduce_hook(state.process_group, bucket)


# DDP checks the hook's annotations against the real classes (the strings of postponed
# annotations fail that check): the hook is given none.
_check_then_allreduce.__annotations__ = {}


class LocalCheck:
    """This rank's own gradient norms, taken before the reduction (per DDP bucket, or per FSDP2
    parameter); see the module doc.

    Use ``LocalCheck.attach(ddp_model)``; the recorder calls ``start`` on entering a watch,
    ``take`` after each backward, ``stop`` on leaving.
    """

    def __init__(self, state: _State) -> None:
        self._state = state

    @classmethod
    def attach(cls, model: torch.nn.Module) -> LocalCheck | None:
        """The check of a DDP ``model`` (or of the wrapper ``reduced_by`` named for it), or of
        an FSDP2 one, registering its hooks the first time, or ``None`` when ``model`` is
        neither or its communication cannot be hooked (then it warns why)."""
        if wrapper_of(model) == "fsdp":
            return cls._attach_fsdp(uncompiled(model))
        model = ddp_of(model)
        if model is None:
            return None
        state = getattr(model, "_graphscope_local_check", None)
        if state is None:
            why = None
            if getattr(model, "_comm_hooks", None):
                why = "it already has a communication hook (DDP takes only one)"
            else:
                state = _State(process_group=model.process_group)
                try:
                    model.register_comm_hook(state, _check_then_allreduce)
                except RuntimeError as e:
                    why = f"DDP refused a communication hook ({str(e).splitlines()[0]})"
            if why is not None:
                warnings.warn(
                    f"graphscope records this DDP model without its per-rank check before the "
                    f"all-reduce: {why}. Steps are still recorded per rank, but a NaN is not traced "
                    f"to the rank where it was born; enter graphscope.watch before the first "
                    f"backward and before registering your own hook to have it",
                    RecordingWarning, stacklevel=4)
                return None
            model._graphscope_local_check = state
        return cls(state)

    @classmethod
    def _attach_fsdp(cls, model: torch.nn.Module) -> LocalCheck:
        state = getattr(model, "_graphscope_local_check", None)
        if state is None:
            state = _State()
            model._graphscope_local_check = state
            armed: set[int] = set()

            def arm(*_: Any) -> None:
                # The unsharded parameters exist from their first all-gather on: arm each once,
                # until every FSDP parameter is (a submodule may skip the first forward).
                pairs, total = _fsdp_params(model)
                for sharded, unsharded in pairs:
                    if id(unsharded) not in armed:
                        armed.add(id(unsharded))
                        ids = [id(sharded), id(unsharded)]
                        unsharded.register_post_accumulate_grad_hook(
                            functools.partial(_check_unsharded, state, ids))
                if len(armed) >= total:
                    handle.remove()

            handle = model.register_forward_hook(arm)
            arm()
        return cls(state)

    def start(self) -> None:
        self._clear()
        self._state.on = True

    def stop(self) -> None:
        self._state.on = False
        self._clear()

    def _clear(self) -> None:
        self._state.norms.clear()
        self._state.buckets.clear()
        self._state.bad.clear()

    def take(self) -> tuple[torch.Tensor | None, list[list[int]], dict[int, int]]:
        """This step's bucket norms (one float32 tensor, not yet on the host), each bucket's
        parameter ids, and the NaN/Inf element count of each non-finite local gradient found
        (CPU only); clears them for the next step."""
        s = self._state
        out = (torch.cat(s.norms) if s.norms else None, list(s.buckets), dict(s.bad))
        self._clear()
        return out
