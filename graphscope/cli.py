"""The ``graphscope`` command line: ``demo``, ``view`` and ``render``.

Imports only argparse and the light layers at start-up; the inspector (textual), the demos
(torch) and the drawing code are imported by the command that needs them, so ``--help`` and
``render`` stay quick, and ``demo --list`` reads the demo catalogue without torch. Bare
``graphscope`` prints the help. ``render`` takes one option per ``RenderOptions`` field and says
one line when done; its steps show only once it has run a second (a live line on a terminal).
Expected failures are one line on stderr and an exit code, never a
traceback: 2 for a missing, corrupt or foreign capture file, an unknown demo, an output ``render``
cannot write, or an inspector asked for without a terminal; 3 when no Graphviz engine can produce
the requested output. Anything else is a bug: exit 1 and one line naming the error, with the
traceback in a log file (``--debug`` prints it instead).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import Sequence

from graphscope.errors import EngineError, LoadError

EXIT_BUG = 1
EXIT_USAGE = 2
EXIT_ENGINE = 3
EXIT_FINDINGS = 4  # `report`: the run has a warning- or error-level finding (gates a pipeline)
DEFAULT_DEMO = "sigmoid_mlp"


class _Failure(Exception):
    """An expected failure: ``message`` goes to stderr, the process exits with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class _Crashed(Exception):
    """The inspector failed while running; the error that ended it is the ``__cause__``."""


def _load(path: str):
    from graphscope.model import load

    try:
        return load(path)
    except LoadError as exc:
        raise _Failure(str(exc), EXIT_USAGE) from None


def _demos() -> dict:
    from graphscope.demos import DEMOS

    return DEMOS


def _terminal_problem() -> str | None:
    """Which stream keeps the inspector from running here: it reads keys from stdin and draws
    on stderr (as textual does), so both must be a terminal. None when both are."""
    for name, stream in (("stdin", sys.__stdin__), ("stderr", sys.__stderr__)):
        try:
            if stream is None or not stream.isatty():
                return name
        except (OSError, ValueError):  # closed or detached
            return name
    return None


def _need_terminal(instead: str) -> None:
    """Fail at once, rather than hang, when the inspector has no terminal to run in."""
    stream = _terminal_problem()
    if stream is not None:
        raise _Failure(f"the inspector needs a terminal, but {stream} is not one (redirected, "
                       f"piped or in CI); {instead}", EXIT_USAGE)


def _thresholds(args: argparse.Namespace):
    """The ``--threshold NAME=VALUE`` options as a ``Thresholds`` (None when there are none)."""
    import dataclasses

    from graphscope.health import Thresholds

    given = getattr(args, "threshold", None) or []
    if not given:
        return None
    names = [f.name for f in dataclasses.fields(Thresholds)]
    values: dict[str, float] = {}
    for item in given:
        name, _, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if name not in names or not text:
            raise _Failure(f"--threshold {item!r}: expected NAME=VALUE with NAME one of "
                           f"{', '.join(names)} (e.g. --threshold exploding_rms=1e3)", EXIT_USAGE)
        try:
            values[name] = int(text) if name == "min_layers" else float(text)
        except ValueError:
            raise _Failure(f"--threshold {item!r}: {text!r} is not a number", EXIT_USAGE) from None
    try:
        return Thresholds(**values)
    except ValueError as exc:
        raise _Failure(f"--threshold: {exc}", EXIT_USAGE) from None


def _inspect(graph, source: str, args: argparse.Namespace) -> None:
    from graphscope.tui import inspect

    thresholds = _thresholds(args)
    try:
        inspect(graph, source=source, thresholds=thresholds)
    except Exception as exc:
        raise _Crashed("the inspector crashed") from exc


def cmd_demo(args: argparse.Namespace) -> int:
    demos = _demos()  # the catalogue is plain data: listing and checking a name import no torch
    if args.list:
        width = max(len(name) for name in demos)
        for name, demo in demos.items():
            mark = "*" if name == DEFAULT_DEMO else " "
            print(f"{mark} {name:{width}}  {demo.description}")
        print("\n* the default. Run: graphscope demo NAME")
        return 0
    name = args.name or (DEFAULT_DEMO if DEFAULT_DEMO in demos else next(iter(demos)))
    demo = demos.get(name)
    if demo is None:  # before the terminal check: its advice would build this missing demo
        raise _Failure(f"no demo named {name!r}; `graphscope demo --list` shows them: "
                       + ", ".join(demos), EXIT_USAGE)
    # Before the demo (and torch) is built: fail at once.
    _need_terminal(f"to draw the demo instead, save it with `python -c \"from graphscope.demos "
                   f"import DEMOS; DEMOS['{name}'].build().save('{name}.json')\"`, then run "
                   f"`graphscope render {name}.json -o {name}.svg`")
    _thresholds(args)  # a bad option fails before the demo is built
    print(f"building {name}: {demo.description} …", file=sys.stderr, flush=True)
    graph = demo.build()  # its lesson is in graph.meta, shown inside the inspector
    _inspect(graph, name, args)
    return 0


def _open_run(path: str):
    from graphscope.errors import RunError
    from graphscope.runs import open_run

    try:
        return open_run(path)
    except RunError as exc:
        raise _Failure(str(exc), EXIT_USAGE) from None


def _is_run(path: str) -> bool:
    from graphscope.runs import is_run

    return is_run(path)


def cmd_view(args: argparse.Namespace) -> int:
    if _is_run(args.capture):
        _open_run(args.capture).close()  # a broken store is said before the terminal check
        _need_terminal(f"to see the run as text, run `graphscope report {args.capture}`")
        from graphscope.tui import inspect_run

        try:
            inspect_run(args.capture, follow=args.follow, thresholds=_thresholds(args))
        except Exception as exc:
            raise _Crashed("the inspector crashed") from exc
        return 0
    if args.follow:
        raise _Failure(f"--follow watches a run folder (watch(..., run=PATH)); {args.capture} is "
                       f"a single capture", EXIT_USAGE)
    # A bad file is the first thing to fix (and `render` would fail on it too); loading needs
    # no terminal and no torch, so it answers as fast as the terminal check.
    graph = _load(args.capture)
    _need_terminal(f"to draw the capture instead, run `graphscope render {args.capture} -o "
                   f"{Path(args.capture).with_suffix('.svg').name}`")
    _inspect(graph, args.capture, args)  # the path: exports go next to it
    return 0


class _Progress:
    """The step a render is on, shown only once the render has run ``delay`` seconds, so quick
    jobs stay quiet. On a terminal, one line rewritten in place with the seconds so far, ticking
    while a slow step (the layout) runs; elsewhere (a log, CI), one line per step from then on.
    ``close()`` clears the line it drew."""

    def __init__(self, stream=None, *, delay: float = 1.0, tick: float = 0.2) -> None:
        self.t0 = time.perf_counter()
        self.stream = stream if stream is not None else sys.stderr
        self.delay, self.tick = delay, tick
        try:
            self.live = self.stream.isatty()
        except (AttributeError, OSError, ValueError):
            self.live = False
        self._step = ""
        self._printed = ""  # the step last written as a line (not live)
        self._drawn = False  # a live line is on the screen
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="graphscope-progress", daemon=True)
        self._ticker.start()

    def __call__(self, message: str) -> None:
        with self._lock:
            self._step = message
            self._show()

    def close(self) -> None:
        self._done.set()
        self._ticker.join()
        with self._lock:
            if self._drawn:
                self.stream.write("\r\033[K")
                self.stream.flush()
                self._drawn = False

    def _tick(self) -> None:
        while not self._done.wait(self.tick):
            with self._lock:
                self._show()

    def _show(self) -> None:
        """Draw the current step if the render has been running long enough (lock held)."""
        elapsed = time.perf_counter() - self.t0
        if elapsed < self.delay or not self._step or self._done.is_set():
            return
        if self.live:
            self.stream.write(f"\r\033[K{self._step} … {elapsed:.1f} s")
            self._drawn = True
        elif self._step != self._printed:
            self.stream.write(f"[{elapsed:6.1f}s] {self._step}\n")
            self._printed = self._step
        else:
            return
        self.stream.flush()


def _check_output(out: Path, capture: str, *, engine: bool = True) -> None:
    """Fail before any work when ``render`` could not write ``out``: an unknown format, a
    directory, a folder that cannot be written, or no engine for the format."""
    from graphscope import export
    from graphscope.export.render import format_of

    example = f"{Path(capture).stem or 'graph'}.svg"
    if out.is_dir():  # before the suffix: `-o /tmp` is a folder, not a missing suffix
        raise _Failure(f"cannot write {out}: it is a directory; name a file in it, for example "
                       f"-o {out / example}", EXIT_USAGE)
    try:
        fmt = format_of(out)
    except ValueError as exc:
        raise _Failure(f"{exc}; for example -o {example}", EXIT_USAGE) from None
    folder = out.parent  # missing folders are created, so the nearest existing one must do
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise _Failure(f"cannot write {out}: {folder} is not a directory; choose another -o path",
                       EXIT_USAGE)
    try:  # permissions alone do not tell (root, read-only mounts): try it
        if out.exists():
            open(out, "ab").close()
        else:
            tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise _Failure(f"cannot write {out}: {exc.strerror or exc} (in {folder}); choose a folder "
                       "you can write to with -o", EXIT_USAGE) from None
    if engine and fmt in ("svg", "png", "pdf"):
        try:
            export.find_engine(fmt)
        except EngineError as exc:
            raise _Failure(str(exc), EXIT_ENGINE) from None


def _render_options(args: argparse.Namespace):
    """The picture options given on the command line, as a ``RenderOptions``."""
    from graphscope.export import RenderOptions

    try:
        return RenderOptions(
            max_nodes=args.max_nodes, depth=args.depth, fold_repeats=args.fold,
            show_shapes=args.shapes, legend=args.legend, rankdir=args.direction,
            engine=args.engine, timeout=args.timeout, thresholds=_thresholds(args),
        )
    except ValueError as exc:
        raise _Failure(str(exc), EXIT_USAGE) from None


def _render_timeline(args: argparse.Namespace, out: Path) -> int:
    from graphscope.export.timeline import FORMATS, draw_timeline

    if out.suffix.lower().lstrip(".") not in FORMATS:
        raise _Failure(f"a run's timeline is drawn as .svg, .png or .pdf, not {out.suffix or 'a file without suffix'!r}; "
                       f"to draw one step's graph, add --step N", EXIT_USAGE)
    _check_output(out, args.capture, engine=False)
    run = _open_run(args.capture)
    try:
        draw_timeline(run, out, thresholds=_thresholds(args))
    except ValueError as exc:
        raise _Failure(str(exc), EXIT_USAGE) from None
    if not args.quiet:
        print(f"wrote {out} ({out.stat().st_size:,} bytes)", file=sys.stderr)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    run = _is_run(args.capture)
    if not run and args.step is not None:
        raise _Failure(f"--step picks a step of a run folder; {args.capture} is a single capture",
                       EXIT_USAGE)
    if run and args.step is None:
        out = Path(args.output) if args.output else Path(args.capture).with_suffix(".svg")
        return _render_timeline(args, out)
    default = f"{Path(args.capture).name}_step{args.step}.svg" if run else None
    out = Path(args.output) if args.output else (
        Path(args.capture).parent / default if default else Path(args.capture).with_suffix(".svg"))
    options = _render_options(args)
    _check_output(out, args.capture)
    progress = _Progress()
    try:
        progress(f"loading {args.capture}")
        if run:
            from graphscope.errors import RunError

            try:
                graph = _open_run(args.capture).capture(args.step)
            except RunError as exc:
                raise _Failure(str(exc), EXIT_USAGE) from None
        else:
            graph = _load(args.capture)
        from graphscope import export

        try:
            drawn = export.render_graph(graph, out, progress=progress, options=options)
        except EngineError as exc:
            raise _Failure(str(exc), EXIT_ENGINE) from None
        except OSError as exc:  # checked above, but the disk can fill or the folder go away
            raise _Failure(f"cannot write {out}: {exc.strerror or exc}", EXIT_USAGE) from None
    finally:
        progress.close()
    if not args.quiet:
        size = out.stat().st_size if out.exists() else 0
        note = getattr(drawn, "note", "")
        print(f"wrote {out} ({size:,} bytes" + (f"; {note}" if note else "") + ")",
              file=sys.stderr)
    return 0


def _ago(t: float | None) -> str:
    if t is None:
        return "-"
    s = max(time.time() - t, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= size:
            return f"{s / size:.0f} {unit} ago"
    return f"{s:.0f} s ago"


def cmd_runs(args: argparse.Namespace) -> int:
    import json

    from graphscope.errors import RunError
    from graphscope.runs import list_runs, open_run
    from graphscope.ranks import analyze_ranks
    from graphscope.trends import worst

    folder = args.folder or ("runs" if Path("runs").is_dir() else ".")
    try:
        found = list_runs(folder)
    except RunError as exc:
        raise _Failure(str(exc), EXIT_USAGE) from None
    rows = []
    for r in found:
        row = {"path": str(r.path), "steps": r.steps, "last_step": r.last_step,
               "last_time": r.last_time, "captures": r.captures, "ranks": r.ranks,
               "worst": None, "error": r.error}
        if r.error is None:
            try:
                with open_run(r.path) as run:
                    findings = analyze_ranks(run)
                w = worst(findings)
                row["worst"] = None if w is None else str(w)
                bad = [f for f in findings if f.severity == w]
                where = f" on rank {bad[0].rank}" if bad and r.ranks > 1 else ""
                row["worst_finding"] = f"{bad[0].kind} from step {bad[0].step}{where}" if bad else None
            except RunError as exc:
                row["error"] = str(exc)
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no runs under {folder} (record one with graphscope.watch(model, run='runs/exp1'))")
        return 0
    width = max(len(r["path"]) for r in rows)
    print(f"{'run':<{width}}  {'steps':>7}  {'ranks':>5}  {'last step':<12}  {'captures':>8}  worst finding")
    for r in rows:
        if r["error"]:
            print(f"{r['path']:<{width}}  {'-':>7}  {'-':>5}  {'-':<12}  {'-':>8}  unreadable: {r['error']}")
            continue
        worst_text = f"{r['worst']}: {r.get('worst_finding')}" if r["worst"] else "none"
        print(f"{r['path']:<{width}}  {r['steps']:>7}  {r['ranks']:>5}  {_ago(r['last_time']):<12}  "
              f"{r['captures']:>8}  {worst_text}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from graphscope.model import Severity
    from graphscope.ranks import analyze_ranks, first_rank
    from graphscope.trends import first_nonfinite_loss

    run = _open_run(args.run_path)
    with run:
        recorded = run.ranks() or [0]
        if args.rank is not None and args.rank not in recorded:
            raise _Failure(f"{run.path} has no rank {args.rank}; its ranks are "
                           f"{', '.join(map(str, recorded))}", EXIT_USAGE)
        # Every rank of a multi-process run by default; the cross-rank checks read them all.
        ranks = recorded if args.rank is None else [args.rank]
        per_rank = {r: run.steps(r) for r in ranks}
        findings = analyze_ranks(run, ranks=ranks, thresholds=_thresholds(args))
    steps = per_rank[ranks[0]]
    losses = [s for s in (first_nonfinite_loss(v) for v in per_rank.values()) if s is not None]
    bad_loss = min(losses) if losses else None
    many = len(recorded) > 1
    gate = any(f.severity >= Severity.WARNING for f in findings)
    if args.json:
        print(json.dumps({
            "run": str(run.path), "rank": ranks[0] if len(ranks) == 1 else None,
            "ranks": ranks, "steps": len(steps),
            "steps_per_rank": {str(r): len(v) for r, v in per_rank.items()},
            "first_rank_wrong": first_rank(findings),
            "first_nonfinite_loss_step": bad_loss,
            "findings": [{"kind": f.kind, "severity": str(f.severity), "step": f.step,
                          "last_step": f.last_step, "params": list(f.params),
                          "message": f.message, "hint": f.hint, "rank": f.rank}
                         for f in findings],
        }, indent=2))
        return EXIT_FINDINGS if gate else 0
    last = int(steps.step[-1]) if len(steps) else 0
    where = f" on each of {len(ranks)} ranks" if len(ranks) > 1 else (f" on rank {ranks[0]}" if many else "")
    print(f"{run.path}: {len(steps)} steps recorded{where} (last: step {last})"
          + (f"; the loss was non-finite from step {bad_loss}" if bad_loss is not None else ""))
    wrong = first_rank(findings) if many else None
    if wrong is not None:
        print(f"rank {wrong} went wrong first")
    if not findings:
        print("no findings: gradients looked healthy at every recorded step")
    for f in findings:
        rank = f"rank {f.rank:<3} " if many else ""
        print(f"step {f.step:>6}  {rank}{str(f.severity):<7}  {f.kind}: {f.message}")
        if f.hint:
            print(f"{'':>14}hint: {f.hint}")
    return EXIT_FINDINGS if gate else 0


def _bounded(convert, ok, hint: str):
    """An argparse ``type``: ``convert(text)``, refused with ``hint`` unless ``ok(value)``."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r}: give {hint}")
        return value
    return parse


def _all_or(parse):
    """``parse``, with ``all`` (or ``none``) meaning no limit."""
    return lambda text: None if text.strip().lower() in ("all", "none") else parse(text)


_max_nodes = _all_or(_bounded(int, lambda n: n >= 2, "a whole number of at least 2, or 'all'"))
_depth = _bounded(int, lambda n: n >= 0, "a whole number, 0 or more")
_seconds = _bounded(float, lambda t: t > 0, "a number of seconds above 0")


def cmd_export(args: argparse.Namespace) -> int:
    if not (args.tensorboard or args.wandb):
        raise _Failure("say where to: --tensorboard DIR and/or --wandb DIR", EXIT_USAGE)
    with _open_run(args.run_path) as run:
        if args.rank not in (run.ranks() or [0]):
            raise _Failure(f"{run.path} has no rank {args.rank}", EXIT_USAGE)
        for target, folder in (("tensorboard", args.tensorboard), ("wandb", args.wandb)):
            if not folder:
                continue
            # Each target's package is imported only when asked for (an optional extra).
            if target == "tensorboard":
                from graphscope.export.tensorboard import to_tensorboard as write
            else:
                from graphscope.export.wandb import to_wandb as write
            try:
                written = write(run, folder, rank=args.rank)
            except ImportError as exc:
                raise _Failure(str(exc), EXIT_USAGE) from None
            if not args.quiet:
                print(f"wrote {run.path} ({run.step_count(args.rank)} steps) for {target}: {written}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    debug_help = "on an unexpected error, print the full traceback (else it goes to a log file)"
    parser = argparse.ArgumentParser(
        prog="graphscope",
        description="See and debug PyTorch's autograd graph.",
        epilog="Keys in the inspector: press ? for help, q to quit.",
    )
    from graphscope import __version__

    parser.add_argument("--version", action="version", version=f"graphscope {__version__}")
    parser.add_argument("--debug", action="store_true", help=debug_help)
    # Also accepted after the command; SUPPRESS keeps an absent one from undoing the global one.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    common.add_argument("--threshold", action="append", metavar="NAME=VALUE",
                        help="judge the gradients with this limit instead of the capture's own "
                        "(repeatable): vanishing_rms, exploding_rms, vanishing_ratio, "
                        "exploding_ratio, dead_frac, min_layers; e.g. --threshold exploding_rms=1e3")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="open the inspector on a built-in example model",
                          description="Open the inspector on a built-in example model.",
                          parents=[common])
    demo.add_argument("name", nargs="?", help=f"which demo (default: {DEFAULT_DEMO})")
    demo.add_argument("--list", action="store_true", help="list the demos and exit")
    demo.set_defaults(run=cmd_demo)

    view = sub.add_parser("view", help="open the inspector on a saved capture",
                          description="Open the inspector on a capture saved with graph.save().",
                          parents=[common])
    view.add_argument("capture", help="a .json file written by graph.save(path), or a run folder "
                      "written by watch(..., run=PATH) (opens its timeline)")
    view.add_argument("--follow", action="store_true",
                      help="for a run: refresh every second while training writes it")
    view.set_defaults(run=cmd_view)

    render = sub.add_parser("render", help="draw a saved capture to SVG/PNG/PDF/DOT",
                            description="Draw a saved capture; the output suffix picks the format.",
                            parents=[common])
    render.add_argument("capture", help="a .json file written by graph.save(path), or a run folder "
                        "(draws its timeline: .svg, .png or .pdf)")
    render.add_argument("--step", type=_bounded(int, lambda v: v >= 1, "a step number (1 or more)"),
                        help="for a run: draw the full capture of this step instead")
    render.add_argument("-o", "--output", help="output file: .svg, .png, .pdf (system Graphviz), "
                        ".dot or .json (default: CAPTURE with .svg)")
    render.add_argument("-q", "--quiet", action="store_true",
                        help="print nothing on success (progress still shows on slow renders)")
    _add_picture_options(render.add_argument_group("picture options (as graphscope.RenderOptions)"))
    render.set_defaults(run=cmd_render)

    runs = sub.add_parser("runs", help="list the recorded runs under a folder",
                          description="List the runs (watch(..., run=PATH)) under a folder: steps, "
                          "last step time, captures, worst finding.", parents=[common])
    runs.add_argument("folder", nargs="?", help="where to look (default: ./runs, else .)")
    runs.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    runs.set_defaults(run=cmd_runs)

    report = sub.add_parser("report", help="print a run's findings over time (exit 4 on warnings)",
                            description="Print a recorded run's findings over time, each with the "
                            "step it started at. Exit status 4 when any is a warning or an error, "
                            "so it can gate a pipeline.", parents=[common])
    report.add_argument("run_path", metavar="RUN", help="a run folder written by watch(..., run=PATH)")
    report.add_argument("--json", action="store_true", help="machine-readable findings")
    report.add_argument("--rank", type=_bounded(int, lambda v: v >= 0, "a rank (0 or more)"),
                        default=None, help="only this process of a multi-process run (default: every rank)")
    report.set_defaults(run=cmd_report)

    export = sub.add_parser("export", help="write a run's numbers for TensorBoard or W&B",
                            description="Write a recorded run's per-step numbers (loss, gradient "
                            "norm, per-layer gradient RMS, update ratios, learning rates) and its "
                            "findings over time as TensorBoard event files or an offline W&B run.",
                            parents=[common])
    export.add_argument("run_path", metavar="RUN", help="a run folder written by watch(..., run=PATH)")
    export.add_argument("--tensorboard", metavar="DIR", help="write TensorBoard events into DIR")
    export.add_argument("--wandb", metavar="DIR", help="write an offline W&B run under DIR "
                        "(upload it later with `wandb sync`)")
    export.add_argument("--rank", type=_bounded(int, lambda v: v >= 0, "a rank (0 or more)"),
                        default=0, help="which process of a multi-process run (default 0)")
    export.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    export.set_defaults(run=cmd_export)
    return parser


def _add_picture_options(group) -> None:
    """One option per ``RenderOptions`` field, its default the field's default."""
    from graphscope.export.options import ENGINES, RANKDIRS, RenderOptions

    d = RenderOptions()
    group.add_argument("--max-nodes", type=_max_nodes, default=d.max_nodes, metavar="N",
                       help=f"the most boxes to draw; a bigger graph is collapsed (repeats folded, "
                       f"ops grouped by module, chains merged); 'all' draws every node "
                       f"(default: {d.max_nodes})")
    group.add_argument("--depth", type=_depth, default=d.depth, metavar="N",
                       help="group ops by module path cut to N parts (2: encoder.layers.3.attn "
                       "-> encoder.layers); default: as fine as --max-nodes allows")
    group.add_argument("--direction", "--rankdir", choices=RANKDIRS, default=d.rankdir,
                       help="TB: inputs at the top, loss at the bottom; LR: left to right "
                       f"(default: {d.rankdir})")
    group.add_argument("--no-fold", dest="fold", action="store_false", default=d.fold_repeats,
                       help="draw repeated blocks (layers.0 .. layers.11) each, not once marked x12")
    group.add_argument("--no-shapes", dest="shapes", action="store_false", default=d.show_shapes,
                       help="leave tensor shapes off the edges")
    group.add_argument("--no-legend", dest="legend", action="store_false", default=d.legend,
                       help="leave out the legend of shapes and colours")
    group.add_argument("--engine", choices=ENGINES, default=d.engine,
                       help="layout engine (default: the system dot if installed, else "
                       "graphviz-pure)")
    group.add_argument("--timeout", type=_seconds, default=d.timeout, metavar="SECONDS",
                       help=f"stop the layout after this long (default: {d.timeout:g})")


def _summary(error: BaseException) -> str:
    """``OverflowError: cannot convert float infinity to integer``, on one line."""
    message = " ".join(str(error).split())
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _write_log(error: BaseException, argv: Sequence[str]) -> str | None:
    """The traceback and what was run, in a new temporary file; its path (None if unwritable)."""
    from graphscope import __version__

    try:
        fd, path = tempfile.mkstemp(prefix="graphscope-crash-", suffix=".log")
        with os.fdopen(fd, "w", encoding="utf-8") as log:
            log.write(f"graphscope {__version__}, Python {sys.version.split()[0]}, {sys.platform}\n")
            log.write(f"command: graphscope {' '.join(argv)}\n\n")
            log.write("".join(traceback.format_exception(error)))
    except OSError:
        return None
    return path


def _report_bug(exc: Exception, argv: Sequence[str], *, debug: bool) -> int:
    """One line for an error nobody expected, the traceback in a log (or on stderr with
    ``--debug``); exit 1."""
    crashed = isinstance(exc, _Crashed) and exc.__cause__ is not None
    error = exc.__cause__ if crashed else exc
    assert error is not None
    line = f"{exc}: {_summary(error)}" if crashed else f"unexpected {_summary(error)}"
    if debug:
        traceback.print_exception(error, file=sys.stderr)
        print(f"graphscope: error: {line}", file=sys.stderr)
        return EXIT_BUG
    log = _write_log(error, argv)
    where = f"full traceback in {log}" if log else "no log file could be written"
    print(f"graphscope: error: {line} ({where}; rerun with --debug to see it)", file=sys.stderr)
    return EXIT_BUG


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `graphscope`: what it can do, not a usage error
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except _Failure as exc:
        print(f"graphscope: error: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `graphscope demo --list | head`: the reader left, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit either
        return EXIT_BUG
    except Exception as exc:  # noqa: BLE001 - a bug: reported in one line, never exit 0
        return _report_bug(exc, argv, debug=args.debug)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
