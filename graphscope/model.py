"""The graph model: node, edge and finding records, gradient statistics, graph operations.

This is plain data. It must not import torch, textual or graphviz: a capture saved from a
training job is loaded and inspected with this module alone (``graphscope.fileformat`` is the
codec below it). networkx is imported lazily, the first time ``Graph.nx`` is read.

Direction: edges run forward, producer -> consumer (the way the tensors flowed in the forward
pass). Backward walks them in reverse. Node ids are the order in which the capture's walk met the
nodes (roots first), so they are stable across runs of the same model.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from graphscope import fileformat
from graphscope.errors import LoadError

if TYPE_CHECKING:
    import networkx

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_DIMS = re.compile(r"(\d)D(?=[A-Z]|$)")  # MaxPool2DWithIndices -> MaxPool2dWithIndices
_BACKWARD_SUFFIX = re.compile(r"Backward\d*$")


def op_label(op: str) -> str:
    """The short name of an autograd class: ``AddmmBackward0`` -> ``addmm``,
    ``MaxPool2DWithIndicesBackward0`` -> ``max_pool2d_with_indices``. The one rule for every
    view and for the capture (which labels custom Functions by their own class name)."""
    name = _DIMS.sub(r"\1d", _BACKWARD_SUFFIX.sub("", op))
    return _CAMEL.sub("_", name).lower() or op


def fmt_count(n: int, noun: str, plural: str | None = None) -> str:
    """``1 node``, ``33 warnings``, ``2 backward passes``, ``12,000 nodes``: the one rule for
    counted words (``graphscope.formatting`` re-exports it; it lives here because the model's
    own summary and reprs use it). ``plural`` for words not made by adding s or es."""
    if n != 1:
        noun = plural or (noun + "es" if noun.endswith(("s", "sh", "ch", "x")) else noun + "s")
    return f"{n:,} {noun}"


def fmt_shape(shape: Sequence[int] | None) -> str:
    """``(3, 4)``, ``(16)`` for one dimension, ``()`` for a scalar, ``?`` when unknown: the one
    way every view writes a shape (re-exported by ``graphscope.formatting``)."""
    if shape is None:
        return "?"
    return "(" + ", ".join(str(s) for s in shape) + ")"


# Node kinds.
OP = "op"
PARAM = "param"
LEAF = "leaf"
KINDS = (OP, PARAM, LEAF)


@dataclass(frozen=True, slots=True)
class GradStats:
    """Summary of one gradient tensor (or of several, for a multi-output node).

    ``norm`` is the 2-norm, ``std`` the population standard deviation, ``zero_frac`` the share
    of elements that are exactly zero. NaN and Inf propagate into norm/mean/std/min/max exactly as
    they would in torch; ``nan_count`` and ``inf_count`` say how many there were. Complex
    gradients are summarised by their magnitudes.
    """

    norm: float
    mean: float
    std: float
    min: float
    max: float
    abs_max: float
    zero_frac: float
    nan_count: int
    inf_count: int
    numel: int

    @staticmethod
    def combine(stats: list[GradStats]) -> GradStats:
        """Statistics of several tensors taken together (a multi-output node's outputs)."""
        if len(stats) == 1:
            return stats[0]
        n = sum(s.numel for s in stats)
        if n == 0:
            return stats[0]
        mean = sum(s.mean * (s.numel / n) for s in stats)
        # In units of the largest magnitude: squares of float64 values past 1e154 stay finite.
        c = max((s.abs_max for s in stats if math.isfinite(s.abs_max)), default=0.0) or 1.0
        var = sum((s.numel / n) * ((s.std / c) ** 2 + (s.mean / c - mean / c) ** 2) for s in stats)
        norms = [s.norm for s in stats]
        return GradStats(
            # hypot neither overflows nor underflows; NaN wins over Inf, as in torch's norm
            norm=math.nan if any(math.isnan(v) for v in norms) else math.hypot(*norms),
            mean=mean,
            std=c * math.sqrt(var) if var >= 0 else math.nan,
            min=min(s.min for s in stats),
            max=max(s.max for s in stats),
            abs_max=max(s.abs_max for s in stats),
            zero_frac=sum(s.zero_frac * s.numel for s in stats) / n,
            nan_count=sum(s.nan_count for s in stats),
            inf_count=sum(s.inf_count for s in stats),
            numel=n,
        )

    @property
    def finite(self) -> bool:
        """True when the gradient holds no NaN and no Inf."""
        return self.nan_count == 0 and self.inf_count == 0

    @property
    def rms(self) -> float:
        """Root mean square: the norm divided by sqrt(numel), comparable across sizes."""
        return self.norm / math.sqrt(self.numel) if self.numel else 0.0


def _fmt_value(x: float) -> str:
    """One value the way micrograd prints it: ``2.0``, ``-3.0``, ``0.5``, ``0.1235``, ``1e-08``."""
    if math.isnan(x) or math.isinf(x):
        return repr(x)
    if x == 0:
        return "0.0"
    a = abs(x)
    if a >= 1e4 or a < 1e-3:
        return f"{x:.3g}"
    text = f"{x:.4f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


@dataclass(frozen=True, slots=True)
class Values:
    """The actual numbers of a small tensor, kept where a statistic would say less than the tensor.

    A capture keeps them for tensors of at most ``capture(values=16)`` elements (each leaf's data,
    each node's gradient, and the forward value where the op saved it, it is the captured
    output, or a forward recording (``record``/``watch``) kept it as the op made it); larger
    tensors keep ``GradStats`` only, so memory stays bounded.

    Attributes:
        shape: The tensor's shape (``()`` for a scalar).
        data: Its elements in row-major order, as floats (NaN and Inf kept).
    """

    shape: tuple[int, ...]
    data: tuple[float, ...]

    def tolist(self) -> Any:
        """Nested lists like ``torch.Tensor.tolist()`` (a float for a scalar)."""
        if not self.shape:
            return self.data[0]
        def nest(flat: tuple[float, ...], dims: tuple[int, ...]) -> list[Any]:
            if len(dims) == 1:
                return list(flat)
            step = len(flat) // dims[0] if dims[0] else 0
            return [nest(flat[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]
        return nest(self.data, self.shape)

    def __str__(self) -> str:
        """``2.0``, ``[1.0, -2.0]``, ``[[1.0, 2.0], [3.0, 4.0]]``: short, readable by hand."""
        def text(v: Any) -> str:
            return "[" + ", ".join(text(x) for x in v) + "]" if isinstance(v, list) else _fmt_value(v)
        return text(self.tolist())


@dataclass(frozen=True, slots=True)
class TensorMeta:
    """Shape, dtype and device of one tensor (a forward output, a parameter, a saved tensor)."""

    shape: tuple[int, ...] | None
    dtype: str | None = None
    device: str | None = None
    name: str = ""  # for saved tensors: the attribute name without ``_saved_``
    value: str | None = None  # a saved non-tensor value, or why the tensor was not read

    def __str__(self) -> str:
        if self.shape is None:
            return self.value or "?"
        return fmt_shape(self.shape)


@dataclass(frozen=True, slots=True)
class Source:
    """The user's source line that created a node during forward."""

    file: str
    line: int
    function: str

    def __str__(self) -> str:
        return f"{self.short_file}:{self.line} in {self.function}"

    @property
    def short_file(self) -> str:
        """The file relative to the working directory when it lies below it."""
        try:
            rel = os.path.relpath(self.file)
        except ValueError:  # another drive on Windows
            return self.file
        return self.file if rel.startswith("..") else rel


@dataclass(slots=True)
class Node:
    """One autograd node: an op (a ``grad_fn``), a parameter or another leaf tensor.

    Attributes:
        id: Position in the capture's walk (roots first); stable across runs.
        op: The autograd class name, e.g. ``AddmmBackward0`` or ``AccumulateGrad``.
        kind: ``"op"``, ``"param"`` (a model parameter) or ``"leaf"`` (another tensor that
            requires grad).
        label: A short readable name: ``addmm``, ``sigmoid``, or the parameter's name.
        names: Qualified parameter names (several for tied weights); empty for ops.
        outputs: Metadata of the node's forward outputs (for a leaf: the tensor itself).
        saved: Tensors and values the op saved for backward, read at capture time.
        module: Innermost ``nn.Module`` path that produced the op, or owns the parameter.
        source: The user's source line that created the op, when recorded.
        grad: Statistics of the gradient with respect to the node's forward output(s), as seen
            in the latest backward pass. ``None`` when backward did not run this node, or ran it
            with no gradient at all.
        grads: Per-output statistics (``None`` where that output got no gradient).
        executed: Whether the latest backward ran this node. ``False`` with ``grad is None``
            means pruned (e.g. by ``autograd.grad(inputs=...)``) or never backpropagated.
        is_root: The node is (the ``grad_fn`` of) one of the captured outputs.
        exec_order: Position of this node in the latest backward's execution order.
        opaque: Why the node hides a subgraph (``"checkpoint"``, ``"compiled"``), else ``None``.
        var_name: The name the user's code gave this tensor (``x``, ``w``, ``loss``), found in
            the frame that called ``capture`` or passed as ``capture(names=)``; ``""`` when
            unknown or ambiguous (a leaf so named also has it as its ``label``).
        value: The forward value (a leaf's data) when the tensor is small and its value was
            known at capture time: a leaf, a captured output, or a tensor an op saved for
            backward. ``None`` otherwise.
        grad_value: The gradient's actual values (small tensors, single-output nodes), from the
            latest backward pass; ``grad`` holds its statistics either way.
    """

    id: int
    op: str
    kind: str = OP
    label: str = ""
    names: tuple[str, ...] = ()
    outputs: tuple[TensorMeta, ...] = ()
    saved: tuple[TensorMeta, ...] = ()
    module: str | None = None
    source: Source | None = None
    grad: GradStats | None = None
    grads: tuple[GradStats | None, ...] = ()
    executed: bool = False
    is_root: bool = False
    exec_order: int | None = None
    opaque: str | None = None
    var_name: str = ""
    value: Values | None = None
    grad_value: Values | None = None

    def __repr__(self) -> str:
        """``<Node 3 addmm (AddmmBackward0) in layers.0, (32, 1), gradient>``: one line."""
        what = self.name or self.label or self.op
        if self.kind == OP and self.op != what:
            what += f" ({self.op})"
        elif self.kind != OP:
            what += f" ({'parameter' if self.kind == PARAM else 'leaf'})"
        parts = [f"in {self.module}" if self.module else "", fmt_shape(self.shape) if self.outputs else "",
                 "gradient" if self.grad is not None else ("ran, no gradient" if self.executed
                                                          else "no gradient")]
        return f"<Node {self.id} {what}" + "".join(f", {p}" for p in parts if p) + ">"

    @property
    def name(self) -> str:
        """The first qualified parameter name, or ``""``."""
        return self.names[0] if self.names else ""

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self.outputs[0].shape if self.outputs else None

    @property
    def dtype(self) -> str | None:
        return self.outputs[0].dtype if self.outputs else None

    @property
    def device(self) -> str | None:
        return self.outputs[0].device if self.outputs else None

    @property
    def title(self) -> str:
        """What a view should call this node: the parameter name, else the short label."""
        return self.name or self.label or self.op

    def attrs(self) -> dict[str, Any]:
        """Attributes as stored on the networkx node."""
        return {
            "op": self.op,
            "kind": self.kind,
            "label": self.label,
            "name": self.name,
            "names": list(self.names),
            "shape": self.shape,
            "dtype": self.dtype,
            "device": self.device,
            "outputs": [dataclasses.asdict(m) for m in self.outputs],
            "saved": [dataclasses.asdict(m) for m in self.saved],
            "module": self.module,
            "source": None if self.source is None else str(self.source),
            "grad": self.grad,
            "grads": list(self.grads),
            "executed": self.executed,
            "is_root": self.is_root,
            "exec_order": self.exec_order,
            "opaque": self.opaque,
            "var_name": self.var_name,
            "value": None if self.value is None else self.value.tolist(),
            "grad_value": None if self.grad_value is None else self.grad_value.tolist(),
        }


@dataclass(slots=True)
class Edge:
    """A tensor flowing forward from ``src`` (its producer) into ``dst`` (its consumer).

    Attributes:
        src: Producer node id.
        dst: Consumer node id.
        output_nr: Which of the producer's outputs this is (multi-output nodes: unbind, LSTM).
        input_nr: Position of this input in the consumer's ``next_functions``. ``x * x`` gives
            two edges from the same producer, with input_nr 0 and 1.
        grad: Statistics of the gradient the consumer sent back along this edge in the latest
            backward pass (``None`` if it sent none).
    """

    src: int
    dst: int
    output_nr: int = 0
    input_nr: int = 0
    grad: GradStats | None = None

class FindingKind(str, enum.Enum):
    """What a finding is about; the value is what files and ``f.kind == "..."`` use."""

    NONFINITE_ORIGIN = "nonfinite_origin"
    NONFINITE_LOSS = "nonfinite_loss"
    VANISHING = "vanishing"
    EXPLODING = "exploding"
    DEAD = "dead"
    UNREACHABLE = "unreachable_param"
    FROZEN = "frozen_param"
    OPAQUE = "opaque"
    ACCUMULATED = "accumulated_grad"  # .grad also holds an earlier backward's gradient
    UNDERFLOW = "underflow"  # float16 gradients flushed to zero without a loss scale
    STRUCTURAL = "structural_zero"  # ~0 by mathematics (a bias before BatchNorm): no fix needed
    EVAL_MODE = "eval_mode"  # dropout / batch norm in eval mode in a pass that is trained

    def __str__(self) -> str:
        return self.value


class ParamStatus(str, enum.Enum):
    """What a capture found about a model parameter."""

    REACHED = "reached"  # the walk met it
    UNREACHABLE = "unreachable"  # requires grad, but the loss does not depend on it
    FROZEN = "frozen"  # requires_grad=False
    OPAQUE = "opaque"  # used inside a checkpointed or compiled region the walk cannot see into

    def __str__(self) -> str:
        return self.value


class Severity(enum.IntEnum):
    """How bad a finding is; ordered so ``max()`` picks the worst."""

    INFO = 0
    WARNING = 1
    ERROR = 2

    def __str__(self) -> str:
        return self.name.lower()


@dataclass(frozen=True, slots=True)
class Finding:
    """One diagnosis: what happened, where, and what to try.

    Attributes:
        kind: A ``FindingKind`` (a ``str``: ``f.kind == "vanishing"`` works).
        severity: ``Severity.INFO``, ``WARNING`` or ``ERROR``.
        node: The node id it is about, or ``None`` (e.g. an unused parameter has no node).
        message: What happened and where.
        hint: Why it happens and what to try.
        param: The parameter name it is about, if any.
        nodes: Every node the finding is about, ``node`` included: one finding per cause (a
            20-layer fade is one finding listing its 40 parameters), and each view marks them
            all. A finding about one node has ``nodes == (node,)``; ``()`` without a node.
    """

    kind: FindingKind
    severity: Severity
    node: int | None
    message: str
    hint: str = ""
    param: str | None = None
    nodes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", FindingKind(self.kind))  # "vanishing" is accepted
        object.__setattr__(self, "severity", Severity(self.severity))
        nodes = tuple(dict.fromkeys(int(n) for n in self.nodes))
        if self.node is not None and self.node not in nodes:
            nodes = (self.node, *nodes)
        object.__setattr__(self, "nodes", nodes)

    def __repr__(self) -> str:
        """``<Finding warning vanishing at node 3: the gradient fades ...>``: one line."""
        where = f" at node {self.node}" if self.node is not None else ""
        if len(self.nodes) > 1:
            where += f" (+{fmt_count(len(self.nodes) - 1, 'more node')})"
        message = " ".join(self.message.split())
        if len(message) > 80:
            message = message[:79] + "…"
        return f"<Finding {self.severity} {self.kind.value}{where}: {message}>"

    def __str__(self) -> str:
        text = f"[{self.severity}] {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


@dataclass(frozen=True, slots=True)
class ParamInfo:
    """A model parameter and what the capture found about it.

    ``status`` is a ``ParamStatus``: reached, unreachable, frozen or opaque.
    """

    name: str
    shape: tuple[int, ...]
    status: ParamStatus
    node: int | None = None
    module: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", ParamStatus(self.status))  # "reached" is accepted


@dataclass(eq=False)
class Graph:
    """A captured autograd graph: nodes, edges, gradient statistics and findings.

    Build one with ``graphscope.capture(loss)``; read one back with ``graphscope.load(path)``.
    ``graph.nx`` gives a ``networkx.MultiDiGraph`` view for your own analysis. Plain data: the
    live capture's hooks belong to ``graphscope.autograd.LiveGraph``, the subclass ``capture``
    returns.
    """

    nodes: list[Node] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    roots: list[int] = field(default_factory=list)
    params: list[ParamInfo] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    passes: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    _nx: Any = field(default=None, repr=False)
    _out: list[list[int]] | None = field(default=None, repr=False)
    _in: list[list[int]] | None = field(default=None, repr=False)
    # Distinct producers per node, filled on first ask (diagnostics ask thousands of times).
    _prod: dict[int, tuple[int, ...]] = field(default_factory=dict, repr=False)
    # -- structure ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.nodes)

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __getitem__(self, node_id: int) -> Node:
        return self.nodes[node_id]

    def _index(self) -> None:
        out: list[list[int]] = [[] for _ in self.nodes]
        inc: list[list[int]] = [[] for _ in self.nodes]
        for i, e in enumerate(self.edges):
            out[e.src].append(i)
            inc[e.dst].append(i)
        edges = self.edges
        for ids in inc:
            if len(ids) > 1:
                ids.sort(key=lambda i: edges[i].input_nr)
        self._out, self._in = out, inc
        self._prod = {}

    def invalidate(self) -> None:
        """Drop cached indexes and the networkx view after nodes or edges changed."""
        self._nx = self._out = self._in = None
        self._prod = {}

    def out_edges(self, node_id: int) -> list[Edge]:
        """Edges to the consumers of ``node_id`` (forward direction)."""
        if self._out is None:
            self._index()
        assert self._out is not None
        return [self.edges[i] for i in self._out[node_id]]

    def in_edges(self, node_id: int) -> list[Edge]:
        """Edges from the producers of ``node_id``, in ``input_nr`` order."""
        if self._in is None:
            self._index()
        assert self._in is not None
        return [self.edges[i] for i in self._in[node_id]]  # sorted by input_nr in _index

    def producers(self, node_id: int) -> list[int]:
        """Distinct producer ids of ``node_id``, in input order."""
        known = self._prod.get(node_id) if self._in is not None else None
        if known is None:
            known = self._prod[node_id] = tuple(
                dict.fromkeys(e.src for e in self.in_edges(node_id)))
        return list(known)

    def consumers(self, node_id: int) -> list[int]:
        """Distinct consumer ids of ``node_id``, in walk order."""
        return list(dict.fromkeys(e.dst for e in self.out_edges(node_id)))

    @property
    def param_nodes(self) -> list[Node]:
        return [n for n in self.nodes if n.kind == PARAM]

    def find(self, name: str) -> Node:
        """The node of parameter ``name`` (any of its tied names).

        Raises:
            KeyError: No captured node carries that parameter name.
        """
        for n in self.nodes:
            if name in n.names:
                return n
        raise KeyError(f"no node for parameter {name!r}; known: {[p.name for p in self.param_nodes]}")

    def backward_order(self) -> list[Node]:
        """Executed nodes in the order the latest backward ran them."""
        ran = [n for n in self.nodes if n.exec_order is not None]
        return sorted(ran, key=lambda n: n.exec_order or 0)

    def findings_for(self, node_id: int) -> list[Finding]:
        """The findings that name ``node_id`` (as their node or among their ``nodes``)."""
        return [f for f in self.findings if node_id in f.nodes]

    def subgraph(self, ids: list[int]) -> Graph:
        """The nodes ``ids`` and the edges among them, renumbered 0..k-1 in id order (to export a
        neighbourhood). Findings about those nodes come along; parameter records do not."""
        keep = sorted(set(ids))
        new = {old: i for i, old in enumerate(keep)}
        nodes = [dataclasses.replace(self.nodes[old], id=new[old]) for old in keep]
        edges = [dataclasses.replace(e, src=new[e.src], dst=new[e.dst])
                 for old in keep for e in self.out_edges(old) if e.dst in new]
        findings = [
            dataclasses.replace(f, node=new[f.node] if f.node in new else kept[0],
                                nodes=tuple(kept))
            for f in self.findings
            if (kept := [new[n] for n in f.nodes if n in new])
        ]
        roots = [new[r] for r in self.roots if r in new] or [0]
        return Graph(nodes=nodes, edges=edges, roots=roots, findings=findings,
                     passes=self.passes, meta=dict(self.meta))

    @property
    def nx(self) -> networkx.MultiDiGraph:
        """A ``networkx.MultiDiGraph`` of the capture, built once and cached.

        Node attributes: see ``Node.attrs``; edge attributes: ``output_nr``, ``input_nr``,
        ``shape`` (of the tensor on the edge) and ``grad``. Parallel edges are kept (``x * x``).
        """
        if self._nx is None:
            import networkx

            g = networkx.MultiDiGraph()
            for n in self.nodes:
                g.add_node(n.id, **n.attrs())
            for e in self.edges:
                src = self.nodes[e.src]
                meta = src.outputs[e.output_nr] if e.output_nr < len(src.outputs) else None
                g.add_edge(
                    e.src,
                    e.dst,
                    key=e.input_nr,
                    output_nr=e.output_nr,
                    input_nr=e.input_nr,
                    shape=None if meta is None else meta.shape,
                    grad=e.grad,
                )
            self._nx = g
        return self._nx

    def edge_shape(self, edge: Edge) -> tuple[int, ...] | None:
        """Shape of the tensor carried by ``edge`` (the producer's output ``output_nr``)."""
        outs = self.nodes[edge.src].outputs
        return outs[edge.output_nr].shape if edge.output_nr < len(outs) else None

    # -- persistence --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The capture as JSON-ready data, format header included (what ``save`` writes)."""
        enc = functools.partial(fileformat.encode, compact=_COMPACT)
        return fileformat.with_header({
            "meta": self.meta,
            "passes": self.passes,
            "roots": self.roots,
            "nodes": [_without_plain_grads(n, enc(n)) for n in self.nodes],
            "edges": [enc(e) for e in self.edges],
            "params": [enc(p) for p in self.params],
            "findings": [_without_plain_nodes(f, enc(f)) for f in self.findings],
        })

    @classmethod
    def from_dict(cls, d: Any) -> Graph:
        """Rebuild a graph from ``to_dict`` output (or a file's data).

        Raises:
            LoadError: The data is not a graphscope capture, is from a newer version, or is
                inconsistent (edges to missing nodes, ids out of order, wrong field types).
        """
        fileformat.check_header(d)
        try:
            nodes = [_node(n) for n in d["nodes"]]
            edges = [fileformat.decode(Edge, e, _READ_EDGE) for e in d["edges"]]
            g = cls(
                nodes=nodes,
                edges=edges,
                roots=[int(r) for r in d.get("roots", [])],
                params=[fileformat.decode(ParamInfo, p, _READ_PARAM) for p in d.get("params", [])],
                findings=[fileformat.decode(Finding, f, _READ_FINDING) for f in d.get("findings", [])],
                passes=int(d.get("passes", 0)),
                meta=dict(d.get("meta", {})),
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise LoadError(f"capture file is corrupt: {type(exc).__name__}: {exc}") from None
        n = len(nodes)
        if any(node.id != i for i, node in enumerate(nodes)):
            raise LoadError("capture file is corrupt: node ids are not 0..N-1 in order")
        for e in edges:
            if not (0 <= e.src < n and 0 <= e.dst < n):
                raise LoadError(f"capture file is corrupt: edge {e.src}->{e.dst} names a missing node")
        if any(not (0 <= r < n) for r in g.roots):
            raise LoadError("capture file is corrupt: a root names a missing node")
        return g

    def save(self, path: str | Path) -> Path:
        """Write the capture as JSON (no pickle: loading it never runs code).

        Returns:
            The path written.
        """
        return fileformat.write(path, self.to_dict())

    def severity_counts(self) -> str:
        """``1 error, 33 warnings, 2 info``, worst first; ``no findings`` when there are none."""
        counts = {sev: 0 for sev in sorted(Severity, reverse=True)}
        for f in self.findings:
            counts[f.severity] += 1
        return ", ".join(fmt_count(n, str(sev), "info" if sev is Severity.INFO else None)
                         for sev, n in counts.items() if n) or "no findings"

    def summary(self) -> str:
        """One line: node, edge, parameter, pass and finding counts."""
        sev = self.severity_counts()
        if self.meta.get("graph_freed") and not self.passes:
            sev += " (structure only: its backward had already run when it was captured)"
        return (
            f"{fmt_count(len(self.nodes), 'node')}, {fmt_count(len(self.edges), 'edge')}, "
            f"{fmt_count(len(self.param_nodes), 'parameter')}, "
            f"{fmt_count(self.passes, 'backward pass')}; {sev}"
        )

    _REPR_FINDINGS = 5

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A dataclass subclass (LiveGraph) would get a generated repr dumping every node; one
        # already in the class body is kept by @dataclass, so put Graph's there first.
        super().__init_subclass__(**kwargs)
        if "__repr__" not in cls.__dict__:
            cls.__repr__ = Graph.__repr__  # type: ignore[method-assign]

    def __repr__(self) -> str:
        """One screen however big the graph: title, counts, the worst few findings, and what to
        call next (the full lists are ``graph.nodes`` and ``graph.findings``)."""
        title = self.meta.get("title")
        lines = [f"<Graph{f' {title!r}' if title else ''}: {self.summary()}"]
        worst = sorted(self.findings, key=lambda f: -f.severity)[: self._REPR_FINDINGS]
        lines += [f"  {f!r}" for f in worst]
        if len(self.findings) > len(worst):
            lines.append(f"  ... {fmt_count(len(self.findings) - len(worst), 'more finding')} in "
                         "graph.findings")
        lines.append("  see it: graphscope.render(graph, 'g.svg') or graphscope.inspect(graph)>")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """A notebook's view: the counts and a table of every finding, worst first."""
        import html

        def esc(x: object) -> str:
            return html.escape(str(x))

        title = self.meta.get("title") or "graphscope Graph"
        rows = "".join(
            f"<tr><td>{esc(f.severity)}</td><td>{esc(f.kind.value)}</td>"
            f"<td>{esc('' if f.node is None else f.node)}</td>"
            f"<td style='text-align:left'>{esc(f.message)}"
            + (f"<br><i>{esc(f.hint)}</i>" if f.hint else "") + "</td></tr>"
            for f in sorted(self.findings, key=lambda f: -f.severity)
        )
        table = (
            "<table><thead><tr><th>severity</th><th>kind</th><th>node</th>"
            f"<th style='text-align:left'>finding</th></tr></thead><tbody>{rows}</tbody></table>"
            if rows else "<p>No findings.</p>"
        )
        return (f"<div><b>{esc(title)}</b><br>{esc(self.summary())}{table}"
                "<small>Draw it: <code>graphscope.render(graph)</code>; explore it: "
                "<code>graphscope.inspect(graph)</code>.</small></div>")


# How stored fields are read back where the JSON value is not the field's value itself.
def _stats(v: Any) -> GradStats | None:
    return None if v is None else fileformat.decode_list(GradStats, v)


def _metas(v: Any) -> tuple[TensorMeta, ...]:
    return tuple(fileformat.decode(TensorMeta, m, _READ_META) for m in v)


def _values(v: Any) -> Values | None:
    if v is None:
        return None
    shape, data = v
    return Values(_ints(shape), tuple(float(x) for x in data))  # 'nan', 'inf' strings too


def _kind(v: Any) -> str:
    if v not in KINDS:
        raise ValueError(f"unknown node kind {v!r}")
    return str(v)


def _ints(v: Any) -> tuple[int, ...]:
    return tuple(int(s) for s in v)


_COMPACT = frozenset({GradStats, Source, Values})
_READ_META: dict[str, fileformat.Reader] = {"shape": lambda v: None if v is None else _ints(v)}
_READ_NODE: dict[str, fileformat.Reader] = {
    "id": int,
    "op": str,
    "kind": _kind,
    "names": tuple,
    "outputs": _metas,
    "saved": _metas,
    "source": lambda v: None if v is None else fileformat.decode_list(Source, v),
    "grad": _stats,
    "grads": lambda v: tuple(_stats(g) for g in v),
    "executed": bool,
    "is_root": bool,
    "var_name": str,
    "value": _values,
    "grad_value": _values,
}
_READ_EDGE: dict[str, fileformat.Reader] = {
    "src": int, "dst": int, "output_nr": int, "input_nr": int, "grad": _stats,
}
_READ_FINDING: dict[str, fileformat.Reader] = {
    "kind": FindingKind, "severity": lambda v: Severity[str(v).upper()], "message": str, "hint": str,
}
_READ_PARAM: dict[str, fileformat.Reader] = {"name": str, "shape": _ints, "status": ParamStatus}


def _without_plain_grads(node: Node, d: dict[str, Any]) -> dict[str, Any]:
    """Usually a node's ``grads`` is ``(grad,)``: stored only when it says more (multi-output
    nodes)."""
    if node.grads == ((node.grad,) if node.grad is not None else ()):
        d.pop("grads", None)
    return d


def _without_plain_nodes(finding: Finding, d: dict[str, Any]) -> dict[str, Any]:
    """A finding about one node stores no ``nodes``: loading rebuilds ``(node,)``."""
    if finding.nodes == ((finding.node,) if finding.node is not None else ()):
        d.pop("nodes", None)
    return d


def _node(d: Any) -> Node:
    node = fileformat.decode(Node, d, _READ_NODE)
    if "grads" not in d and node.grad is not None:
        node.grads = (node.grad,)
    return node


def load(path: str | Path) -> Graph:
    """Read a capture written by ``Graph.save``.

    Args:
        path: A ``.json`` file from ``graph.save``.

    Returns:
        The ``Graph``, with gradient statistics and findings, and no torch objects.

    Raises:
        LoadError: The file is missing, unreadable, not JSON, truncated, from another tool,
            from a newer graphscope, or inconsistent.

    Example:
        >>> g = graphscope.load("step.json")  # doctest: +SKIP
    """
    return Graph.from_dict(fileformat.read(path))
