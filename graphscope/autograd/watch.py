"""``watch``: capture every backward of a training loop, with modules and source lines.

Owns the training-loop integration. While a ``Watch`` is active (``with`` block or decorated
function), ``torch.autograd.backward`` (which ``Tensor.backward`` calls) and
``torch.autograd.grad`` are replaced by wrappers that ``capture`` the graph behind their outputs
right before running them, on every ``every``-th call, while a ``Recording`` attributes each node
made in forward to its module and source line. After the backward, the finished ``Graph`` is kept
(the last ``keep``), saved (``save_dir``), and checked for non-finite gradients; a ``.grad`` that
keeps earlier gradients over watched steps while the optimizer updates the parameter (a forgotten
``zero_grad()``) turns its information finding into a warning.

What counts as a step: a ``backward``/``autograd.grad`` call the training loop itself makes, on the
watching thread. Calls torch makes on its own are left to torch, uncounted and uncaptured:
``torch.compile``'s while it compiles (AOTAutograd differentiates the model on fake tensors, on
every cold cache), ``make_fx``/``torch.export`` tracing, ``torch.func`` transforms (``grad``,
``vjp``, ``vmap`` of them) and ``torch.autograd.functional`` (``jacobian``, ``hessian``, ...), and
the nested backward a reentrant checkpoint runs inside a pass. A call made while the watched
model's forward runs (a gradient penalty's ``autograd.grad(..., create_graph=True)``, an inner
adaptation step) belongs to that forward: not a step, and the graph it builds is captured with
the backward that consumes it. A gradient penalty computed in the loop, outside any forward,
is a step of its own. TorchScript modules inside the model run unhooked (their ops have no
module path); a compiled module is one opaque region (see ``recording``).

Leaving the block restores everything: the original functions, the module hooks, the torch
function mode, and any capture hook still armed, also when the block raised. Gradients, outputs,
RNG state, grad mode and train/eval mode are never changed; the user's own hooks and modes,
including ones added inside the block, are left as they are.

Imports torch; only the capture layer may import this module.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Callable

import torch

from graphscope.autograd import hooks
from graphscope.autograd.capture import capture
from graphscope.autograd.flight import FlightRecorder
from graphscope.autograd.recording import Recording
from graphscope.diagnostics import diagnose
from graphscope.health import Thresholds
from graphscope.model import FindingKind, Graph, Severity
from graphscope.errors import NonFiniteGradientError

ON_NONFINITE = ("warn", "raise", "ignore")
_NONFINITE_KINDS = (FindingKind.NONFINITE_ORIGIN, FindingKind.NONFINITE_LOSS)


# -- the patched entry points ---------------------------------------------------------------------

_lock = threading.Lock()
_active: list[Watch] = []  # entered watches, innermost last
_originals: dict[str, Callable[..., Any]] = {}
# .depth: > 0 while a watched backward, or one left to torch, runs on this thread
_local = threading.local()


_TRACING_MODES = (torch._C._TorchDispatchModeKey.FAKE, torch._C._TorchDispatchModeKey.PROXY)
# jacobian, hessian, vjp, hvp ... call torch.autograd.grad once per row (or batched) from here.
_FUNCTIONAL_FILE = torch.autograd.functional.__file__


def _torch_is_differentiating(caller: FrameType) -> bool:
    """Whether a backward/grad call is torch's own work rather than a step of the user's loop.

    ``torch.compile`` differentiates the model while it compiles (AOTAutograd traces the joint
    graph by calling ``torch.autograd.grad`` on fake tensors; ``is_compiling()`` holds for the
    whole compile session), ``make_fx`` and ``torch.export`` trace under fake or proxy modes,
    ``torch.func.grad``/``vjp`` call ``torch.autograd.grad`` on wrapped tensors, and
    ``torch.autograd.functional`` calls it on the user's behalf (``caller`` is the frame that
    called the patched entry point).
    """
    return (
        torch.compiler.is_compiling()
        or torch._C._are_functorch_transforms_active()
        or any(torch._C._get_dispatch_mode(key) is not None for key in _TRACING_MODES)
        or caller.f_code.co_filename == _FUNCTIONAL_FILE
    )


def _current(caller: FrameType) -> Watch | None:
    """The watch for which this backward/grad call is a step, or ``None`` (leave it to torch)."""
    # A reentrant backward (torch.utils.checkpoint's) is part of the outer pass, not a step.
    if getattr(_local, "depth", 0) or _torch_is_differentiating(caller):
        return None
    me = threading.get_ident()
    with _lock:
        for w in reversed(_active):
            if w._thread == me:
                # A call made inside the model's forward (a gradient penalty) is part of it.
                return None if w._recording.module is not None else w
    return None


# Both wrappers decide on is_compiling() first: Dynamo inlines them where a compiled forward calls
# autograd.grad, and must reach torch's function (where it graph-breaks, as without graphscope)
# before anything that would make it break elsewhere (frames, locks, thread ids).


def _backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
    if torch.compiler.is_compiling():
        return _originals["backward"](tensors, *args, **kwargs)
    return _dispatch(_current(sys._getframe(1)), _originals["backward"], tensors, args, kwargs)


def _grad(outputs: Any, *args: Any, **kwargs: Any) -> Any:
    if torch.compiler.is_compiling():
        return _originals["grad"](outputs, *args, **kwargs)
    return _dispatch(_current(sys._getframe(1)), _originals["grad"], outputs, args, kwargs)


def _dispatch(
    w: Watch | None, original: Callable[..., Any], outputs: Any, args: tuple, kwargs: dict
) -> Any:
    if w is not None:
        return w._run(original, outputs, args, kwargs)
    # Everything a call left to torch runs is torch's too. torch.autograd.grad re-dispatches
    # itself through the recording's mode, calling the patched name again from graphscope's
    # frame, where the caller no longer says who asked.
    _local.depth = getattr(_local, "depth", 0) + 1
    try:
        return original(outputs, *args, **kwargs)
    finally:
        _local.depth -= 1


_backward.__doc__ = torch.autograd.backward.__doc__
_grad.__doc__ = torch.autograd.grad.__doc__

_dynamo_tables_built = False  # by _install, before the wrappers went in


def _dynamo_tables() -> list[Any]:
    """Dynamo's cached tables of the torch functions it handles itself (empty: not loaded).

    Each is built once per process, during the first compile, from ``torch.autograd.grad`` and
    ``backward`` as they are at that moment. Built while the wrappers are installed, they would
    know the wrappers instead of torch's functions: in every later compile of the process,
    watched or not, Dynamo would trace torch.autograd.grad into the graph (where it otherwise
    graph-breaks) and inline torch.autograd.backward. Private to Dynamo, so looked up softly.
    """
    trace_rules = sys.modules.get("torch._dynamo.trace_rules")
    torch_variables = sys.modules.get("torch._dynamo.variables.torch")
    in_graph = getattr(torch_variables, "TorchInGraphFunctionVariable", None)
    tables = [
        getattr(trace_rules, "get_torch_obj_rule_map", None),
        getattr(in_graph, "_get_handlers", None),
    ]
    return [t for t in tables if callable(getattr(t, "cache_clear", None))]


def _install(w: Watch) -> None:
    global _dynamo_tables_built
    with _lock:
        if not _active:
            tables = _dynamo_tables()
            for table in tables:
                table()  # built now, from torch's own functions
            _dynamo_tables_built = bool(tables)
            _originals["backward"] = torch.autograd.backward
            _originals["grad"] = torch.autograd.grad
            torch.autograd.backward = _backward
            torch.autograd.grad = _grad
        _active.append(w)


def _uninstall(w: Watch) -> None:
    with _lock:
        if w in _active:
            _active.remove(w)
        if not _active and _originals:
            torch.autograd.backward = _originals.pop("backward")
            torch.autograd.grad = _originals.pop("grad")
            if not _dynamo_tables_built:
                # Dynamo loaded inside the block (torch.compile first used there): its tables
                # may hold the wrappers; dropped, they are rebuilt from torch's functions.
                for table in _dynamo_tables():
                    table.cache_clear()


def _graph_tensors(outputs: Any) -> list[torch.Tensor]:
    """The tensors among ``outputs`` that have a graph (others are torch's business)."""
    if isinstance(outputs, torch.Tensor):
        items: list[Any] = [outputs]
    elif isinstance(outputs, (list, tuple)):
        items = list(outputs)
    else:
        return []
    return [t for t in items if isinstance(t, torch.Tensor) and t.grad_fn is not None]


# -- the context manager --------------------------------------------------------------------------


class Watch(contextlib.ContextDecorator):
    """Captures the backward passes run inside it; make one with ``watch(model)``.

    Attributes:
        graphs: The last ``keep`` captured graphs, oldest first.
        steps: How many backward/grad calls ran inside the block so far.
        saved: Paths of the captures written to ``save_dir``, oldest first.
        run: The run folder every step is recorded into (``None`` without ``run=``).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        every: int = 1,
        keep: int = 1,
        save_dir: str | Path | None = None,
        on_nonfinite: str = "warn",
        warn: bool = True,
        thresholds: Thresholds | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        run: str | Path | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"graphscope.watch expects your nn.Module as its first argument, got "
                f"{type(model).__name__}; e.g. `with graphscope.watch(model): ...`"
            )
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every= must be a positive int (capture every N-th step), got {every!r}")
        if not isinstance(keep, int) or keep < 0:
            raise ValueError(f"keep= must be an int >= 0 (graphs kept in memory), got {keep!r}")
        if on_nonfinite not in ON_NONFINITE:
            raise ValueError(
                f"on_nonfinite= must be one of {', '.join(map(repr, ON_NONFINITE))}, "
                f"got {on_nonfinite!r}"
            )
        if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer= must be your torch.optim.Optimizer (for its learning rates), got "
                f"{type(optimizer).__name__}"
            )
        if run is not None and not isinstance(run, (str, Path)):
            raise TypeError(f"run= must be a folder path (str or Path), got {type(run).__name__}")
        self.model = model
        self.optimizer = optimizer
        self.run = None if run is None else Path(run)
        self._recorder: FlightRecorder | None = None
        self.every = every
        self.keep = keep
        self.save_dir = None if save_dir is None else Path(save_dir)
        self.on_nonfinite = on_nonfinite
        self.warn = warn
        self.thresholds = thresholds or Thresholds()
        self.graphs: collections.deque[Graph] = collections.deque(maxlen=keep or None)
        self.saved: list[Path] = []
        self.steps = 0
        self._recording = Recording(model)
        self._recording.lift_when_paused = True
        self._thread: int | None = None
        self._open: list[Graph] = []
        # Parameter name -> its meta["accumulated_grad"] entry in the latest captured step.
        self._accumulating: dict[str, dict[str, Any]] = {}
        self._step: int | None = None  # set_step's number; None: backward calls are counted
        self._last_step = 0  # the step of the latest backward

    @property
    def last(self) -> Graph | None:
        """The most recent captured graph, or ``None``."""
        return self.graphs[-1] if self.graphs else None

    @property
    def active(self) -> bool:
        return self._thread is not None

    # -- entering and leaving -------------------------------------------------------------------

    def __enter__(self) -> Watch:
        if self._thread is not None:
            raise RuntimeError(
                "this graphscope.watch is already active; enter it once (a decorated function "
                "that calls itself re-enters it)"
            )
        if self.save_dir is not None:
            self.save_dir.mkdir(parents=True, exist_ok=True)
        if self.run is not None:
            self._recorder = FlightRecorder(
                self.model, self.run, optimizer=self.optimizer, every=self.every,
                thresholds=self.thresholds,
            )
            if self._step is not None:
                self._recorder.offset = 0  # a trainer's step numbers are its own (see set_step)
        self._thread = threading.get_ident()
        try:
            _install(self)
            self._recording.__enter__()
            self._sync_recording()
        except BaseException:
            self._leave()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._leave()

    def _leave(self) -> None:
        # Undo in reverse order of setup, each step even if another failed, so a raising
        # training loop never leaves torch.autograd patched or the model hooked.
        try:
            if self._recording.active:
                self._recording.__exit__(None, None, None)
        finally:
            try:
                _uninstall(self)
            finally:
                for g in self._open:
                    g.close()
                self._open.clear()
                self._thread = None
                if self._recorder is not None:
                    # Everything recorded is committed before the block is left.
                    self._recorder.close()
                    self._recorder = None

    def set_step(self, step: int) -> None:
        """Number the backward calls that follow ``step`` until the next call: a trainer's own
        step (its global step), instead of counting backward calls.

        Every backward until the next ``set_step`` belongs to that one step: under gradient
        accumulation its first backward is the one captured (when the step is due), and the
        run's row of the step holds the numbers after its last backward (the accumulated
        gradients the optimizer steps with) and the sum of the losses the backwards started
        from (the loss those gradients are the gradient of). The numbers are stored as given:
        a run resumed from a trainer's checkpoint continues its steps, not the store's.
        Call it between steps, outside the model's forward and backward (a trainer callback's
        batch-start hook); ``graphscope.integrations`` does.

        Raises:
            ValueError: ``step`` is not a positive int.
        """
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise ValueError(f"set_step() takes a positive int (a trainer's global step, from 1), got {step!r}")
        self._step = step
        if self._recorder is not None:
            self._recorder.offset = 0
        if self._thread is not None:
            self._sync_recording()
            # Between steps, outside any torch call: where the recording's mode may be lifted
            # or put back, as the root module's forward would (a trainer may never call it).
            self._recording._root_pre_hook(None, None)

    def _due(self, step: int) -> bool:
        # One capture per step: a trainer's step may run several backwards (set_step).
        return (step - 1) % self.every == 0 and step != self._last_step

    def _forced(self) -> bool:
        """Whether the recorder asked for the next step's capture (after an anomaly)."""
        return self._recorder is not None and self._recorder.wants_next

    def _sync_recording(self) -> None:
        """Tag forward ops only when the next backward will be captured.

        The mode stays pushed for the whole block and is only paused: a mode may not be popped
        from inside a torch call (``loss.backward()`` itself dispatches through it).
        """
        upcoming = self.steps + 1 if self._step is None else self._step
        self._recording.paused = not (self._due(upcoming) or self._forced())

    # -- one watched backward -------------------------------------------------------------------

    def _run(self, original: Callable[..., Any], outputs: Any, args: tuple, kwargs: dict) -> Any:
        self.steps += 1
        step = self.steps if self._step is None else self._step
        due, self._last_step = self._due(step), step
        graph = None
        tensors = _graph_tensors(outputs)
        recorder = self._recorder
        reason = recorder.before(step, tensors) if recorder is not None else None
        # The collector would make full passes over the graph model while capture and the
        # hooks allocate; it is restored (and runs) as soon as this step is done.
        with hooks.gc_paused():
            if due or reason is not None:
                if tensors:
                    graph = capture(
                        tensors, model=self.model, warn=False, thresholds=self.thresholds
                    )
                    graph.meta["step"] = recorder.run_step(step) if recorder is not None else step
                    self._open.append(graph)
            _local.depth = getattr(_local, "depth", 0) + 1
            try:
                with self._recording.suspended():
                    result = original(outputs, *args, **kwargs)
            finally:
                _local.depth -= 1
                if graph is not None:
                    graph.close()
                    self._open.remove(graph)
                if recorder is not None:
                    recorder.after(step, graph if graph is not None and graph.passes else None, reason)
                self._sync_recording()
        if graph is not None and graph.passes:
            self._finish(graph, step)
        return result

    def _finish(self, graph: Graph, step: int) -> None:
        self._follow_accumulation(graph)
        if self.keep:
            self.graphs.append(graph)
        if self.save_dir is not None:
            self.saved.append(graph.save(self.save_dir / f"step_{step:06d}.json"))
        # Errors only: a GradScaler overflow (skipped by the scaler) is information.
        nonfinite = [f for f in graph.findings
                     if f.kind in _NONFINITE_KINDS and f.severity is Severity.ERROR]
        if self.on_nonfinite == "raise" and nonfinite:
            # The origin leads (diagnose lists a forward birth before any backward one); the
            # loss finding follows it, saying the loss itself is non-finite.
            first = next((f for f in nonfinite if f.kind is FindingKind.NONFINITE_ORIGIN), nonfinite[0])
            text = f"step {step}: {first.message}"
            if first.hint:
                text += f"\n  hint: {first.hint}"
            for f in nonfinite:
                if f.kind is FindingKind.NONFINITE_LOSS and f is not first:
                    text += f"\n  {f.message}"
            raise NonFiniteGradientError(text, graph=graph, finding=first, step=step)
        kinds = set()
        if self.warn:
            kinds.update(f.kind for f in graph.findings if f.kind not in _NONFINITE_KINDS)
        if self.on_nonfinite == "warn":
            kinds.update(_NONFINITE_KINDS)
        if kinds:
            hooks.emit_findings(graph, kinds=kinds)

    def _follow_accumulation(self, graph: Graph) -> None:
        """Count, per parameter, the captured steps in a row whose ``.grad`` held an earlier
        backward's gradient, with the optimizer updating the parameter in between (its version
        counter moved): ``steps_in_a_row`` in ``meta["accumulated_grad"]``, from which the
        diagnosis turns information into a warning. Accumulating over micro-batches on purpose
        does not update the parameter between them, and zero_grad() ends the run."""
        previous, self._accumulating = self._accumulating, {}
        carried = False
        for a in graph.meta.get("accumulated_grad", ()):
            name = graph.nodes[a["node"]].name
            if not name:
                continue
            before = previous.get(name)
            steps = 1
            if before is not None and a["param_version"] != before["param_version"]:
                steps = before["steps_in_a_row"] + 1
                carried = True
            a["steps_in_a_row"] = steps
            self._accumulating[name] = a
        if carried:
            graph.findings = diagnose(graph, thresholds=self.thresholds)


def watch(
    model: torch.nn.Module,
    *,
    every: int = 1,
    keep: int = 1,
    save_dir: str | Path | None = None,
    on_nonfinite: str = "warn",
    warn: bool = True,
    thresholds: Thresholds | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    run: str | Path | None = None,
) -> Watch:
    """Capture the backward passes of a training loop, with module attribution and source lines.

    Inside the block, each ``loss.backward()``, ``torch.autograd.backward`` and
    ``torch.autograd.grad`` call of your loop is one step; every ``every``-th step (1, 1+every,
    ...) is captured. Calls torch makes itself (``torch.compile`` compiling, ``torch.func``,
    ``torch.autograd.functional``, a reentrant checkpoint) and calls made inside the model's
    forward (a gradient penalty) are not steps. The forward passes of captured steps are
    recorded, so every op node names its module path and the line of your code that made it.
    A loop's backward is not otherwise changed: the gradients are bit-identical to an unwatched
    run.

    Give a ``torch.compile``'d model as compiled (``watch(compiled)``): it is captured as one
    opaque node, and entering the block does not make Dynamo recompile it. Watching the
    uncompiled module while calling the compiled one works too, but Dynamo then recompiles on
    entering and leaving the block (it guards on the torch function mode stack), and the
    compiled node has no module or line.

    Args:
        model: The model being trained (its parameters are named, its modules attributed).
        every: Capture one step in ``every``; the others run at full speed.
        keep: How many graphs to keep in ``w.graphs`` (0: none; e.g. only save them).
        save_dir: A folder to write each capture to, as ``step_000001.json``.
        on_nonfinite: ``"raise"`` raises ``NonFiniteGradientError`` right after the first
            captured backward whose gradients hold NaN/Inf, naming the op, module and line where
            the NaN was born; ``"warn"`` issues a ``NonFiniteGradientWarning``; ``"ignore"``
            does neither.
        warn: Issue warnings for the other findings (vanishing, exploding, dead, unused).
        thresholds: The limits every captured step is judged with (kept in each graph and
            its saved file); the defaults when ``None``.
        optimizer: Your optimizer: the run records each param group's learning rate per step.
        run: A folder (created if missing) to record every step into, as a run store that
            ``graphscope view``/``report``/``runs`` read, also while training runs: per
            parameter the gradient norm, abs max and share of zeros, the loss, the learning
            rates, the update-to-weight ratio around captured steps, and full captures every
            ``every`` steps and at anomalies (the first non-finite step, gradient-norm spikes).
            An existing run of the same model is resumed (its steps continue). Recording
            happens off the training thread; leaving the block commits it.

    Returns:
        A ``Watch``: a context manager and a decorator. ``w.last`` is the latest graph.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``every``, ``keep`` or ``on_nonfinite`` is out of range.
        RunError: ``run`` holds a store of another model or another tool (on entering).

    Example:
        >>> with graphscope.watch(model, on_nonfinite="raise") as w:  # doctest: +SKIP
        ...     for x, y in loader:
        ...         loss = F.cross_entropy(model(x), y)
        ...         loss.backward()
        ...         opt.step(); opt.zero_grad()
        >>> print(w.last.summary())  # doctest: +SKIP
    """
    return Watch(
        model,
        every=every,
        keep=keep,
        save_dir=save_dir,
        on_nonfinite=on_nonfinite,
        warn=warn,
        thresholds=thresholds,
        optimizer=optimizer,
        run=run,
    )
