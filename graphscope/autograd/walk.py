"""Walks an autograd graph from its roots down to the ``AccumulateGrad`` leaves.

Owns the traversal: ``walk(roots)`` returns the model's nodes and edges plus the live autograd
nodes in id order (for the hook layer to arm, then drop). It is iterative (a deque, never
recursion), so a 10,000-step chain or a diamond chain with 2^60 paths costs one visit per node.

Saved tensors are described from their ``SavedTensor`` records, never unpacked through a
``saved_tensors_hooks`` unpack hook: unpacking a non-reentrant checkpoint's tensor would rerun
the forward. A graph already freed by an earlier backward is walked for structure only.

Saved non-tensor values are stored as the text the user would have written: torch's generated
getters return a negative ``int64`` as its unsigned reinterpretation, a loss's ``reduction`` as
an enum int and an open slice end as ``INT64_MAX``; ``_value_text`` undoes all three.

Small tensors' values (``walk(values=16)``): a leaf's data, and the forward value of an op where
one of the graph's own records holds it, read without unpacking anything: an op that saved its
own output (``result``: sigmoid, tanh, exp, relu), or a consumer that saved its input (mul saves
both factors), whose ``SavedTensor.data`` is the very tensor it was given, ``grad_fn`` and all,
so it names its producer. A tensor changed in place since is never attributed to the op before
the change: its ``grad_fn`` is the in-place op by then, and a saved output with a moved version
counter is skipped. All values are read in one transfer per device (``read_values``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from graphscope.model import LEAF, OP, PARAM, Edge, Node, Source, TensorMeta, Values, op_label

# Nodes whose inside the walk cannot see: the region's ops ran in a nested autograd call.
OPAQUE_OPS = {
    "CheckpointFunctionBackward": "checkpoint",
    "CompiledFunctionBackward": "compiled",
}
# Where ``graphscope.watch`` (recording) leaves a node's ``Tag``.
METADATA_KEY = "graphscope"
# A recording's copy of an op's small forward output, under the node's ``metadata``.
VALUE_KEY = "graphscope.value"
# Tensors of at most this many elements keep their actual values (``capture(values=)``).
VALUES = 16


class Tag(NamedTuple):
    """What a forward recording knows about the autograd node a torch call made: the module
    path that was running (``None`` outside any module) and the user's source line."""

    module: str | None
    source: Source | None

# torch's generated getters pack every saved ``int64_t``, ``SymInt`` and int list with
# ``PyLong_FromUnsignedLong`` (tools/autograd/gen_autograd_functions.py), so -100 reads back as
# 2**64 - 100. No getter exposes a genuinely unsigned integer (Scalars go through
# ``PyLong_FromLong``), so a value above INT64_MAX is always a negative int64.
_INT64_MAX = (1 << 63) - 1
_UINT64 = 1 << 64
# at::Reduction, the int a loss saves for the string the user passed (torch.nn._reduction).
_REDUCTIONS = {0: "none", 1: "mean", 2: "sum"}
# Sentinels torch saves for an argument the user left out: ``padding_idx=None`` (embedding and
# embedding_bag save -1; a negative index the user passes is resolved to ``num + idx`` first) and
# an open slice end (``x[1:]``).
_LEFT_OUT = {("padding_idx", -1), ("end", _INT64_MAX)}

# Per-type and per-dtype caches: the walk runs once per training step, so the string work for
# a node type is done once per process, not once per node.
_saved_names: dict[type, tuple[str, ...]] = {}
_plans: dict[type, tuple[tuple[str, str, str], ...]] = {}
_custom: dict[type, bool] = {}
_labels: dict[type, str] = {}
_dtype_names: dict[torch.dtype, str] = {}
# Interned descriptions (``TensorMeta`` is frozen): an unrolled LSTM's 6,000 nodes describe a
# handful of distinct (shape, dtype, device, name) tensors and saved values, and building each
# description again (``str(device)``, a tuple of the shape, the dataclass) was most of the walk.
_metas: dict[tuple[Any, ...], TensorMeta] = {}
_texts: dict[tuple[Any, ...], TensorMeta] = {}
_INTERNED_MAX = 1 << 16


def short_label(fn: Any) -> str:
    """``AddmmBackward0`` -> ``addmm``; a custom Function -> its class name."""
    cls = type(fn)
    label = _labels.get(cls)
    if label is None:
        fwd = getattr(fn, "_forward_cls", None)
        if fwd is not None:
            label = fwd.__name__
        else:
            label = op_label(cls.__name__)
        _labels[cls] = label
    return label


def _dtype_name(dtype: torch.dtype) -> str:
    name = _dtype_names.get(dtype)
    if name is None:
        name = _dtype_names[dtype] = str(dtype).removeprefix("torch.")
    return name


def _meta(shape: Any, dtype: torch.dtype, device: torch.device, name: str = "",
          nested: bool = False) -> TensorMeta:
    """The (interned) description of a tensor; ``shape`` is ignored for a nested tensor."""
    key = (None if nested else shape, dtype, device, name)
    try:
        meta = _metas.get(key)
    except TypeError:  # a symbolic size is unhashable: described, not interned
        meta, key = None, None
    if meta is None:
        meta = TensorMeta(
            shape=None if nested else tuple(shape),
            dtype=_dtype_name(dtype),
            device=str(device),
            name=name,
            value="nested tensor" if nested else None,
        )
        if key is not None:
            _remember(_metas, key, meta)
    return meta


def _remember(cache: dict[tuple[Any, ...], TensorMeta], key: tuple[Any, ...],
              meta: TensorMeta) -> None:
    """Intern ``meta`` under ``key``; a full cache starts over (bounded by _INTERNED_MAX)."""
    if len(cache) >= _INTERNED_MAX:
        cache.clear()
    cache[key] = meta


def _meta_of(t: torch.Tensor, name: str = "") -> TensorMeta:
    if t.is_nested:
        return _meta(None, t.dtype, t.device, name, nested=True)
    return _meta(t.shape, t.dtype, t.device, name)


def _constant(name: str, t: torch.Tensor) -> TensorMeta:
    """A saved 0-dim constant (a Python number autograd wrapped, ``x * 0``, ``x / 8``) with its
    value: on the CPU, where wrapped numbers live, reading it costs no device sync."""
    try:
        value = t.item()
    except RuntimeError:  # a tensor subclass without data
        return _meta_of(t, name)
    key = (name, t.dtype, value)
    meta = _texts.get(key)
    if meta is None:
        meta = TensorMeta(shape=(), dtype=_dtype_name(t.dtype), device="cpu", name=name,
                          value=repr(value))
        _remember(_texts, key, meta)
    return meta


def _outputs_of(fn: Any) -> tuple[TensorMeta, ...]:
    try:
        metas = fn._input_metadata
    except (AttributeError, RuntimeError):
        return ()
    out = []
    for m in metas:
        if getattr(m, "is_nested_tensor", False):
            out.append(_meta(None, m.dtype, m.device, nested=True))
            continue
        # A list here, a torch.Size on a tensor: as tuples they are one key.
        out.append(_meta(tuple(m.shape), m.dtype, m.device))
    return tuple(out)


def saved_attr_names(fn: Any) -> tuple[str, ...]:
    """The names ``fn`` saved values under for backward (its ``_saved_*`` attributes, unprefixed)."""
    cls = type(fn)
    names = _saved_names.get(cls)
    if names is None:
        names = tuple(a[len("_saved_") :] for a in dir(fn) if a.startswith("_saved_"))
        _saved_names[cls] = names
    return names


def _is_custom(fn: Any) -> bool:
    """Whether ``fn`` is the node of a custom ``autograd.Function`` (saved via ``ctx``)."""
    cls = type(fn)
    custom = _custom.get(cls)
    if custom is None:
        custom = _custom[cls] = hasattr(cls, "_raw_saved_tensors")
    return custom


def _saved_plan(fn: Any) -> tuple[tuple[str, str, str], ...]:
    """``(name, raw attribute, attribute)`` for each value ``fn`` saved, once per node type."""
    cls = type(fn)
    plan = _plans.get(cls)
    if plan is None:
        plan = _plans[cls] = tuple(
            (name, "_raw_saved_" + name, "_saved_" + name) for name in saved_attr_names(fn)
        )
    return plan



@dataclass
class _SavedReader:
    """Reads saved-tensor metadata; stops for good once it meets a freed graph.

    With ``limit`` > 0 it also notes, in ``values``, the small tensors whose forward value it
    meets: ``node id -> tensor`` (see the module docstring for which ones).
    """

    freed: bool = False
    limit: int = 0
    ids: dict[Any, int] = field(default_factory=dict)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    _nid: int = -1

    def read(self, fn: Any, nid: int = -1) -> tuple[TensorMeta, ...]:
        if self.freed:
            return ()
        self._nid = nid
        out: list[TensorMeta] = []
        try:
            # Only a custom autograd.Function's node type has the attribute (asking a built-in
            # node would raise and catch an AttributeError per node).
            raws = getattr(fn, "_raw_saved_tensors", None) if _is_custom(fn) else None
            if raws is not None:
                for i, raw in enumerate(raws):
                    out.append(self._describe(f"saved_tensors[{i}]", raw, fn, "saved_tensors"))
                return tuple(out)
            for name, raw_attr, attr in _saved_plan(fn):
                raw = getattr(fn, raw_attr, None)
                if raw is None:
                    out.append(self._value(name, getattr(fn, attr)))
                elif isinstance(raw, (list, tuple)):
                    out.extend(
                        self._describe(f"{name}[{i}]", r, fn, attr) for i, r in enumerate(raw)
                    )
                else:
                    out.append(self._describe(name, raw, fn, attr, note=self.limit > 0))
        except RuntimeError:
            # "Trying to backward through the graph a second time": buffers already freed.
            self.freed = True
            return ()
        return tuple(out)

    def _describe(self, name: str, raw: Any, fn: Any, attr: str, note: bool = False) -> TensorMeta:
        if raw.unpack_hook is not None:
            return TensorMeta(
                shape=None, name=name, value="<tensor packed by saved_tensors_hooks, not unpacked>"
            )
        t = raw.data
        if t is None:
            # Freed by an earlier backward, or an undefined optional tensor (bias=None). With no
            # unpack hook, reading the attribute unpacks nothing: it raises only when freed.
            getattr(fn, attr)
            return TensorMeta(shape=None, name=name, value="None")
        if not isinstance(t, torch.Tensor):
            return TensorMeta(shape=None, name=name, value=type(t).__name__)
        layout = t.layout
        if layout != torch.strided and not t.is_sparse:
            return TensorMeta(
                shape=None, dtype=_dtype_name(t.dtype), device=str(t.device), name=name,
                value=str(layout),
            )
        if note and small_enough(t, self.limit):
            self._note_value(name, t)
        if not t.dim() and t.grad_fn is None and not t.requires_grad and t.device.type == "cpu":
            return _constant(name, t)
        return _meta_of(t, name)

    def _note_value(self, name: str, t: torch.Tensor) -> None:
        """Remember a small saved tensor as the forward value of the node that produced it."""
        fn = t.grad_fn
        if fn is not None:  # a saved input: the tensor the consumer got, from its producer
            nid = self.ids.get(fn)
            if nid is not None and t.output_nr == 0:
                self.values.setdefault(nid, t)
        elif name == "result" and t._version == 0:  # the op's own single output
            self.values.setdefault(self._nid, t)

    @staticmethod
    def _value(name: str, value: Any) -> TensorMeta:
        if isinstance(value, torch.Tensor):
            return _meta_of(value, name)
        # Plain ints and tuples of ints (sizes, strides, dims) repeat across nodes: their text is
        # interned. The type is part of the key: True == 1 and (1,) == (True,) print differently.
        kind = type(value)
        simple = kind is int or (kind is tuple and all(type(v) is int for v in value))
        key = (name, kind, value) if simple else None
        meta = _texts.get(key) if key is not None else None
        if meta is None:
            text = _value_text(name, value)
            meta = TensorMeta(shape=None, name=name,
                              value=text if len(text) <= 60 else text[:57] + "...")
            if key is not None:
                _remember(_texts, key, meta)
        return meta


def _signed(value: Any) -> Any:
    """A getter's value with every integer read back as the signed int64 torch holds."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value - _UINT64 if _INT64_MAX < value < _UINT64 else value
    if isinstance(value, tuple):  # also torch.Size, shown as the plain tuple it equals
        return tuple(_signed(v) for v in value)
    if isinstance(value, list):
        return [_signed(v) for v in value]
    return value


def _value_text(name: str, value: Any) -> str:
    """The saved non-tensor ``value`` of attribute ``name`` as the user would have written it."""
    value = _signed(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if name == "reduction" and value in _REDUCTIONS:
            return repr(_REDUCTIONS[value])
        if (name, value) in _LEFT_OUT:
            return "None"
    if isinstance(value, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        return str(value)
    return repr(value)  # torch.dtype reads torch.float32, a string keeps its quotes


@dataclass
class Walk:
    """The result of one walk: model records plus the live autograd nodes, by id."""

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    fns: list[Any] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    graph_freed: bool = False
    values: dict[int, torch.Tensor] = field(default_factory=dict)


def walk(
    root_fns: list[Any],
    *,
    param_names: dict[int, list[str]] | None = None,
    param_modules: dict[int, str] | None = None,
    values: int = 0,
) -> Walk:
    """Breadth-first walk from ``root_fns`` over ``next_functions``.

    Args:
        root_fns: The ``grad_fn`` of each captured output (duplicates allowed).
        param_names: ``id(parameter) -> qualified names`` (several for tied weights).
        param_modules: ``id(parameter) -> owning module path``.
        values: Keep the actual values of tensors with at most this many elements (leaves'
            data, forward values the graph saved); 0 keeps none.

    Returns:
        A ``Walk`` whose node ids are the visiting order (roots first); ``Walk.values`` holds the
        small tensors found, ``node id -> tensor`` (``read_values`` turns them into ``Values``).
    """
    param_names = param_names or {}
    param_modules = param_modules or {}
    result = Walk()
    ids: dict[Any, int] = {}
    queue: deque[Any] = deque()
    for fn in root_fns:
        if fn not in ids:
            ids[fn] = len(result.fns)
            result.fns.append(fn)
            queue.append(fn)
        result.roots.append(ids[fn])
    result.roots = list(dict.fromkeys(result.roots))
    reader = _SavedReader(limit=values, ids=ids)
    while queue:
        fn = queue.popleft()
        nid = ids[fn]
        for input_nr, (child, output_nr) in enumerate(fn.next_functions):
            if child is None:
                continue
            cid = ids.get(child)
            if cid is None:
                cid = ids[child] = len(result.fns)
                result.fns.append(child)
                queue.append(child)
            result.edges.append(Edge(src=cid, dst=nid, output_nr=output_nr, input_nr=input_nr))
    root_set = set(result.roots)
    for nid, fn in enumerate(result.fns):
        result.nodes.append(_describe(nid, fn, reader, param_names, param_modules, nid in root_set))
    result.graph_freed = reader.freed
    result.values = reader.values
    return result


def small_enough(t: torch.Tensor, limit: int) -> bool:
    """Whether ``t`` is a real floating-point dense tensor of 1 to ``limit`` elements (the ones
    whose values are kept)."""
    return (  # the element count first: it rejects almost every tensor
        0 < t.numel() <= limit
        and t.layout == torch.strided
        and not t.is_nested
        and t.is_floating_point()
        and allocated(t)
    )


def allocated(t: torch.Tensor) -> bool:
    """Whether ``t``'s storage holds its elements now: FSDP2 frees its unsharded parameters'
    storage (resized to 0 bytes) between the forward and the backward's all-gather, and reading
    such a tensor reads freed memory (a segmentation fault, not an error)."""
    try:
        last = t.storage_offset() + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
        need = (last + 1) * t.element_size()
        return t.untyped_storage().nbytes() >= need
    except (RuntimeError, NotImplementedError):  # a wrapper subclass without a storage
        return False


def read_values(tensors: dict[int, torch.Tensor]) -> dict[int, Values]:
    """The values of small tensors, ``key -> Values``, in one transfer per device (copies made
    there, so nothing of the user's is changed or kept)."""
    by_device: dict[torch.device, list[int]] = {}
    for key, t in tensors.items():
        by_device.setdefault(t.device, []).append(key)
    out: dict[int, Values] = {}
    for keys in by_device.values():
        flat = torch.cat([tensors[k].detach().reshape(-1).to(torch.float64) for k in keys])
        data = flat.tolist() if flat.device.type == "cpu" else flat.cpu().tolist()
        at = 0
        for k in keys:
            t = tensors[k]
            n = t.numel()
            out[k] = Values(tuple(t.shape), tuple(data[at : at + n]))
            at += n
    return out


def _describe(
    nid: int,
    fn: Any,
    reader: _SavedReader,
    param_names: dict[int, list[str]],
    param_modules: dict[int, str],
    is_root: bool,
) -> Node:
    op = type(fn).__name__
    variable = getattr(fn, "variable", None) if op == "AccumulateGrad" else None
    if variable is not None:
        names = param_names.get(id(variable), ())
        if reader.limit and small_enough(variable, reader.limit):
            reader.values[nid] = variable
        return Node(
            id=nid,
            op=op,
            kind=PARAM if names else LEAF,
            label=names[0] if names else "leaf",
            names=tuple(names),
            outputs=(_meta_of(variable),),
            module=param_modules.get(id(variable)),
            is_root=is_root,
        )
    metadata = fn.metadata if hasattr(fn, "metadata") else {}
    tag = metadata.get(METADATA_KEY)
    module, source = (tag.module, tag.source) if isinstance(tag, Tag) else (None, None)
    recorded = metadata.get(VALUE_KEY)
    if reader.limit and recorded is not None and recorded.numel() <= reader.limit:
        reader.values[nid] = recorded  # as the op made it, before any in-place change
    return Node(
        id=nid,
        op=op,
        kind=OP,
        label=short_label(fn),
        outputs=_outputs_of(fn),
        saved=reader.read(fn, nid),
        module=module,
        source=source,
        is_root=is_root,
        opaque=OPAQUE_OPS.get(op),
    )
