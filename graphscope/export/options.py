"""The one frozen dataclass that configures a drawing, shared by ``to_dot`` and ``render``.

Imports only ``graphscope.health`` (for ``Thresholds``): no torch, textual or graphviz.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from graphscope.health import Thresholds

RANKDIRS = ("TB", "BT", "LR", "RL")
ENGINES = ("dot", "graphviz-pure")


@dataclass(frozen=True)
class RenderOptions:
    """How to draw a graph.

    Attributes:
        max_nodes: The most boxes the picture may hold (legend not counted). A bigger graph is
            collapsed automatically: repeated blocks folded, then ops grouped by module at the
            finest depth that fits, then linear chains of ops merged, then only the part nearest
            the output kept. ``None`` draws every node (and may take long on a big graph).
        depth: Group ops by module path cut to this many parts (``2`` turns
            ``encoder.layers.3.attn`` into ``encoder.layers``). ``None`` lets ``max_nodes``
            decide.
        fold_repeats: Draw identical numbered blocks (``layers.0`` .. ``layers.11``) once,
            marked ``x12``, when the graph is collapsed.
        show_shapes: Write tensor shapes on the edges.
        legend: Add a small legend of the shapes and colours used.
        rankdir: Graphviz direction: ``"TB"`` (inputs at the top, loss at the bottom),
            ``"BT"``, ``"LR"`` or ``"RL"``.
        engine: ``"dot"`` (system Graphviz) or ``"graphviz-pure"``; ``None`` picks the system
            ``dot`` when it is installed, else ``graphviz-pure``.
        timeout: Seconds the layout engine may run before it is stopped.
        thresholds: Judge the gradients with these (colours and findings both); the
            capture's own thresholds when ``None``.

    Example:
        >>> RenderOptions(max_nodes=100, legend=False).max_nodes
        100
    """

    max_nodes: int | None = 300
    depth: int | None = None
    fold_repeats: bool = True
    show_shapes: bool = True
    legend: bool = True
    rankdir: str = "TB"
    engine: str | None = None
    timeout: float = 120.0
    thresholds: Thresholds | None = None

    def __post_init__(self) -> None:
        if self.max_nodes is not None and self.max_nodes < 2:
            raise ValueError(f"max_nodes must be at least 2 (or None for no limit), not {self.max_nodes}")
        if self.depth is not None and self.depth < 0:
            raise ValueError(f"depth must be 0 or more (or None), not {self.depth}")
        if self.rankdir not in RANKDIRS:
            raise ValueError(f"rankdir must be one of {RANKDIRS}, not {self.rankdir!r}")
        if self.engine is not None and self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES} or None, not {self.engine!r}")

    @classmethod
    def of(cls, options: RenderOptions | None = None, **overrides: object) -> RenderOptions:
        """``options`` (or the defaults) with ``overrides`` applied, rejecting unknown names.

        Raises:
            TypeError: An override is not a ``RenderOptions`` field.
        """
        base = options or cls()
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown render option(s) {unknown}; known: {sorted(known)}")
        if not overrides:
            return base
        return replace(base, **overrides)  # type: ignore[arg-type]
