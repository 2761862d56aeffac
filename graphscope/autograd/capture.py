"""``capture``: walk a tensor's autograd graph into a model ``Graph`` and arm its hooks.

Owns input validation (every message says what was wrong and how to fix it), parameter naming
and status with ``model=``, the live capture (``LiveGraph``: the model ``Graph`` plus the hooks
that record into it, removed by ``close()``), and the link from a live tensor back to its latest
capture (``graph_of``), kept in the root node's ``metadata`` dict so it dies with the user's graph.
"""

from __future__ import annotations

import functools
import math
import os
import sys
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from graphscope.autograd.hooks import Recorder, gc_paused
from graphscope.autograd.origin import trace_nonfinite
from graphscope.autograd.recording import module_classes, outside_of
from graphscope.autograd.walk import VALUES, read_values, small_enough, walk
from graphscope.diagnostics import diagnose, mode_note
from graphscope.health import Thresholds
from graphscope.errors import CaptureError, CaptureTypeError, ModeWarning, RecordingWarning, explain
from graphscope.model import LEAF, OP, PARAM, Graph, ParamInfo, ParamStatus, fmt_shape

_GRAPH_KEY = "graphscope.graph"
G = TypeVar("G", bound=Graph)


@dataclass(eq=False)
class LiveGraph(Graph):
    """A capture still attached to the user's autograd graph: its hooks record each backward
    through it. Everything but the hooks is the plain ``Graph`` (saved and loaded as one).

    Use it as a context manager, or call ``close()``, to remove the hooks early (after a backward
    that raised, say); a backward without ``retain_graph=True`` removes them by itself.
    """

    _recorder: Recorder | None = field(default=None, repr=False)

    def close(self) -> None:
        """Remove this capture's hooks now (idempotent)."""
        if self._recorder is not None:
            self._recorder.remove()

    def __enter__(self) -> LiveGraph:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close()
        # A learner's mistake inside the block (a non-scalar backward, a second backward) gets
        # its explanation attached to torch's own error, where the traceback shows it.
        lesson = explain(exc) if isinstance(exc, RuntimeError) else None
        if lesson is not None and not any(lesson in n for n in getattr(exc, "__notes__", ())):
            exc.add_note(f"graphscope: {lesson}")  # type: ignore[union-attr]


def _flatten(outputs: Any, path: str = "outputs") -> list[tuple[str, torch.Tensor]]:
    if isinstance(outputs, torch.Tensor):
        return [(path, outputs)]
    if isinstance(outputs, dict):
        items: list[tuple[str, Any]] = [(f"{path}[{k!r}]", v) for k, v in outputs.items()]
    elif isinstance(outputs, (list, tuple)):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(outputs)]
    else:
        raise CaptureTypeError(
            f"graphscope.capture expects a tensor (e.g. your loss) or a list/tuple/dict of "
            f"tensors, got {type(outputs).__name__}. Pass the tensor you call .backward() on."
        )
    found: list[tuple[str, torch.Tensor]] = []
    for name, v in items:
        if isinstance(v, (torch.Tensor, list, tuple, dict)):
            found += _flatten(v, name)
    return found


# Modules whose output depends on train()/eval(): dropout drops units only in train mode, batch
# norm normalises by the batch (and updates its running statistics) in train mode only.
_MODE_SENSITIVE = (torch.nn.modules.dropout._DropoutNd, torch.nn.modules.batchnorm._BatchNorm)


def _modes(model: torch.nn.Module) -> dict[str, str]:
    """``path -> "train" | "eval"`` for each dropout and batch-norm module of ``model``."""
    return {path: "train" if m.training else "eval" for path, m in model.named_modules()
            if isinstance(m, _MODE_SENSITIVE)}


def _train_mode_note(model: torch.nn.Module | None) -> str:
    """Evaluating (grad off) with dropout / batch norm still in train mode: say so."""
    if model is None or not any(m == "train" for m in _modes(uncompiled(model)).values()):
        return ""
    return (
        " Also, your model is still in train mode: while you evaluate, dropout keeps dropping "
        "units at random and batch norm normalises by this batch (and updates its running "
        "statistics). Call model.eval() before evaluating and model.train() before training."
    )


def _no_graph_reason(name: str, t: torch.Tensor) -> str:
    if t.is_inference():
        return (
            f"{name} was created under torch.inference_mode(): inference tensors never record "
            "an autograd graph. Run the forward pass outside inference_mode (use "
            "torch.no_grad() only for evaluation, and neither for training)."
        )
    if t.requires_grad:
        return (
            f"{name} is a leaf tensor (shape {fmt_shape(t.shape)}): it was created directly, not "
            "computed, so there is no graph above it. Capture the result of a computation, "
            "e.g. loss = model(x).sum(), not a parameter or input."
        )
    if not torch.is_grad_enabled():
        return (
            f"{name} does not require grad because grad mode is off here (you are inside "
            "torch.no_grad() or torch.set_grad_enabled(False)): autograd records no graph "
            "there, which is what you want while evaluating, but leaves nothing to capture. "
            "Run the forward pass with gradients enabled to see its graph."
        )
    return (
        f"{name} has no grad_fn: autograd records operations only on tensors that require "
        "grad, and nothing it was computed from requires grad (or it was built under "
        "torch.no_grad(), or .detach()ed on the way), so to autograd it is a constant with no "
        "graph. Create your inputs or weights with requires_grad=True "
        "(torch.tensor(2.0, requires_grad=True), or w.requires_grad_()); a model's parameters "
        "require grad already unless they were frozen."
    )


def _model_params(model: Any) -> tuple[list[tuple[str, torch.nn.Parameter]], dict[int, list[str]]]:
    if not isinstance(model, torch.nn.Module):
        raise CaptureTypeError(
            f"model= must be a torch.nn.Module, got {type(model).__name__}."
        )
    named = list(model.named_parameters(remove_duplicate=False))
    names: dict[int, list[str]] = {}
    for name, p in named:
        names.setdefault(id(p), []).append(name)
    # Under FSDP2 the graph's leaves are the unsharded parameters, the modules may hold the
    # sharded ones: both go by the qualified name. (Imported here: distributed imports capture.)
    from graphscope.autograd.distributed import unsharded_pairs

    for sharded, unsharded in unsharded_pairs(model):
        got = names.get(id(sharded)) or names.get(id(unsharded))
        if got:
            names[id(sharded)] = names[id(unsharded)] = got
    return named, names


def uncompiled(model: torch.nn.Module) -> torch.nn.Module:
    """The module a ``torch.compile`` wrapper holds, so parameters are named as the user wrote
    them (``layers.0.weight``, not ``_orig_mod.layers.0.weight``)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def _module_of(name: str) -> str:
    return name.rpartition(".")[0]


def _opaque_param_ids(fn: Any) -> set[int]:
    """Parameters a reentrant checkpoint's function can reach: the module it is or is bound to,
    the modules in its closure, and the module-level globals its code names."""
    run = getattr(fn, "run_function", None)
    candidates: list[Any] = [run, getattr(run, "__self__", None)]
    for cell in getattr(run, "__closure__", None) or ():
        try:
            candidates.append(cell.cell_contents)
        except ValueError:  # an empty cell
            continue
    code = getattr(run, "__code__", None)
    if code is not None:
        scope = getattr(run, "__globals__", {})
        candidates += [scope.get(name) for name in code.co_names]
    ids: set[int] = set()
    for c in candidates:
        if isinstance(c, torch.nn.Module):
            ids.update(id(p) for p in c.parameters())
    return ids


def capture(
    outputs: Any,
    *,
    model: torch.nn.Module | None = None,
    warn: bool = True,
    thresholds: Thresholds | None = None,
    values: int = VALUES,
    names: dict[str, torch.Tensor] | None = None,
) -> LiveGraph:
    """Walk the autograd graph behind ``outputs`` and record the next backward through it.

    Args:
        outputs: The loss tensor, or a list/tuple/dict of output tensors (one graph with
            several roots). Non-scalar outputs are fine.
        model: The ``nn.Module`` whose parameters should be named, and checked for parameters
            that get no gradient (unused, detached) or are frozen.
        warn: Issue ``graphscope.GradientWarning`` subclasses for the findings after backward.
        thresholds: Overrides for the vanishing/exploding/dead thresholds.
        values: Tensors of at most this many elements keep their actual values, micrograd
            style: each leaf's data and the forward values known at capture time
            (``node.value``), each gradient after backward (``node.grad_value``). Larger
            tensors keep statistics only; 0 keeps no values.
        names: Your names for your tensors, ``{"x": x, "w": w}`` (as torchviz's ``params=``).
            Without it, leaves that are not ``model=`` parameters, the captured output and
            other tensors in the graph are named after the variables that hold them in the
            code that called ``capture`` (the first frame outside graphscope and torch: ``x``,
            ``w``, ``loss``); a tensor held by two names is left unnamed rather than risk a
            wrong one. ``names`` wins over the frame.

    Returns:
        A ``LiveGraph`` (a ``Graph``): structure now; gradient statistics and findings once a
        backward through it has run. Use it as a context manager to remove the hooks even if
        backward raises.

    Raises:
        CaptureTypeError: ``outputs`` is not a tensor or a container of tensors, or ``model``
            is not an ``nn.Module``.
        CaptureError: A tensor has no autograd graph (a leaf, ``requires_grad=False``, built
            under ``torch.no_grad()`` or ``torch.inference_mode()``).

    Warns:
        RecordingWarning: The graph was already freed by an earlier ``backward()``: the capture
            has its structure only and can record nothing.

    Example:
        >>> graph = graphscope.capture(loss, model=model)  # doctest: +SKIP
        >>> loss.backward()  # doctest: +SKIP
        >>> print(*graph.findings, sep="\\n")  # doctest: +SKIP
    """
    tensors = _flatten(outputs)
    thresholds = thresholds or Thresholds()
    # The walk and the hooks allocate a few objects per node and no cycles: a full collection
    # in the middle of them would only slow them down.
    with gc_paused():
        graph, fns, freed = _build(LiveGraph, tensors, outputs, model=model, thresholds=thresholds,
                                   values=values)
        _name_tensors(graph, fns, _frame_names(_user_frame()), names)
        recorder = Recorder(graph, warn=warn, thresholds=thresholds, values=values)
        recorder.arm(fns)
    graph._recorder = recorder
    note = mode_note(graph.meta.get("modes", {}))
    if note is not None:
        graph.meta["mode_note"] = note
        if warn and all(m == "eval" for m in graph.meta["modes"].values()):
            warnings.warn(f"graphscope.capture: {note}", ModeWarning, stacklevel=2)
    ref = weakref.ref(graph)
    for _, t in tensors:
        t.grad_fn.metadata[_GRAPH_KEY] = ref
    if freed:
        warnings.warn(
            "graphscope.capture: this graph's backward() already ran and freed it, so the capture "
            "holds its structure only and will record no gradients. Call capture(loss) before "
            "loss.backward(), or pass retain_graph=True to the earlier backward.",
            RecordingWarning,
            stacklevel=2,
        )
    return graph


def structure(outputs: Any, *, model: torch.nn.Module | None = None, values: int = VALUES) -> Graph:
    """The graph behind ``outputs`` without arming anything: what ``capture`` walks, for drawing.

    Unlike ``capture``, nothing is attached to the user's autograd graph, so a later backward is
    observed by no one and ``graph_of`` does not find this graph.

    Raises:
        CaptureTypeError, CaptureError: As ``capture``.
    """
    with gc_paused():
        graph, fns, _ = _build(Graph, _flatten(outputs), outputs, model=model,
                               thresholds=Thresholds(), values=values)
        _name_tensors(graph, fns, _frame_names(_user_frame()), None)
    return graph


def _build(
    cls: type[G],
    tensors: list[tuple[str, torch.Tensor]],
    outputs: Any,
    *,
    model: torch.nn.Module | None,
    thresholds: Thresholds,
    values: int = 0,
) -> tuple[G, list[Any], bool]:
    """Validate, walk and describe: the model ``Graph``, the autograd nodes in id order, and
    whether an earlier backward already freed the graph."""
    if not tensors:
        raise CaptureTypeError(
            f"graphscope.capture found no tensor in the {type(outputs).__name__} it was given; "
            "pass the tensor you call .backward() on."
        )
    for name, t in tensors:
        if t.grad_fn is None:
            reason = _no_graph_reason(name if len(tensors) > 1 else "the tensor", t)
            if not torch.is_grad_enabled():
                reason += _train_mode_note(model)
            raise CaptureError(reason)
    named: list[tuple[str, torch.nn.Parameter]] = []
    names: dict[int, list[str]] = {}
    if model is not None:
        model = uncompiled(model)
        named, names = _model_params(model)
    modules = {pid: _module_of(ns[0]) for pid, ns in names.items()}
    if values < 0:
        raise CaptureTypeError(f"values= is a number of elements (0 keeps none), got {values}")
    w = walk([t.grad_fn for _, t in tensors], param_names=names, param_modules=modules,
             values=values)
    graph = cls(nodes=w.nodes, edges=w.edges, roots=w.roots)
    if values:
        _keep_values(graph, w.values, tensors, w.fns, values)
    graph.meta = {
        "torch": torch.__version__,
        "root_values": _root_values(tensors),
        "graph_freed": w.graph_freed,
        "thresholds": thresholds.to_dict(),
    }
    if not w.graph_freed and _any_nonfinite(tensors, graph.meta["root_values"]):
        root_ids = {w.fns[r]: r for r in w.roots}
        inputs: list[list[tuple[int, int]]] = [[] for _ in graph.nodes]
        for e in graph.edges:
            inputs[e.dst].append((e.src, e.output_nr))
        graph.meta["forward_nonfinite"] = trace_nonfinite(
            w.fns,
            [(root_ids[t.grad_fn], t) for _, t in tensors],
            inputs,
            _forward_order(*_neighbours(graph)),
            outside.origin if (outside := outside_of()) is not None else None,
        )
    scale = loss_scale_of(w.fns[w.roots[0]]) if len(w.roots) == 1 else None
    if scale is not None:
        graph.meta["loss_scale"] = scale
    if model is not None:
        graph.meta["model"] = type(model).__name__
        graph.meta["module_classes"] = module_classes(model)
        graph.meta["training"] = model.training
        modes = _modes(model)
        if modes:
            graph.meta["modes"] = modes
        graph.params = _param_status(graph, w.fns, named)
        # Before inference, an op has a module or source only if a recording tagged it.
        recorded = any(n.kind == OP and (n.module, n.source) != (None, None) for n in graph.nodes)
        if recorded:
            graph.meta["module_attribution"] = "recorded during forward"
        else:
            _attribute_ops(graph)
    graph.findings = diagnose(graph, thresholds=thresholds)
    return graph, w.fns, w.graph_freed


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _key(t: torch.Tensor) -> Any:
    """What identifies a tensor's node: its ``grad_fn`` (first output), or the leaf itself."""
    if t.grad_fn is not None:
        return t.grad_fn if t.output_nr == 0 else None
    return id(t) if t.requires_grad else None


_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep


def _user_frame() -> Any:
    """The innermost frame outside graphscope and torch: the user's code that called capture
    (directly, or through ``render(loss)`` or a watched ``backward()``)."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith((_PACKAGE_DIR, _TORCH_DIR)):
        frame = frame.f_back
    return frame


def _frame_names(frame: Any) -> dict[Any, str]:
    """``node key -> variable name`` for the tensors the calling code holds in plain variables,
    only where exactly one name holds a tensor."""
    if frame is None:
        return {}
    seen: dict[Any, set[str]] = {}
    module_level = frame.f_locals is frame.f_globals
    scopes = [frame.f_globals] if module_level else [frame.f_locals, frame.f_globals]
    for scope in scopes:
        for name, value in list(scope.items()):
            if isinstance(value, torch.Tensor) and not name.startswith("_"):
                key = _key(value)
                if key is not None:
                    seen.setdefault(key, set()).add(name)
    if not module_level and sys.version_info < (3, 13):
        # Before PEP 667, reading a function's f_locals fills a dict cached on the frame that
        # would keep the loss and its activations alive after the user's `del loss`; the dict
        # is rebuilt from the real locals whenever it is read again, so its tensors are dropped.
        cached = frame.f_locals
        for name in [n for n, v in cached.items() if isinstance(v, torch.Tensor)]:
            del cached[name]
    return {key: next(iter(ns)) for key, ns in seen.items() if len(ns) == 1}


def _name_tensors(graph: Graph, fns: list[Any], found: dict[Any, str],
                  given: dict[str, torch.Tensor] | None) -> None:
    """Set ``var_name`` (and a leaf's label) from the frame's names, then from ``names=``."""
    if given is not None:
        if not isinstance(given, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in given.items()
        ):
            raise CaptureTypeError(
                "names= maps your names to your tensors, e.g. names={'x': x, 'w': w}; got "
                f"{type(given).__name__}"
            )
        found = {**found, **{_key(t): name for name, t in given.items() if _key(t) is not None}}
    if not found:
        return
    for node, fn in zip(graph.nodes, fns):
        if node.kind == PARAM or len(node.outputs) > 1:
            continue
        variable = getattr(fn, "variable", None) if node.kind == LEAF else None
        name = found.get(id(variable)) if variable is not None else found.get(fn)
        if name:
            node.var_name = name
            if node.kind == LEAF:
                node.label = name
    graph.invalidate()


def _keep_values(graph: Graph, found: dict[int, torch.Tensor],
                 tensors: list[tuple[str, torch.Tensor]], fns: list[Any], limit: int) -> None:
    """Each small forward value the walk found, and each small captured output, on its node
    (single-output nodes only: one ``value`` per node)."""
    pending = dict(found)
    ids = {fn: i for i, fn in enumerate(fns)}
    for _, t in tensors:
        nid = ids.get(t.grad_fn)
        if nid is not None and t.output_nr == 0 and small_enough(t, limit):
            pending[nid] = t
    pending = {nid: t for nid, t in pending.items() if len(graph.nodes[nid].outputs) <= 1}
    for nid, v in read_values(pending).items():
        graph.nodes[nid].value = v


def loss_scale_of(fn: Any) -> float | None:
    """The factor of a ``GradScaler``-scaled loss: ``loss * s`` with ``s`` a one-element tensor,
    a power of two, that does not require grad. Its gradients are ``s`` times the true ones."""
    if type(fn).__name__ != "MulBackward0" or fn.next_functions[1][0] is not None:
        return None
    raw = getattr(fn, "_raw_saved_other", None)
    if raw is None or raw.unpack_hook is not None:
        return None
    t = raw.data
    if not isinstance(t, torch.Tensor) or t.numel() != 1 or t.is_complex():
        return None
    s = float(t.detach().reshape(()).item())
    return s if s >= 2 and math.isfinite(s) and math.log2(s).is_integer() else None


def _any_nonfinite(tensors: list[tuple[str, torch.Tensor]], values: list[Any]) -> bool:
    """Whether a captured output holds NaN or Inf: a scalar's value is already known; a larger
    output costs one reduction."""
    for (_, t), v in zip(tensors, values):
        if v is not None:
            if isinstance(v, str):  # 'nan', 'inf', '-inf'
                return True
        elif t.layout == torch.strided and not t.is_nested and t.numel() and not bool(
            t.detach().isfinite().all()
        ):
            return True
    return False


def _root_values(tensors: list[tuple[str, torch.Tensor]]) -> list[float | None]:
    """The value of each scalar root (one sync each), to tell a NaN loss from NaN gradients."""
    out: list[float | None] = []
    for _, t in tensors:
        if t.numel() == 1 and not t.is_complex() and t.layout == torch.strided:
            v = float(t.detach().reshape(()).item())
            out.append(v if math.isfinite(v) else repr(v))  # JSON-safe
        else:
            out.append(None)
    return out


def _param_status(
    graph: Graph, fns: list[Any], named: list[tuple[str, torch.nn.Parameter]]
) -> list[ParamInfo]:
    by_name = {name: n.id for n in graph.param_nodes for name in n.names}
    opaque: dict[int, int] = {}
    for n in graph.nodes:
        if n.opaque is not None:
            for pid in _opaque_param_ids(fns[n.id]):
                opaque.setdefault(pid, n.id)
    out = []
    for name, p in named:
        module = _module_of(name)
        shape = tuple(p.shape)
        if name in by_name:
            out.append(ParamInfo(name, shape, ParamStatus.REACHED, by_name[name], module))
        elif not p.requires_grad:
            out.append(ParamInfo(name, shape, ParamStatus.FROZEN, None, module))
        elif id(p) in opaque:
            out.append(ParamInfo(name, shape, ParamStatus.OPAQUE, opaque[id(p)], module))
        else:
            out.append(ParamInfo(name, shape, ParamStatus.UNREACHABLE, None, module))
    return out


def _attribute_ops(graph: Graph) -> None:
    """Without a recorded forward, infer each op's module from the parameters around it.

    First, an op that consumes a parameter (through view ops such as ``t`` or ``expand``)
    belongs to the parameter's module. Then every other op between two attributed regions gets
    the deepest module path its nearest attributed producers and consumers share: a softmax
    between ``layers.3.attn.q`` and ``layers.3.attn.out`` lands in ``layers.3.attn``. Ops with
    attributed nodes on one side only (the loss after the head) stay unattributed.
    ``graphscope.watch`` records the exact module instead.
    """
    # Computed once for the whole inference.
    producers, consumers = _neighbours(graph)
    for p in graph.param_nodes:
        if p.module is None:
            continue
        frontier = [p.id]
        while frontier:
            nid = frontier.pop()
            for c in consumers[nid]:
                node = graph.nodes[c]
                if node.kind != OP or node.module is not None or node.opaque is not None:
                    continue
                node.module = p.module
                if len(producers[c]) == 1:
                    frontier.append(c)
    order = _forward_order(producers, consumers)
    below = _nearest_modules(graph, order, producers)
    above = _nearest_modules(graph, order[::-1], consumers)
    for node in graph.nodes:
        if node.kind == OP and node.module is None and node.opaque is None:
            b, a = below[node.id], above[node.id]
            if b is not None and a is not None:
                node.module = _common_module((b, a)) or None
    graph.meta["module_attribution"] = "inferred from parameters"


def _neighbours(graph: Graph) -> tuple[list[list[int]], list[list[int]]]:
    """Each node's distinct producers and distinct consumers (``x * x`` is one producer)."""
    prod: list[list[int]] = [[] for _ in graph.nodes]
    cons: list[list[int]] = [[] for _ in graph.nodes]
    for e in graph.edges:
        prod[e.dst].append(e.src)
        cons[e.src].append(e.dst)
    # Most nodes have one or two neighbours: only those with more can repeat one.
    return ([list(dict.fromkeys(p)) if len(p) > 1 else p for p in prod],
            [list(dict.fromkeys(c)) if len(c) > 1 else c for c in cons])


def _forward_order(producers: list[list[int]], consumers: list[list[int]]) -> list[int]:
    """Node ids with every producer before its consumers (Kahn's algorithm, iterative)."""
    pending = [len(p) for p in producers]
    ready = [nid for nid, count in enumerate(pending) if count == 0]
    order: list[int] = []
    while ready:
        nid = ready.pop()
        order.append(nid)
        for c in consumers[nid]:
            pending[c] -= 1
            if pending[c] == 0:
                ready.append(c)
    return order


def _nearest_modules(
    graph: Graph, order: list[int], neighbours: list[list[int]]
) -> list[str | None]:
    """For each node, the shared module of the nearest attributed nodes on one side."""
    found: list[str | None] = [None] * len(graph.nodes)
    nodes = graph.nodes
    for nid in order:
        module = nodes[nid].module
        if module is None:
            near = neighbours[nid]
            if len(near) == 1:  # the common case: a chain passes its module along
                found[nid] = found[near[0]]
                continue
            seen = {found[m] for m in near}
            seen.discard(None)
            if len(seen) == 1:
                module = seen.pop()
            elif seen:
                module = _common_module(tuple(sorted(seen)))  # type: ignore[arg-type]
        found[nid] = module
    return found


@functools.lru_cache(maxsize=4096)
def _common_module(paths: tuple[str, ...]) -> str:
    """The longest dotted prefix the module paths share (``""`` for the root module)."""
    parts = [p.split(".") if p else [] for p in paths]
    common: list[str] = []
    for pieces in zip(*parts):
        if any(x != pieces[0] for x in pieces):
            break
        common.append(pieces[0])
    return ".".join(common)


def graph_of(tensor: torch.Tensor) -> Graph | None:
    """The latest capture of ``tensor`` still alive, or ``None``."""
    fn = getattr(tensor, "grad_fn", None)
    if fn is None:
        return None
    ref = fn.metadata.get(_GRAPH_KEY)
    return ref() if ref is not None else None
