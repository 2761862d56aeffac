"""Benchmark graphscope against plain PyTorch and its peers on the four models of issue 6.

Owns the measurements and the results table. For each model (``models.py``) it times, in one
run and interleaved so machine load hits every column alike: plain forward+backward; a bare BFS
over ``next_functions`` (the floor for any capture); ``graphscope.capture``; backward with full
statistics; a ``graphscope.watch`` step; the default render; loading the saved capture and
building the TUI app; torchviz's ``make_dot`` and its ``dot`` layout; TorchLens with gradients;
``torch.autograd.detect_anomaly``. It also measures the memory graphscope adds. Medians of
several runs; the first run of each kind is a discarded warm-up. Peers that run long are cut off
by a timeout and reported as such.

Usage: ``python benchmarks/run.py [--models gpt2,lstm200] [--threads 1] [--quick]``. Writes the
table to ``benchmarks/README.md`` (between the RESULTS markers) and prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import datetime
import gc
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import models  # noqa: E402

import graphscope  # noqa: E402
from graphscope.autograd.watch import watch  # noqa: E402

HERE = Path(__file__).resolve().parent
BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"
PEER_TIMEOUT_S = 120
DOT_TIMEOUT_S = 60


class Timeout(Exception):
    pass


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Raise ``Timeout`` in the main thread after ``seconds`` (peers with no timeout of their own)."""

    def fire(*_: Any) -> None:
        raise Timeout

    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _bfs(fn: Any) -> int:
    seen, queue = {fn}, deque([fn])
    while queue:
        for child, _ in queue.popleft().next_functions:
            if child is not None and child not in seen:
                seen.add(child)
                queue.append(child)
    return len(seen)


def _clock(fn: Callable[[], Any]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
            "fordblks", "keepcost",
        )
    ]


def _heap() -> int:
    """Bytes malloc has handed out and not taken back (small blocks + mmapped large ones).

    Unlike RSS this drops when torch frees a tensor, so a peak over a baseline is what the
    call itself allocated at most at once.
    """
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


_libc = ctypes.CDLL(ctypes.util.find_library("c"))
_libc.mallinfo2.restype = _MallInfo2


def _peak_heap_added(fn: Callable[[], Any]) -> int:
    """Highest heap in use while ``fn`` runs, minus the heap before it (sampled every ms)."""
    gc.collect()
    base = _heap()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _heap())
            time.sleep(0.001)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    peak[0] = max(peak[0], _heap())
    return peak[0] - base


@dataclass
class Result:
    name: str
    nodes: int = 0
    times: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    memory: dict[str, float] = field(default_factory=dict)

    def add(self, key: str, seconds: float) -> None:
        self.times.setdefault(key, []).append(seconds)

    def ms(self, key: str) -> float | None:
        runs = self.times.get(key)
        if not runs:
            return None
        kept = runs[1:] if len(runs) > 1 else runs  # the first run is a warm-up
        return statistics.median(kept) * 1e3


def _zero(case: models.Case) -> None:
    case.model.zero_grad(set_to_none=True)


def _core(case: models.Case, res: Result, repeats: int) -> graphscope.Graph:
    """Plain, BFS, capture, stats and watch, interleaved; returns the last capture."""
    graph = None
    with watch(case.model, warn=False) as _warmup:  # import/first-use costs out of the loop
        _zero(case)
        case.forward().backward()
    for _ in range(repeats + 1):
        _zero(case)
        t = time.perf_counter()
        loss = case.forward()
        res.add("forward", time.perf_counter() - t)
        gc.collect()  # each timed section starts with a clean collector, BFS and capture alike
        res.add("bfs", _clock(lambda: _bfs(loss.grad_fn)))
        res.add("backward", _clock(loss.backward))
        res.add("plain", sum(r[-1] for k, r in res.times.items() if k in ("forward", "backward")))

        _zero(case)
        loss = case.forward()
        gc.collect()
        t = time.perf_counter()
        graph = graphscope.capture(loss, model=case.model, warn=False)
        res.add("capture", time.perf_counter() - t)
        res.add("stats_backward", _clock(loss.backward))

        _zero(case)

        def watched_step() -> None:
            with watch(case.model, warn=False):
                case.forward().backward()

        res.add("watch", _clock(watched_step))
    assert graph is not None
    res.nodes = len(graph.nodes)
    return graph


def _render(graph: graphscope.Graph, res: Result, tmp: Path) -> None:
    try:
        from graphscope.drawing import render
    except ImportError:
        res.notes["render"] = "n/a: not built"
        return
    for _ in range(2):
        try:
            with _deadline(PEER_TIMEOUT_S):
                res.add("render", _clock(lambda: render(graph, tmp / f"{res.name}.svg")))
        except Timeout:
            res.notes["render"] = f"> {PEER_TIMEOUT_S} s"
            return
        except Exception as exc:  # a broken renderer is a finding, not a crash of the run
            res.notes["render"] = f"failed: {type(exc).__name__}"
            return


def _tui_load(graph: graphscope.Graph, res: Result, tmp: Path) -> None:
    path = graph.save(tmp / f"{res.name}.json")
    res.memory["capture_file_kb"] = path.stat().st_size / 1024
    try:
        from graphscope.tui.app import InspectorApp
    except ImportError:
        res.notes["tui"] = "n/a: no graphscope.tui.app.InspectorApp"
        return
    for _ in range(3):
        res.add("tui", _clock(lambda: InspectorApp(graphscope.load(path))))


def _torchviz(case: models.Case, res: Result, tmp: Path) -> None:
    try:
        from torchviz import make_dot
    except ImportError:
        res.notes["torchviz"] = "n/a: torchviz not installed"
        return
    loss = case.forward()
    params = dict(case.model.named_parameters())
    t = time.perf_counter()
    try:
        with _deadline(PEER_TIMEOUT_S):
            dot = make_dot(loss, params=params)
            source = dot.source
    except RecursionError:
        res.notes["torchviz"] = "RecursionError"
        return
    except Timeout:
        res.notes["torchviz"] = f"> {PEER_TIMEOUT_S} s"
        return
    res.add("torchviz", time.perf_counter() - t)
    src = tmp / f"{res.name}.gv"
    src.write_text(source)
    t = time.perf_counter()
    try:
        subprocess.run(
            ["dot", "-Tsvg", str(src), "-o", str(tmp / f"{res.name}.torchviz.svg")],
            check=True,
            timeout=DOT_TIMEOUT_S,
            capture_output=True,
        )
        res.add("torchviz_dot", time.perf_counter() - t)
    except subprocess.TimeoutExpired:
        res.notes["torchviz_dot"] = f"> {DOT_TIMEOUT_S} s"
    except (OSError, subprocess.CalledProcessError) as exc:
        res.notes["torchviz_dot"] = f"failed: {type(exc).__name__}"


def _torchlens(case: models.Case, res: Result, repeats: int) -> None:
    try:
        import torchlens
        from torchlens.options import CaptureOptions
    except ImportError:
        res.notes["torchlens"] = "n/a: torchlens not installed"
        return
    options = CaptureOptions(save_grads=True, unwrap_when_done=True)
    for _ in range(max(1, min(repeats, 2)) + 1):
        _zero(case)
        t = time.perf_counter()
        try:
            with _deadline(PEER_TIMEOUT_S):
                trace = torchlens.trace(case.model, list(case.inputs), capture=options)
                out = trace[trace.output_layers[0]].out
                trace.log_backward(case.criterion(out))
        except Timeout:
            res.notes["torchlens"] = f"> {PEER_TIMEOUT_S} s"
            return
        except Exception as exc:
            res.notes["torchlens"] = f"failed: {type(exc).__name__}: {str(exc)[:60]}"
            return
        res.add("torchlens", time.perf_counter() - t)
        del trace
        gc.collect()


def _anomaly(case: models.Case, res: Result, repeats: int) -> None:
    for _ in range(max(1, min(repeats, 3)) + 1):
        _zero(case)

        def step() -> None:
            with torch.autograd.detect_anomaly(check_nan=True):
                case.forward().backward()

        with warnings_off():
            res.add("anomaly", _clock(step))


@contextlib.contextmanager
def warnings_off() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _memory(case: models.Case, res: Result) -> None:
    """Memory added by capture + stats: Python objects (tracemalloc) and malloc peaks."""
    _zero(case)
    loss = case.forward()
    res.memory["heap_plain_mb"] = _peak_heap_added(loss.backward) / 2**20
    _zero(case)
    loss = case.forward()

    def captured() -> None:
        graph = graphscope.capture(loss, model=case.model, warn=False)
        loss.backward()
        res.memory["graph_nodes"] = len(graph.nodes)

    res.memory["heap_stats_mb"] = _peak_heap_added(captured) / 2**20
    _zero(case)
    loss = case.forward()
    tracemalloc.start()
    graph = graphscope.capture(loss, model=case.model, warn=False)
    loss.backward()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    res.memory["python_peak_mb"] = peak / 2**20
    grads = sum(p.numel() * p.element_size() for p in case.model.parameters())
    res.memory["param_grads_mb"] = grads / 2**20
    del graph


def bench(case: models.Case, *, quick: bool) -> Result:
    res = Result(case.name)
    repeats = 1 if quick else case.repeats
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        print(f"[{case.name}] core", flush=True)
        graph = _core(case, res, repeats)
        print(f"[{case.name}] render, tui", flush=True)
        _render(graph, res, tmp)
        _tui_load(graph, res, tmp)
        print(f"[{case.name}] anomaly", flush=True)
        _anomaly(case, res, repeats)
        print(f"[{case.name}] torchviz", flush=True)
        _torchviz(case, res, tmp)
        print(f"[{case.name}] torchlens", flush=True)
        _torchlens(case, res, repeats)
        print(f"[{case.name}] memory", flush=True)
        _memory(case, res)
    return res


# -- the table ------------------------------------------------------------------------------------

TARGETS = {  # on the GPT-2-sized model (issue 6, section 5)
    "capture": ("bfs", 2.0),
    "stats_backward": ("backward", 1.3),
    "watch": ("plain", 1.5),
}
# Issue 14, on the small-op models: backward with statistics and a watch step at most 2x plain,
# capture at most 10x the bare BFS.
SMALL_OP_TARGETS = {
    "capture": ("bfs", 10.0),
    "stats_backward": ("backward", 2.0),
    "watch": ("plain", 2.0),
}


def _cell(res: Result, key: str, base: str | None) -> str:
    if key in res.notes and res.ms(key) is None:
        return res.notes[key]
    ms = res.ms(key)
    if ms is None:
        return "n/a"
    text = f"{ms:,.0f} ms" if ms >= 10 else f"{ms:.2f} ms"
    if base is not None:
        b = res.ms(base)
        if b:
            text = f"**{ms / b:.2f}x** ({text})"
    return text


def table(results: list[Result], *, threads: int, flush_denormal: bool = False) -> str:
    rows = [
        ("nodes in the graph", None, None),
        ("plain forward + backward", "plain", None),
        ("plain backward", "backward", None),
        ("bare BFS over next_functions", "bfs", None),
        ("graphscope capture (vs BFS)", "capture", "bfs"),
        ("backward with full stats (vs plain backward)", "stats_backward", "backward"),
        ("graphscope.watch step (vs plain fwd+bwd)", "watch", "plain"),
        ("default SVG render", "render", None),
        ("TUI: load saved capture + build app", "tui", None),
        ("torch.autograd.detect_anomaly (vs plain fwd+bwd)", "anomaly", "plain"),
        ("TorchLens trace with gradients (vs plain fwd+bwd)", "torchlens", "plain"),
        ("torchviz make_dot", "torchviz", None),
        ("torchviz `dot` layout", "torchviz_dot", None),
    ]
    head = "| | " + " | ".join(r.name for r in results) + " |"
    out = [head, "|---" * (len(results) + 1) + "|"]
    for label, key, base in rows:
        if key is None:
            cells = [str(r.nodes) for r in results]
        else:
            cells = [_cell(r, key, base) for r in results]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    mem = [
        ("peak heap added by plain backward", "heap_plain_mb", "MB"),
        ("peak heap added by capture + backward with stats", "heap_stats_mb", "MB"),
        ("peak Python memory of capture + stats (tracemalloc)", "python_peak_mb", "MB"),
        ("for scale: the parameter gradients", "param_grads_mb", "MB"),
        ("saved capture (JSON)", "capture_file_kb", "KB"),
    ]
    for label, key, unit in mem:
        cells = [f"{r.memory[key]:,.1f} {unit}" if key in r.memory else "n/a" for r in results]
        out.append(f"| {label} | " + " | ".join(cells) + " |")
    verdicts = []
    gpt = next((r for r in results if r.name == "gpt2"), None)
    if gpt is not None:
        for key, (base, limit) in TARGETS.items():
            a, b = gpt.ms(key), gpt.ms(base)
            if a is None or not b:
                continue
            ratio = a / b
            verdicts.append(
                f"- {key} / {base} on gpt2: {ratio:.2f}x, target <= {limit}x: "
                f"{'met' if ratio <= limit else 'MISSED'}"
            )
    for r in results:
        if r.name not in ("mlp50", "lstm200"):
            continue
        for key, (base, limit) in SMALL_OP_TARGETS.items():
            a, b = r.ms(key), r.ms(base)
            if a is not None and b:
                verdicts.append(
                    f"- {key} / {base} on {r.name}: {a / b:.2f}x, target <= {limit}x (issue 14): "
                    f"{'met' if a / b <= limit else 'MISSED'}"
                )
    if gpt is not None:
        for r in results:
            ms = r.ms("render")
            if ms is not None:
                verdicts.append(
                    f"- render {r.name}: {ms / 1e3:.1f} s, target < 5 s: "
                    f"{'met' if ms < 5000 else 'MISSED'}"
                )
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    meta = (
        f"Measured {datetime.date.today().isoformat()} on {cpu}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {threads} intra-op thread(s), Python "
        f"{platform.python_version()}. Ratios are medians; raw medians in parentheses."
        + (" Subnormals flushed to zero (`--flush-denormal`): plain backward is not slowed by "
           "the sigmoid MLP's and the LSTM's subnormal gradients, so graphscope's own cost shows."
           if flush_denormal else "")
    )
    return "\n".join([meta, "", *out, "", "Targets (issues 6 and 14):", "", *verdicts])


def _write_readme(text: str) -> None:
    readme = HERE / "README.md"
    body = readme.read_text() if readme.exists() else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in body and END in body:
        body = body[: body.index(BEGIN)] + block + body[body.index(END) + len(END) :]
    else:
        body = body.rstrip() + "\n\n" + block + "\n"
    readme.write_text(body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mlp50,resnet18,lstm200,gpt2")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads (default 1: stable on a shared 2-core machine)",
    )
    parser.add_argument("--quick", action="store_true", help="one repeat each (smoke test)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument(
        "--flush-denormal",
        action="store_true",
        help="flush subnormal floats to zero (torch.set_flush_denormal): on CPUs where subnormal "
        "arithmetic is slow it dominates plain backward of the deep sigmoid MLP and the LSTM",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.flush_denormal:
        torch.set_flush_denormal(True)
    wanted = args.models.split(",")
    results = []
    for case in models.cases():
        if case.name in wanted:
            results.append(bench(case, quick=args.quick))
            del case
            gc.collect()
    text = table(results, threads=args.threads, flush_denormal=args.flush_denormal)
    print(text)
    if not args.no_write:
        _write_readme(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
