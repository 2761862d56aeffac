"""Traces a non-finite forward value back to where it was made, from what the graph holds.

Owns ``trace_nonfinite``. ``capture`` calls it only when a captured output is NaN or Inf, so a
healthy capture reads no tensor values at all. It runs nothing again; it reads:

- the tensors each op saved for backward. A saved tensor is one of the op's inputs or its own
  output (``exp``, ``sqrt`` and ``tanh`` save their result); unpacked, its ``grad_fn`` names the
  node that produced it, so a node's output is seen through whatever any consumer saved. A
  tensor packed by a ``saved_tensors_hooks`` unpack hook (a non-reentrant checkpoint's,
  ``save_on_cpu``'s) is never unpacked: that would rerun the forward or copy it back;
- the leaves' values (``AccumulateGrad.variable``: the parameters, when ``model=`` names them);
- saved tensors that no node produced and that do not require grad: the data (a batch, a
  target, a mask, a constant).

Each value is reduced on its device to a NaN count, an Inf count and its largest magnitude, and
all of them reach the host in one transfer per device. Then, in forward order, an output that
nothing saved is taken to be non-finite exactly when one of its node's inputs is (NaN and Inf
spread forward), and a node whose output is seen non-finite while every input it has is finite
is where the value was born. When the outputs just before it were not seen, the birth may lie
there instead: those nodes are listed with it.

The result is plain data, kept as ``graph.meta["forward_nonfinite"]`` (see ``trace_nonfinite``)
and worded by ``graphscope.diagnostics``. Imports torch; only the capture layer may import this
module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from graphscope.autograd.walk import allocated, saved_attr_names

# How many of the unseen nodes before a birth are listed (nearest first).
UNSEEN_LISTED = 8

# A value slot: ("out", node id, output_nr), ("data", node id, saved name) or ("leaf", node id).
Slot = tuple[Any, ...]


def trace_nonfinite(
    fns: list[Any],
    roots: list[tuple[int, torch.Tensor]],
    producers: list[list[tuple[int, int]]],
    order: list[int],
    outside: Callable[[torch.Tensor], dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Where the NaN/Inf of a forward pass was born.

    Args:
        fns: The live autograd nodes, indexed by node id.
        roots: ``(node id, tensor)`` of each captured output.
        producers: Per node id, ``(producer id, output_nr)`` of each input edge.
        order: Every node id, producers before their consumers.

    Returns:
        JSON-ready data: ``births``, a list (in forward order) of records ``{"at": "op" |
        "data" | "leaf", "node": id, "nan": n, "inf": n, "numel": n}``; an op birth also has
        ``input_abs_max`` (the largest magnitude among the inputs seen, ``None`` if none was)
        and ``unseen`` (the nearest nodes before it whose output no one saved, where the value
        may have been born instead; ``unseen_more`` counts those not listed); a data birth has
        ``tensor``, the name under which the op saved the input. ``nonfinite``: the ids of the
        nodes whose forward output is non-finite, seen or carried, in forward order.
        ``leaf_abs_max``: ``[id, largest magnitude]`` of each finite leaf. With ``outside``
        (a forward recording's ``Outside.origin``), a data birth the recording saw being made
        outside the graph also has ``made``: that op, its module and line.
    """
    index = {fn: nid for nid, fn in enumerate(fns)}
    slots: dict[Slot, torch.Tensor] = {}
    for nid, fn in enumerate(fns):
        variable = getattr(fn, "variable", None) if type(fn).__name__ == "AccumulateGrad" else None
        if variable is not None:
            slots.setdefault(("leaf", nid), variable)
            continue
        for name, t in _saved(fn):
            if t.grad_fn is not None:
                pid = index.get(t.grad_fn)
                if pid is not None:  # else a view node made on unpacking: not in the graph
                    slots.setdefault(("out", pid, t.output_nr), t)
            elif not t.requires_grad:
                slots.setdefault(("data", nid, name), t)
    for nid, t in roots:
        slots.setdefault(("out", nid, t.output_nr), t)
    # A tensor whose storage is freed (FSDP2's unsharded parameters until the backward's
    # all-gather) cannot be read: it counts as unseen.
    slots = {slot: t for slot, t in slots.items() if allocated(t)}
    values = dict(zip(slots, _reduce(list(slots.values()))))
    found = _judge(values, producers, order)
    for birth in found["births"]:
        if outside is not None and birth["at"] == "data":
            made = outside(slots[("data", birth["node"], birth["tensor"])])
            if made is not None:
                birth["made"] = made
    return found


def _saved(fn: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The floating-point tensors ``fn`` saved, unpacked, by attribute name; never one with an
    unpack hook, one freed by a backward or one modified in place since it was saved."""
    raws = getattr(fn, "_raw_saved_tensors", None)
    if raws is not None:  # a custom autograd.Function: all or nothing
        if any(r.unpack_hook is not None for r in raws):
            return
        try:
            tensors = fn.saved_tensors
        except RuntimeError:
            return
        items: list[tuple[str, Any]] = [(f"saved_tensors[{i}]", t) for i, t in enumerate(tensors)]
    else:
        items = []
        for name in saved_attr_names(fn):
            raw = getattr(fn, "_raw_saved_" + name, None)
            if raw is None:
                continue  # a saved non-tensor value
            many = isinstance(raw, (list, tuple))
            if any(r.unpack_hook is not None for r in (raw if many else (raw,))):
                continue
            try:
                value = getattr(fn, "_saved_" + name)
            except RuntimeError:
                continue  # freed, or modified in place: not the value the op saw
            if many:
                items += [(f"{name}[{i}]", t) for i, t in enumerate(value)]
            else:
                items.append((name, value))
    for name, t in items:
        if (
            isinstance(t, torch.Tensor)
            and t.layout == torch.strided
            and not t.is_nested
            and (t.is_floating_point() or t.is_complex())
        ):
            yield name, t


def _reduce(tensors: list[torch.Tensor]) -> list[tuple[int, int, float, int]]:
    """``(NaN count, Inf count, largest magnitude, numel)`` of each tensor, one transfer per
    device."""
    out: list[tuple[int, int, float, int] | None] = [None] * len(tensors)
    by_device: dict[torch.device, list[tuple[int, torch.Tensor]]] = {}
    with torch.no_grad():
        for i, t in enumerate(tensors):
            x = t.detach()
            if x.numel() == 0:
                out[i] = (0, 0, 0.0, 0)
                continue
            row = torch.stack([
                x.isnan().sum().to(torch.float64),
                x.isinf().sum().to(torch.float64),
                x.abs().amax().to(torch.float64),
            ])
            by_device.setdefault(x.device, []).append((i, row))
        for rows in by_device.values():
            host = torch.stack([r for _, r in rows]).cpu().tolist()
            for (i, _), (nan, inf, top) in zip(rows, host):
                out[i] = (int(nan), int(inf), top, tensors[i].numel())
    return out  # type: ignore[return-value]


def _judge(
    values: dict[Slot, tuple[int, int, float, int]],
    producers: list[list[tuple[int, int]]],
    order: list[int],
) -> dict[str, Any]:
    """Carry non-finiteness forward through the outputs nobody saw, and find the births."""
    outputs: dict[int, dict[int, tuple[int, int, float, int]]] = {}  # node -> output_nr -> value
    data: dict[int, list[tuple[str, tuple[int, int, float, int]]]] = {}
    leaves: set[int] = set()
    for slot, v in values.items():
        if slot[0] == "data":
            data.setdefault(slot[1], []).append((slot[2], v))
        else:
            outputs.setdefault(slot[1], {})[slot[2] if slot[0] == "out" else 0] = v
            if slot[0] == "leaf":
                leaves.add(slot[1])
    carried: set[int] = set()  # nodes whose unseen outputs are non-finite

    def bad(nid: int, output_nr: int) -> bool:
        v = outputs.get(nid, {}).get(output_nr)
        return nid in carried if v is None else bool(v[0] or v[1])

    births: list[dict[str, Any]] = []
    nonfinite: list[int] = []
    for nid in order:
        mine = list(outputs.get(nid, {}).values())
        bad_mine = [v for v in mine if v[0] or v[1]]
        bad_data = [(name, v) for name, v in data.get(nid, ()) if v[0] or v[1]]
        for name, (nan, inf, _, numel) in bad_data:
            births.append({"at": "data", "node": nid, "tensor": name, "nan": nan, "inf": inf,
                           "numel": numel})
        if bad_data or any(bad(p, o) for p, o in producers[nid]):
            carried.add(nid)
            if bad_mine or not mine:
                nonfinite.append(nid)
            continue
        if not bad_mine:
            continue
        nonfinite.append(nid)
        nan, inf, _, numel = bad_mine[0]
        if nid in leaves:
            births.append({"at": "leaf", "node": nid, "nan": nan, "inf": inf, "numel": numel})
            continue
        inputs = [outputs[p][o][2] for p, o in producers[nid] if o in outputs.get(p, {})]
        inputs += [v[2] for _, v in data.get(nid, ())]
        unseen = _unseen_before(nid, producers, outputs)
        birth: dict[str, Any] = {
            "at": "op", "node": nid, "nan": nan, "inf": inf, "numel": numel,
            "input_abs_max": max(inputs) if inputs else None,
            "unseen": unseen[:UNSEEN_LISTED],
        }
        if len(unseen) > UNSEEN_LISTED:
            birth["unseen_more"] = len(unseen) - UNSEEN_LISTED
        births.append(birth)
    leaf_abs_max = [[nid, outputs[nid][0][2]] for nid in sorted(leaves) if not (
        outputs[nid][0][0] or outputs[nid][0][1])]
    return {"births": births, "nonfinite": nonfinite, "leaf_abs_max": leaf_abs_max}


def _unseen_before(
    nid: int, producers: list[list[tuple[int, int]]], outputs: dict[int, dict[int, Any]]
) -> list[int]:
    """The nodes before ``nid`` whose outputs into it (or into one another) nobody saved, up to
    the seen ones: where a value seen only at ``nid`` may have been born. Nearest first."""
    found: dict[int, None] = {}
    frontier = [nid]
    while frontier:
        nxt = []
        for n in frontier:
            for p, o in producers[n]:
                if o not in outputs.get(p, {}) and p not in found:
                    found[p] = None
                    nxt.append(p)
        frontier = nxt
    return list(found)
