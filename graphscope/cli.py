"""The ``graphscope`` command line: ``demo``, ``view`` and ``render``.

Imports only argparse and the light layers at start-up; the inspector (textual), the demos
(torch) and the drawing code are imported by the command that needs them, so ``--help`` and
``render`` stay quick. Expected failures are one line on stderr and an exit code, never a
traceback: 2 for a missing, corrupt or foreign capture file (or an unknown demo), 3 when no
Graphviz engine can produce the requested output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

from graphscope.errors import EngineError, LoadError

EXIT_USAGE = 2
EXIT_ENGINE = 3
DEFAULT_DEMO = "sigmoid_mlp"


class _Failure(Exception):
    """An expected failure: ``message`` goes to stderr, the process exits with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _load(path: str):
    from graphscope.model import load

    try:
        return load(path)
    except LoadError as exc:
        raise _Failure(str(exc), EXIT_USAGE) from None


def _demos() -> dict:
    from graphscope.demos import DEMOS

    return DEMOS


def _inspect(graph, source: str) -> None:
    from graphscope.tui import inspect

    inspect(graph, source=source)


def cmd_demo(args: argparse.Namespace) -> int:
    demos = _demos()
    if args.list:
        width = max(len(name) for name in demos)
        for name, demo in demos.items():
            mark = "*" if name == DEFAULT_DEMO else " "
            print(f"{mark} {name:{width}}  {demo.description}")
        print("\n* the default. Run: graphscope demo NAME")
        return 0
    name = args.name or (DEFAULT_DEMO if DEFAULT_DEMO in demos else next(iter(demos)))
    demo = demos.get(name)
    if demo is None:
        raise _Failure(f"no demo named {name!r}; `graphscope demo --list` shows them: "
                       + ", ".join(demos), EXIT_USAGE)
    print(f"building {name}: {demo.description} …", file=sys.stderr, flush=True)
    graph = demo.build()
    lesson = getattr(demo, "lesson", "")
    if lesson:
        print(f"look for: {lesson}", file=sys.stderr)
    _inspect(graph, name)
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    graph = _load(args.capture)
    _inspect(graph, Path(args.capture).name)
    return 0


class _Progress:
    """Step lines on stderr, each with the seconds since the start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.t0:6.2f}s] {message}", file=sys.stderr, flush=True)


def cmd_render(args: argparse.Namespace) -> int:
    progress = _Progress()
    progress(f"loading {args.capture}")
    graph = _load(args.capture)
    progress(f"loaded {graph.summary()}")
    out = Path(args.output) if args.output else Path(args.capture).with_suffix(".svg")
    from graphscope import export

    try:
        export.render_graph(graph, out, progress=progress)
    except EngineError as exc:
        raise _Failure(str(exc), EXIT_ENGINE) from None
    size = out.stat().st_size if out.exists() else 0
    progress(f"done: {out} ({size:,} bytes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphscope",
        description="See and debug PyTorch's autograd graph.",
        epilog="Keys in the inspector: press ? for help, q to quit.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="open the inspector on a built-in example model",
                          description="Open the inspector on a built-in example model.")
    demo.add_argument("name", nargs="?", help=f"which demo (default: {DEFAULT_DEMO})")
    demo.add_argument("--list", action="store_true", help="list the demos and exit")
    demo.set_defaults(run=cmd_demo)

    view = sub.add_parser("view", help="open the inspector on a saved capture",
                          description="Open the inspector on a capture saved with graph.save().")
    view.add_argument("capture", help="a .json file written by graph.save(path)")
    view.set_defaults(run=cmd_view)

    render = sub.add_parser("render", help="draw a saved capture to SVG/PNG/PDF/DOT",
                            description="Draw a saved capture; the output suffix picks the format.")
    render.add_argument("capture", help="a .json file written by graph.save(path)")
    render.add_argument("-o", "--output", help="output file (default: CAPTURE with .svg)")
    render.set_defaults(run=cmd_render)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except _Failure as exc:
        print(f"graphscope: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
