"""Lays DOT text out with a Graphviz engine and writes SVG, PNG, PDF, DOT or JSON.

Owns engine selection: the system ``dot`` when it is on PATH, else ``graphviz-pure`` (a pure
port installed by pip, found on PATH or next to the running Python). PDF needs the system
``dot``. A missing engine is an ``EngineError`` that says how to get one, never a traceback
from deep inside a subprocess. Engines run as subprocesses with a timeout.

Imports ``graphscope.model``, ``graphscope.errors`` and this package; never torch, textual or
the ``graphviz`` Python package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from graphscope.errors import EngineError
from graphscope.diagnostics import rediagnose
from graphscope.export.collapse import build_view
from graphscope.export.dot import view_to_dot
from graphscope.export.options import ENGINES, RenderOptions
from graphscope.model import Graph

FORMATS = ("svg", "png", "pdf", "dot", "json")
ENGINE_FORMATS = {"dot": frozenset({"svg", "png", "pdf"}), "graphviz-pure": frozenset({"svg", "png"})}
HOW_TO = (
    "install one: `pip install graphviz-pure` (pure, no system packages; SVG and PNG) or the "
    "system Graphviz, `apt-get install graphviz` / `brew install graphviz` / "
    "`conda install graphviz` (also PDF)"
)

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Engine:
    """A Graphviz command that can lay out DOT text."""

    name: str
    path: str

    @property
    def formats(self) -> frozenset[str]:
        return ENGINE_FORMATS[self.name]


def _search_path() -> str:
    """PATH, plus the running Python's scripts folder (pip's ``graphviz-pure`` lives there
    even when a virtual environment was not activated)."""
    scripts = sysconfig.get_path("scripts")
    return os.pathsep.join(p for p in (os.environ.get("PATH", ""), scripts, str(Path(sys.executable).parent)) if p)


def find_engine(fmt: str = "svg", *, prefer: str | None = None) -> Engine:
    """The engine that will draw ``fmt``: ``prefer`` if given, else ``dot``, else ``graphviz-pure``.

    Args:
        fmt: ``"svg"``, ``"png"`` or ``"pdf"``.
        prefer: ``"dot"`` or ``"graphviz-pure"`` to use that engine only.

    Returns:
        The ``Engine`` found.

    Raises:
        EngineError: No installed engine can write ``fmt``; the message says how to get one.

    Example:
        >>> find_engine("svg").name in ("dot", "graphviz-pure")  # doctest: +SKIP
        True
    """
    names = [prefer] if prefer else list(ENGINES)
    found = {name: shutil.which(name, path=_search_path()) for name in names}
    for name in names:
        path = found[name]
        if path and fmt in ENGINE_FORMATS[name]:
            return Engine(name, path)
    if prefer and not found[prefer]:
        raise EngineError(f"engine={prefer!r} was asked for, but `{prefer}` is not installed; {HOW_TO}")
    if any(found.values()):
        have = ", ".join(f"`{n}`" for n, p in found.items() if p)
        if fmt == "pdf":
            raise EngineError(
                f"PDF needs the system Graphviz `dot` (found only {have}, which writes SVG and PNG); "
                "install it with `apt-get install graphviz` / `brew install graphviz` / "
                "`conda install graphviz`, or save as .svg or .png instead"
            )
        raise EngineError(f"no engine writes {fmt!r} (found {have}); use one of svg, png, pdf")
    raise EngineError(
        f"no Graphviz engine found to draw {fmt.upper()}: neither `dot` nor `graphviz-pure` is on "
        f"PATH; {HOW_TO}. The DOT text needs no engine: use rendering.dot or save as .dot"
    )


def run_engine(engine: Engine, dot: str, fmt: str, *, timeout: float = 120.0) -> bytes:
    """Lay out ``dot`` with ``engine`` and return the ``fmt`` bytes.

    Raises:
        EngineError: The engine could not start, failed, or ran past ``timeout`` seconds.
    """
    try:
        proc = subprocess.run(
            [engine.path, f"-T{fmt}"], input=dot.encode("utf-8"), capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise EngineError(
            f"{engine.name} took longer than {timeout:g} s to lay out the graph and was stopped; "
            "draw fewer boxes (max_nodes=100, or depth=1) or allow more time (timeout=...)"
        ) from None
    except OSError as exc:
        raise EngineError(f"could not run {engine.path}: {exc}; {HOW_TO}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise EngineError(f"{engine.name} -T{fmt} failed (exit {proc.returncode}): " + " / ".join(err))
    if fmt == "svg":
        return _title_tooltips(proc.stdout.decode("utf-8")).encode("utf-8")
    return proc.stdout


_LINK = re.compile(r'(<a xlink:title="([^"]*)">)')


def _title_tooltips(svg: str) -> str:
    """Give every tooltip link an SVG ``<title>`` child too.

    Graphviz writes tooltips as ``xlink:title``, which some browsers do not show on hover; an
    SVG ``<title>`` is shown everywhere. The attribute text is already XML-escaped.
    """
    return _LINK.sub(r"\1<title>\2</title>", svg)


def format_of(path: str | Path) -> str:
    """``"svg"`` for ``out/model.svg``: the output format named by a path's suffix.

    Raises:
        ValueError: The suffix names no format graphscope writes.
    """
    suffix = Path(path).suffix
    fmt = suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        why = f"its suffix {suffix!r} names no format graphscope writes" if suffix else "it has no suffix"
        raise ValueError(
            f"cannot tell the format of {str(path)!r}: {why}; use one of "
            + ", ".join(f".{f}" for f in FORMATS) + " (PDF needs the system Graphviz `dot`)"
        )
    return fmt


class Rendering:
    """A drawn graph: DOT text at once; SVG, PNG or PDF laid out on first use and kept.

    Shows itself inline in Jupyter (``_repr_svg_``, ``_repr_mimebundle_``).

    Attributes:
        graph: The capture drawn (in full: ``save("x.json")`` writes all of it).
        dot: The DOT source.
        options: The ``RenderOptions`` used.
        note: How the graph was reduced to fit ``max_nodes`` (empty when drawn in full).
        boxes: How many boxes the drawing has (legend not counted).
    """

    def __init__(
        self, graph: Graph, dot: str, *, options: RenderOptions, note: str = "", boxes: int = 0,
        progress: Progress | None = None,
    ) -> None:
        self.graph, self.dot, self.options, self.note, self.boxes = graph, dot, options, note, boxes
        self._progress = progress
        self._cache: dict[str, bytes] = {}

    def __repr__(self) -> str:
        how = self.note or f"{self.boxes} boxes, drawn in full"
        return f"<Rendering of {len(self.graph)} nodes: {how}>"

    def image(self, fmt: str = "svg") -> bytes:
        """The picture as ``fmt`` bytes (``svg``, ``png`` or ``pdf``), laid out once.

        Raises:
            EngineError: No installed engine writes ``fmt``, or the engine failed or timed out.
        """
        if fmt not in self._cache:
            engine = find_engine(fmt, prefer=self.options.engine)
            self._say(f"laying out {self.boxes:,} boxes with {engine.name} ({fmt})")
            start = time.perf_counter()
            self._cache[fmt] = run_engine(engine, self.dot, fmt, timeout=self.options.timeout)
            self._say(f"laid out in {time.perf_counter() - start:.1f} s")
        return self._cache[fmt]

    @property
    def svg(self) -> str:
        """The SVG text (laid out on first use)."""
        return self.image("svg").decode("utf-8")

    def save(self, path: str | Path) -> Path:
        """Write the picture; the format comes from the suffix (svg, png, pdf, dot, json).

        ``.dot`` writes the DOT text (no engine needed); ``.json`` the whole capture
        (``Graph.save``), which ``graphscope.load`` reads back.

        Returns:
            The path written.

        Raises:
            ValueError: The suffix names no known format.
            EngineError: No installed engine writes that format.
        """
        path = Path(path)
        fmt = format_of(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "json":
            return self.graph.save(path)
        if fmt == "dot":
            path.write_text(self.dot, encoding="utf-8")
        else:
            path.write_bytes(self.image(fmt))
        self._say(f"wrote {path}")
        return path

    def _repr_svg_(self) -> str | None:
        try:
            return self.svg
        except EngineError:
            return None  # _repr_mimebundle_ already said why, as text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        try:
            return {"image/svg+xml": self.svg, "text/plain": repr(self)}
        except EngineError as exc:
            return {"text/plain": f"{self!r}\ncannot draw it here: {exc}"}

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)


def render_graph(
    graph: Graph, path: str | Path | None = None, *, options: RenderOptions | None = None,
    progress: Progress | None = None,
) -> Rendering:
    """Draw ``graph``: reduce it to the node budget, write DOT, and save to ``path`` if given.

    ``graphscope.render`` is the public entry point; it also takes tensors and saved captures.

    Raises:
        ValueError: ``path``'s suffix names no format (raised before any work is done).
        EngineError: ``path`` needs an engine and none can write its format.
    """
    if path is not None:
        format_of(path)
    opts = options or RenderOptions()
    graph = rediagnose(graph, thresholds=opts.thresholds)  # a saved .json carries them too
    say = progress or (lambda _message: None)
    if opts.max_nodes is not None and len(graph) > opts.max_nodes:
        say(f"reducing {len(graph):,} nodes to at most {opts.max_nodes:,} boxes")
    view = build_view(graph, max_nodes=opts.max_nodes, depth=opts.depth, fold_repeats=opts.fold_repeats)
    if view.note:
        say(view.note)
    rendering = Rendering(
        graph, view_to_dot(graph, view, options=opts), options=opts, note=view.note,
        boxes=len(view.boxes), progress=progress,
    )
    if path is not None:
        rendering.save(path)
    return rendering
