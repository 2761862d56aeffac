"""Arms a post-hook on every autograd node of a capture and records each backward pass.

Owns the hook lifetime. Each hook only queues reductions (``StatsBatch.add``); the first hook of
a pass queues an engine callback that runs once at the end of that backward, moves all
statistics to the host in one transfer, writes them into the model, runs the diagnostics and
removes the hooks (unless the backward ran with ``retain_graph=True``, where the user may run it
again and the next pass is recorded separately). A pass that raised never reaches its callback:
``LiveGraph.close()`` or leaving ``with capture(...)`` removes the hooks.

Which passes are the capture's: a parameter's ``AccumulateGrad`` node is shared by every graph
that uses the parameter, so its hook also fires for other graphs' backwards (a GAN's second
loss, a gradient penalty's double backward). A pass belongs to the capture only when it runs
through one of the capture's roots; every node of the capture lies below a root, so within a
pass that reaches a root, a root's hook is the first of ours to fire. A hook whose graph task
started elsewhere is ignored, unless it comes from the nested backward a reentrant checkpoint
runs inside one of the capture's opaque nodes (told by a pre-hook on those nodes).

A failure inside a hook never reaches the user's backward: the node's statistics are left out
and one ``RecordingWarning`` per pass names the node and the error.

At the end of a pass the recorder also reads each leaf's ``.grad`` (AccumulateGrad has written it
by the time the engine runs its final callbacks, with or without ``retain_graph``). When it is not
the gradient this pass sent to that leaf, an earlier backward's gradient was added to it (a
forgotten ``zero_grad()``, or accumulation on purpose): its norm is kept in
``graph.meta["accumulated_grad"]``. ``.grad`` is only read, never written.

The hooks hold only this recorder, which holds plain data (the model ``Graph``), hook handles
and weak references to the leaves, never tensors or autograd nodes, so nothing here keeps the
user's graph or parameters alive.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import threading
import warnings
import weakref
from typing import Any, Collection, Iterator

import torch

from graphscope.autograd.recording import user_stacklevel
from graphscope.autograd.stats import StatsBatch
from graphscope.diagnostics import diagnose, warning_class, where
from graphscope.health import Thresholds
from graphscope.errors import RecordingWarning
from graphscope.model import OP, Graph, GradStats

_engine = torch.autograd.Variable._execution_engine

# Armed recorders, for ``active_hook_count()``. Weak: a recorder lives exactly as long as the
# autograd nodes whose hooks reference it, or the Graph that owns it.
_live: weakref.WeakSet[Recorder] = weakref.WeakSet()
_live_lock = threading.Lock()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Hold off the cyclic garbage collector for a burst of allocations, then restore it.

    Arming 6,000 hooks allocates 12,000 objects next to a large model ``Graph``: the collector
    runs full passes over everything meanwhile and makes arming ~10x slower. Nothing allocated
    here forms cycles that need collecting before the block ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def active_hook_count() -> int:
    """How many graphscope hooks sit on autograd nodes that are still alive, over all captures."""
    with _live_lock:
        recorders = list(_live)
    return sum(r.live_hooks() for r in recorders)


class Recorder:
    """Records the backward passes of one capture into its ``Graph``."""

    def __init__(
        self,
        graph: Graph,
        *,
        warn: bool,
        thresholds: Thresholds,
        values: int = 0,
    ) -> None:
        self.graph = graph
        self.warn = warn
        self.thresholds = thresholds
        # Gradients of at most this many elements keep their values (Node.grad_value).
        self.values = values
        self._handles: list[Any] = []
        # in_edge[node][input_nr] -> edge index, for the gradients a node sends back.
        self._in_edge: list[dict[int, int]] = [{} for _ in graph.nodes]
        for i, e in enumerate(graph.edges):
            self._in_edge[e.dst][e.input_nr] = i
        self._task: int | None = None
        self._keep = False
        self._roots = frozenset(graph.roots)
        # A reentrant checkpoint runs its region in a nested backward (another graph task) while
        # its node executes in the open pass: the pre-hook counts the opaque nodes running now.
        self._opaque = frozenset(n.id for n in graph.nodes if n.opaque is not None)
        self._inside_opaque = 0
        self._batch = StatsBatch()
        self._node_rows: dict[int, list[int | None]] = {}
        self._edge_rows: dict[int, int] = {}
        self._order: list[int] = []
        # AccumulateGrad node id -> its leaf (a parameter), to read .grad after the pass.
        self._leaves: dict[int, weakref.ref[torch.Tensor]] = {}
        self._had_grad: list[int] = []
        # The first failure inside a hook in the current pass: (node id, exception).
        self.error: tuple[int, BaseException] | None = None

    # -- arming -------------------------------------------------------------------------------

    def arm(self, fns: list[Any]) -> None:
        """Register one post-hook per autograd node (``fns`` indexed by node id)."""
        on_node = self._on_node
        handles = self._handles
        with gc_paused():
            for nid, fn in enumerate(fns):
                # A partial, not a closure: built and called in C, one Python frame less per
                # node on every backward (hook(grad_inputs, grad_outputs) -> on_node(nid, ...)).
                handles.append(fn.register_hook(functools.partial(on_node, nid)))
            for nid in self._opaque:
                self._handles.append(fns[nid].register_prehook(self._enter_opaque))
            for nid, fn in enumerate(fns):
                if self.graph.nodes[nid].kind != OP:
                    variable = getattr(fn, "variable", None)
                    if isinstance(variable, torch.Tensor):
                        self._leaves[nid] = weakref.ref(variable)
        with _live_lock:
            _live.add(self)

    def remove(self) -> None:
        """Remove every hook this recorder added (idempotent)."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        with _live_lock:
            _live.discard(self)

    def live_hooks(self) -> int:
        """Hooks of this recorder still registered on a live autograd node."""
        count = 0
        for h in self._handles:
            hooks = h.hooks_dict_ref()
            count += hooks is not None and h.id in hooks
        return count

    # -- recording ----------------------------------------------------------------------------

    def _begin(self, task: int) -> None:
        self._task = task
        self._keep = bool(torch._C._autograd._get_current_graph_task_keep_graph())
        self._batch = StatsBatch(values=self.values)
        self._node_rows, self._edge_rows, self._order = {}, {}, []
        # Leaves whose .grad is already set as the pass starts: only those can end it holding
        # more than the pass sent (an unset .grad becomes exactly the gradient sent). Checked
        # here, before any AccumulateGrad of this capture runs (the roots run first).
        self._had_grad = [nid for nid, ref in self._leaves.items() if _grad_of(ref) is not None]
        self._inside_opaque = 0
        self.error = None
        _engine.queue_callback(self._finish)

    def _enter_opaque(self, grad_outputs: Any) -> None:
        if self._task is not None and torch._C._current_graph_task_id() == self._task:
            self._inside_opaque += 1

    def _on_node(self, nid: int, grad_inputs: Any, grad_outputs: Any) -> None:
        # Never let graphscope break the user's backward: record the failure instead.
        try:
            task = torch._C._current_graph_task_id()
            if task == self._task:
                if self._inside_opaque and nid in self._opaque:
                    self._inside_opaque -= 1
            elif self._task is not None and self._inside_opaque:
                pass  # the nested backward of a reentrant region inside the open pass
            elif nid in self._roots:
                self._begin(task)
            else:
                return  # another graph's backward reaching a node it shares with this one
            batch = self._batch
            self._order.append(nid)
            self._node_rows[nid] = [None if g is None else batch.add(g) for g in grad_outputs]
            slots = self._in_edge[nid]
            for input_nr, g in enumerate(grad_inputs):
                if g is not None and input_nr in slots:
                    self._edge_rows[slots[input_nr]] = batch.add(g)
        except Exception as exc:
            self._failed(nid, exc)

    def _failed(self, nid: int, exc: Exception) -> None:
        """Warn once per pass: the first node whose statistics could not be recorded."""
        if self.error is not None:
            return
        self.error = (nid, exc)
        warnings.warn(
            f"graphscope could not record the gradient of {where(self.graph.nodes[nid])}: "
            f"{type(exc).__name__}: {exc}. Its statistics are missing from this capture (shown as "
            "no gradient); your backward and your gradients are unaffected.",
            RecordingWarning,
            stacklevel=user_stacklevel(),
        )

    def _finish(self) -> None:
        try:
            held = self._held_grads()
            self._write(self._batch.collect(), held)
            if self._batch.changed:
                self._changed_in_place(set(self._batch.changed))
        except Exception as exc:
            warnings.warn(
                f"graphscope could not record this backward pass: {type(exc).__name__}: {exc}. "
                "The capture keeps its previous statistics; your gradients are unaffected.",
                RecordingWarning,
                stacklevel=user_stacklevel(),
            )
        finally:
            self._task = None
            if not self._keep:
                self.remove()

    def _changed_in_place(self, rows: set[int]) -> None:
        """Warn that a gradient changed in place after its node sent it (by a user hook)."""
        sent = {r: nid for nid, rs in self._node_rows.items() for r in rs if r in rows}
        sent.update((r, self.graph.edges[ei].dst) for ei, r in self._edge_rows.items() if r in rows)
        nid = min(sent.values(), default=None)
        at = where(self.graph.nodes[nid]) if nid is not None else "a node"
        warnings.warn(
            f"graphscope: a gradient of {at} was changed in place during backward after it was "
            f"sent ({len(rows)} in all), most likely by a hook that modifies its argument; torch "
            "asks hooks to return a new gradient instead. The statistics of those gradients are "
            "of the changed values.",
            RecordingWarning,
            stacklevel=user_stacklevel(),
        )

    def _held_grads(self) -> dict[int, tuple[int, int]]:
        """Queue the statistics of ``.grad`` of each leaf that had one before this pass and whose
        AccumulateGrad ran in it: leaf node id -> (row, the leaf's version counter)."""
        held: dict[int, tuple[int, int]] = {}
        for nid in self._had_grad:
            rows = self._node_rows.get(nid)
            leaf = self._leaves[nid]()
            if rows and rows[0] is not None and leaf is not None and leaf.grad is not None:
                held[nid] = (self._batch.add(leaf.grad), leaf._version)
        return held

    def _write(self, stats: list[GradStats], held: dict[int, tuple[int, int]]) -> None:
        g = self.graph
        kept = self._batch.values
        for n in g.nodes:
            n.grad, n.grads, n.executed, n.exec_order = None, (), False, None
            n.grad_value = None
        for e in g.edges:
            e.grad = None
        for order, nid in enumerate(self._order):
            node = g.nodes[nid]
            # A node whose hook failed has no rows: executed, with no statistics.
            rows = self._node_rows.get(nid, ())
            grads = tuple(None if r is None else stats[r] for r in rows)
            present = [s for s in grads if s is not None]
            node.grads = grads
            node.grad = GradStats.combine(present) if present else None
            if len(rows) == 1 and rows[0] is not None:
                node.grad_value = kept.get(rows[0])
            node.executed = True
            node.exec_order = order
        for ei, r in self._edge_rows.items():
            g.edges[ei].grad = stats[r]
        accumulated = [
            {"node": nid, "norm": stats[row].norm, "param_version": version}
            for nid, (row, version) in held.items()
            if _added_to(stats[row], g.nodes[nid].grad)
        ]
        if accumulated:
            g.meta["accumulated_grad"] = accumulated
        else:
            g.meta.pop("accumulated_grad", None)
        g.passes += 1
        g.findings = diagnose(g, thresholds=self.thresholds)
        g.invalidate()
        if self.warn:
            emit_findings(g)


def _grad_of(ref: weakref.ref[torch.Tensor]) -> torch.Tensor | None:
    leaf = ref()
    return None if leaf is None else leaf.grad


def _added_to(held: GradStats, sent: GradStats | None) -> bool:
    """Whether a ``.grad`` holding ``held`` is more than the gradient ``sent`` in this pass.

    A ``.grad`` that was ``None`` or zeros becomes exactly the gradient sent, so the extremes
    match exactly and the norms to float rounding (the same values reduced in another memory
    layout). Non-finite values are the NaN findings' business.
    """
    if sent is None or not (held.finite and sent.finite):
        return False
    return (held.min, held.max) != (sent.min, sent.max) or not math.isclose(
        held.norm, sent.norm, rel_tol=1e-5
    )


def emit_findings(graph: Graph, *, kinds: Collection[str] | None = None) -> None:
    """Issue one Python warning per kind of finding (a 20-layer stack is one warning).

    Args:
        graph: A capture whose ``findings`` are current.
        kinds: Only these finding kinds (``None``: every kind).

    Information-only findings are not issued. A warning-level kind without a category of its
    own is issued as the base ``GradientWarning``.
    """
    by_kind: dict[str, list[Any]] = {}
    for f in graph.findings:
        if kinds is not None and f.kind not in kinds:
            continue
        if warning_class(f) is not None:
            by_kind.setdefault(f.kind, []).append(f)
    for kind, fs in by_kind.items():
        first = fs[0]
        more = f" (and {len(fs) - 1} more like it; see graph.findings)" if len(fs) > 1 else ""
        text = f"{first.message}{more}"
        if first.hint:
            text += f"\n  hint: {first.hint}"
        warnings.warn(text, warning_class(first), stacklevel=user_stacklevel())
