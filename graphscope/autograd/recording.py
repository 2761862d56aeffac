"""Records, during a forward pass, which module and which user source line made each autograd node.

Owns forward-time attribution. While a ``Recording`` is active, forward pre/post hooks on the
model's modules keep a stack of module paths, and a ``TorchFunctionMode`` looks at every torch call:
when the call created autograd nodes (the thread's autograd sequence number moved), it writes
a ``walk.Tag`` (module path, source line) into each new node's ``metadata`` under
``METADATA_KEY``, the record ``walk`` reads back. Nodes a C++ composite creates out of sight of Python (the
``TBackward0`` inside ``F.linear``) are reached by walking down ``next_functions`` from the
result's ``grad_fn`` through nodes that are untagged and newer than the call's start. A module's
post-hook does the same for its outputs, with the module's own start: that tags the node a
region the mode never sees made (a compiled module's ``CompiledFunctionBackward``).

The source line is the first stack frame outside torch and graphscope's capture layer: the line of the user's
``forward`` that called the module or op. Frames are classified once per code object.

Compiled and scripted code is left to torch. A ``torch.compile``'d module is one opaque region:
its inside is not hooked, and the mode is lifted off the stack while it runs, so Dynamo neither
traces the mode nor sees a different mode stack (which would recompile the model on entering
and leaving the block). Wherever Dynamo still traces the hooks or the mode (a compiled function,
``module.compile()``), they do nothing while ``torch.compiler.is_compiling()``. TorchScript
modules cannot carry Python hooks; their ops keep no module path.

Values made outside the graph (a torch call that creates no autograd node while grad mode is on:
a parameter-free normalisation of a batch that needs no grad, a mask) are noted in ``Outside``,
with their op, module, line and a lazily read finiteness, so that a capture whose NaN enters
the graph as data can name the op that made it (``Outside.origin``, read by ``origin``).

Everything is undone on exit (hooks removed, mode taken off the stack even when the user's own
modes were pushed above it), also when the forward raised. The recording never changes values,
RNG state, grad mode or train/eval mode: it only writes node metadata (and keeps its notes).

Repeated blocks (``layers.0`` .. ``layers.11``) are recognised where they are drawn, from the op
structure itself: ``graphscope.export.collapse``.

Imports torch; only the capture layer may import this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from dataclasses import dataclass
from types import CodeType, TracebackType
from typing import Any, Callable, Iterator

import torch
from torch.overrides import TorchFunctionMode

from graphscope.autograd.walk import METADATA_KEY, VALUE_KEY, VALUES, Tag, small_enough
from graphscope.model import Source

_next_sequence_nr = torch._C._autograd._get_sequence_nr
# AccumulateGrad (a leaf's node) has no place in forward order: its sequence number is the max.
_LEAF_SEQUENCE_NR = 2**64 - 1

# The capture layer and torch are never "the user's line"; graphscope's demos are.
_INTERNAL_DIRS = (
    os.path.dirname(torch.__file__) + os.sep,
    os.path.dirname(os.path.abspath(__file__)) + os.sep,
)
_internal_code: dict[CodeType, bool] = {}


def _is_internal(code: CodeType) -> bool:
    hit = _internal_code.get(code)
    if hit is None:
        name = code.co_filename
        hit = _internal_code[code] = name.startswith(_INTERNAL_DIRS) or name.startswith("<frozen")
    return hit


def _compiled_module_type() -> type | None:
    # torch._dynamo is imported by the first torch.compile; before that no module is compiled.
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return getattr(eval_frame, "OptimizedModule", None)


def _remove_mode(mode: TorchFunctionMode) -> None:
    """Take ``mode`` off the torch function mode stack, keeping the modes above it in order.

    ``TorchFunctionMode.__exit__`` pops the top, whatever it is: a mode the user entered inside
    the block and left on, or a later recording (watches nested and left out of order).
    """
    above = []
    try:
        while torch._C._len_torch_function_stack():
            top = torch._C._pop_torch_function_stack()
            if top is mode:
                break
            above.append(top)
    finally:
        for m in reversed(above):
            torch._C._push_on_torch_function_stack(m)


def _has_mode(mode: TorchFunctionMode) -> bool:
    """Whether ``mode`` is anywhere on the torch function mode stack."""
    return any(torch._C._get_function_stack_at(i) is mode
               for i in range(torch._C._len_torch_function_stack()))


def user_frame(depth: int = 1) -> tuple[str, int, str] | None:
    """``(file, line, function)`` of the first frame outside torch and ``graphscope.autograd``.

    Args:
        depth: Frames to skip above the caller of this function.

    Returns:
        The frame's file, current line and qualified function name, or ``None`` when every
        frame is internal (a forward driven entirely by torch).
    """
    frame = sys._getframe(depth + 1)
    while frame is not None and _is_internal(frame.f_code):
        frame = frame.f_back
    if frame is None:
        return None
    code = frame.f_code
    return code.co_filename, frame.f_lineno, getattr(code, "co_qualname", code.co_name)


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes a ``warnings.warn`` in the caller point at the first frame
    outside torch and ``graphscope.autograd`` (the user's ``backward()``), as ``user_frame``."""
    frame, level = sys._getframe(1), 1
    while frame is not None and _is_internal(frame.f_code):
        frame, level = frame.f_back, level + 1
    return level if frame is not None else 1


# The recordings active on each thread, innermost last: what a capture asks for the values made
# outside the autograd graph (``outside_of``).
_active: dict[int, list[Recording]] = {}
# At most this many values made outside the graph are noted per forward pass.
_OUTSIDE_MAX = 4096
_REFLECTED = {"truediv": "div", "rtruediv": "div", "itruediv": "div", "floordiv": "floor_divide",
              "rsub": "sub", "isub": "sub", "radd": "add", "iadd": "add", "rmul": "mul",
              "imul": "mul", "rpow": "pow", "ipow": "pow", "rmatmul": "matmul", "getitem": "index"}


def _key(t: torch.Tensor) -> tuple[int, int]:
    """What identifies a value across views of it (a reshape keeps both)."""
    return t.data_ptr(), t.numel()


def _floating(t: Any) -> bool:
    return (isinstance(t, torch.Tensor) and t.layout == torch.strided and not t.is_nested
            and (t.is_floating_point() or t.is_complex()) and t.numel() > 0)


@dataclass
class _Made:
    """A floating value made by a torch call that recorded no autograd node."""

    label: str
    module: str | None
    source: Source | None
    inputs: tuple[tuple[int, int], ...]  # keys of its floating tensor inputs
    finite: torch.Tensor  # 0-dim bool, computed on its device without a sync


class Outside:
    """The values a forward pass computes outside the autograd graph (no input needs a
    gradient: a parameter-free normalisation of the batch, a mask, a constant), each with its
    op, module, line and a lazily read finiteness, so a NaN that enters the graph as data can be
    traced to the op that made it. Noted only while grad mode is on (a training forward), at
    most ``_OUTSIDE_MAX`` per pass; each costs one small reduction on the value's device."""

    def __init__(self) -> None:
        self.made: dict[tuple[int, int], _Made] = {}
        self.external: dict[tuple[int, int], torch.Tensor] = {}  # inputs made before: finiteness

    def clear(self) -> None:
        self.made.clear()
        self.external.clear()

    def note(self, func: Any, args: tuple[Any, ...], kwargs: Any, out: torch.Tensor,
             recording: Recording) -> None:
        if recording.paused or not _floating(out) or len(self.made) >= _OUTSIDE_MAX:
            return
        if threading.get_ident() != recording._thread:
            return
        inputs, own = [], _key(out)
        for a in (*args, *(kwargs or {}).values()):
            for t in (a if isinstance(a, (list, tuple)) else (a,)):
                if _floating(t):
                    k = _key(t)
                    if k == own:
                        continue  # an in-place op: what it read is overwritten
                    if k not in self.made and k not in self.external:
                        self.external[k] = torch.isfinite(t).all()
                    inputs.append(k)
        name = getattr(func, "__name__", "") or type(func).__name__
        bare = name.strip("_")
        label = _REFLECTED.get(bare, bare)
        where = user_frame() if recording.sources else None
        self.made[own] = _Made(label, recording.module, Source(*where) if where else None,
                               tuple(inputs), torch.isfinite(out).all())

    def origin(self, t: torch.Tensor) -> dict[str, Any] | None:
        """Where the non-finite value ``t`` (a graph's input that no node made) was made, as
        plain data: ``{"op", "module", "source", "through", "from_data"}``: the first op, in
        forward order, whose output is non-finite while its inputs are finite (``from_data``
        False), or, when an input it was made from was already non-finite, the first op that
        read it (``from_data`` True); ``through``: how many ops outside the graph led from it
        to ``t``. ``None`` when ``t`` was not made inside this forward pass."""
        top = self.made.get(_key(t))
        if top is None:
            return None
        chain, seen, todo = [], set(), [_key(t)]
        while todo:  # everything t was made from, outside the graph
            k = todo.pop()
            if k in seen or k not in self.made:
                continue
            seen.add(k)
            chain.append(k)
            todo += self.made[k].inputs
        flags = [self.made[k].finite for k in chain]
        ext = sorted({i for k in chain for i in self.made[k].inputs if i in self.external})
        flags += [self.external[i] for i in ext]
        with torch.no_grad():
            ok = [bool(v) for v in torch.stack([f.cpu() for f in flags]).tolist()]
        finite = dict(zip(chain + ext, ok))
        order = {k: i for i, k in enumerate(self.made)}  # insertion order is forward order
        bad = sorted((k for k in chain if not finite[k]), key=order.__getitem__)
        for k in bad:
            m = self.made[k]
            if all(finite.get(i, True) for i in m.inputs):
                return self._said(m, len(bad), from_data=False)
        for k in bad:  # every bad value came from an input already bad when the pass began
            m = self.made[k]
            if any(i in self.external and not finite[i] for i in m.inputs):
                return self._said(m, len(bad), from_data=True)
        return None

    @staticmethod
    def _said(m: _Made, through: int, *, from_data: bool) -> dict[str, Any]:
        return {"op": m.label, "module": m.module, "through": through, "from_data": from_data,
                "source": None if m.source is None else
                [m.source.file, m.source.line, m.source.function]}


def outside_of() -> Outside | None:
    """The values made outside the graph by the innermost recording active on this thread."""
    mine = _active.get(threading.get_ident())
    return mine[-1].outside if mine else None


class _TagMode(TorchFunctionMode):
    """Tags the nodes each torch call creates with the current module and source line."""

    def __init__(self, recording: Recording) -> None:
        super().__init__()
        self._recording = recording

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None
    ) -> Any:
        # Under Dynamo the call is traced, not run: tagging would make it graph-break.
        if self._recording.paused or torch.compiler.is_compiling():
            return func(*args, **(kwargs or {}))
        start = _next_sequence_nr()
        out = func(*args, **(kwargs or {}))
        # Cheap test first: most calls (shape reads, no-grad ops) create no autograd node.
        if _next_sequence_nr() != start:
            self._recording._tag(out, start)
        elif type(out) is torch.Tensor and out.grad_fn is None and torch.is_grad_enabled():
            try:
                self._recording.outside.note(func, args, kwargs, out, self._recording)
            except RuntimeError:
                pass  # a value without storage (a torch.func wrapper): nothing to note
        return out


class Recording:
    """Context manager: attributes each autograd node created inside it to a module and a line.

    Use ``record(model)`` to make one. Re-entering an active recording is an error; a finished
    one may be entered again.
    """

    def __init__(self, model: torch.nn.Module | None = None, *, sources: bool = True,
                 values: int = VALUES) -> None:
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"graphscope.record expects an nn.Module (or None), got {type(model).__name__}"
            )
        self.model = model
        self.sources = sources
        self.values = values
        self.paused = False
        # Set by watch: while paused, the mode is taken off the stack at the start of the root
        # module's forward (outside any torch call, where a mode may be popped) and put back at
        # the first forward that is not paused, so an unrecorded step's ops skip Python dispatch.
        self.lift_when_paused = False
        self._lifted = False
        # One entry per module running now: (path, sequence number at its start, whether its
        # pre-hook lifted the mode off the stack for a compiled region).
        self._stack: list[tuple[str, int, bool]] = []
        self._handles: list[Any] = []
        self._mode: _TagMode | None = None
        self._thread: int | None = None
        self.outside = Outside()

    @property
    def active(self) -> bool:
        return self._mode is not None

    def __enter__(self) -> Recording:
        if self._mode is not None:
            raise RuntimeError("this graphscope recording is already active; do not nest it")
        self._thread = threading.get_ident()
        _active.setdefault(self._thread, []).append(self)
        try:
            if self.model is not None:
                self._hook_modules(self.model)
            self._mode = _TagMode(self)
            self._mode.__enter__()
        except BaseException:
            self._undo()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._undo()

    def _undo(self) -> None:
        # Hooks and the mode are removed even when the forward raised: a module left hooked
        # would keep attributing (and slowing) every later forward of the user's model.
        mode, self._mode = self._mode, None
        mine = _active.get(self._thread or 0, [])
        if self in mine:
            mine.remove(self)
        try:
            if mode is not None:
                _remove_mode(mode)
        finally:
            for h in self._handles:
                h.remove()
            self._handles.clear()
            self._stack.clear()

    def _hook_modules(self, model: torch.nn.Module) -> None:
        compiled = _compiled_module_type()
        opaque: list[str] = []  # path prefixes whose modules run out of Python's sight
        for path, module in model.named_modules(remove_duplicate=True):
            if any(path.startswith(prefix) for prefix in opaque):
                continue
            if isinstance(module, torch.jit.ScriptModule):
                # Python hooks are refused on ScriptModules, and their ops never reach the mode.
                opaque.append(path + "." if path else "")
                continue
            region = compiled is not None and isinstance(module, compiled)
            if region:
                opaque.append(path + "." if path else "")
            if module is model:
                self._handles.append(module.register_forward_pre_hook(self._root_pre_hook))
            self._handles.append(module.register_forward_pre_hook(self._pre_hook(path, region)))
            self._handles.append(
                module.register_forward_hook(self._post_hook(path), always_call=True)
            )

    def _root_pre_hook(self, _module: Any, _args: Any) -> None:
        if not self.lift_when_paused or self._stack or torch.compiler.is_compiling():
            return  # a nested call of the root (inside its own forward) changes nothing
        top = torch.overrides._get_current_function_mode()
        if self.paused and not self._lifted and top is self._mode:
            torch._C._pop_torch_function_stack()
            self._lifted = True
        elif not self.paused and self._lifted and self._mode is not None:
            if not _has_mode(self._mode):
                torch._C._push_on_torch_function_stack(self._mode)
            self._lifted = False

    def _pre_hook(self, path: str, region: bool) -> Callable[[Any, Any], None]:
        stack = self._stack

        def pre(_module: Any, _args: Any) -> None:
            if torch.compiler.is_compiling():
                return  # traced by Dynamo (module.compile(), a compiled caller): not run here
            lifted = region and torch.overrides._get_current_function_mode() is self._mode
            if lifted:
                torch._C._pop_torch_function_stack()
            if not stack:
                self.outside.clear()  # a new forward pass
            stack.append((path, _next_sequence_nr(), lifted))

        return pre

    def _post_hook(self, path: str) -> Callable[[Any, Any, Any], None]:
        stack = self._stack

        def post(_module: Any, _args: Any, out: Any) -> None:
            if torch.compiler.is_compiling():
                return
            # always_call=True runs this even when forward raised; pop back to our entry,
            # putting back the mode wherever a pre-hook lifted it.
            while stack:
                entry_path, start, lifted = stack[-1]
                try:
                    if entry_path == path and not self.paused and _next_sequence_nr() != start:
                        self._tag(out, start)
                finally:
                    stack.pop()
                    if lifted and self._mode is not None:
                        torch._C._push_on_torch_function_stack(self._mode)
                if entry_path == path:
                    break

        return post

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Stop tagging for the block (a backward pass): its ops are not forward ops.

        The mode is popped when it is on top of the stack, so the backward's own ops skip the
        Python dispatch altogether; under a user's mode pushed later, tagging is only paused.
        """
        if self._mode is None:
            yield
            return
        was, self.paused = self.paused, True
        try:
            if torch.overrides._get_current_function_mode() is self._mode:
                with torch.overrides._pop_mode_temporarily():
                    yield
            else:
                yield
        finally:
            self.paused = was

    @property
    def module(self) -> str | None:
        """The innermost module path running now (``""`` for the root), else ``None``."""
        return self._stack[-1][0] if self._stack else None

    def _tag(self, out: Any, start: int) -> None:
        if threading.get_ident() != self._thread:
            return
        fns = []
        if isinstance(out, torch.Tensor):
            fns.append(out.grad_fn)
            if self.values and out.grad_fn is not None and out.output_nr == 0 \
                    and small_enough(out, self.values) \
                    and VALUE_KEY not in out.grad_fn.metadata:
                # A small forward value, as it was made (a copy: a later in-place op or the
                # optimizer must not change it); read by the walk as the node's value.
                out.grad_fn.metadata[VALUE_KEY] = out.detach().clone()
        elif isinstance(out, (tuple, list)):
            fns.extend(t.grad_fn for t in out if isinstance(t, torch.Tensor))
        fns = [f for f in fns if f is not None]
        info = None  # the frame walk is paid only when some node needs the tag
        while fns:
            fn = fns.pop()
            seq = fn._sequence_nr()
            if seq < start or seq == _LEAF_SEQUENCE_NR:
                continue
            metadata = fn.metadata
            if METADATA_KEY in metadata:
                continue
            if info is None:
                where = user_frame() if self.sources else None
                info = Tag(self.module, Source(*where) if where is not None else None)
            metadata[METADATA_KEY] = info
            fns.extend(child for child, _ in fn.next_functions if child is not None)


def record(model: torch.nn.Module | None = None, *, sources: bool = True,
           values: int = VALUES) -> Recording:
    """Attribute every autograd node made inside the block to its module and source line.

    Args:
        model: The model whose module paths to record (``encoder.layers.3.attn``); ``None``
            records source lines only.
        sources: Also record the user's source line (file, line, function) of each node.
        values: Keep a copy of each op's output of at most this many elements, so a capture
            shows the forward value of ops that saved nothing for backward (0 keeps none).

    Returns:
        A ``Recording`` context manager; a ``capture`` of a loss computed inside it shows
        ``node.module`` and ``node.source``. A ``torch.compile``'d model (given as compiled)
        is one opaque node, named by the compiled module and the line that called it, and is
        not recompiled for the recording.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.

    Example:
        >>> with record(model):  # doctest: +SKIP
        ...     loss = model(x).sum()
        >>> graph = graphscope.capture(loss, model=model)  # doctest: +SKIP
    """
    return Recording(model, sources=sources, values=values)


def module_classes(model: torch.nn.Module) -> dict[str, str]:
    """``module path -> class name`` for every submodule of ``model`` (``""`` is the root)."""
    return {path: type(m).__name__ for path, m in model.named_modules()}
