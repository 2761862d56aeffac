"""How fast the inspector opens and answers keys on a 50,000-node graph, next to a tiny one.

Builds a ``model.Graph`` by hand with the tests' ``Builder`` (``tests/graphs.py``, no torch): a
deep chain of linear layers (addmm + relu, each with a transposed weight and a bias parameter)
whose every 100th output also feeds a final fan-in sum, so long runs, shared nodes and parameters are all present. Saves it, then measures
``model.load``, the app's start-up (``run_test`` until the first frame) and the time per key,
through Pilot, for cursor moves, expanding, jumping to a finding deep in the graph, search and
regrouping. Pilot's own overhead per key shows in the tiny graph's column.

Run: ``python benchmarks/bench_tui.py [--nodes 50000]``
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from graphscope.model import OP, PARAM, Edge, Finding, Graph, Severity, load  # noqa: E402
from graphscope.tui.app import InspectorApp  # noqa: E402
from tests.graphs import Builder  # noqa: E402


def build(n_nodes: int) -> Graph:
    """A graph of about ``n_nodes`` nodes: chain + fan-in + parameters, ids in walk order."""
    b = Builder()

    def add(op: str, label: str, kind: str = OP, names: tuple[str, ...] = (), module: str = "",
            rms: float = 1e-3) -> int:
        return b.add(op, label, kind=kind, names=names, shapes=((32, 32),),
                     module=module or None, rms=rms, root=not b.nodes)

    edges = b.edges
    layers = max(1, (n_nodes - 2) // 5)
    loss = add("SumBackward0", "sum")
    fan = add("StackBackward0", "stack")
    edges.append(Edge(fan, loss, 0, 0))
    consumer, slot, taps = fan, 0, 0
    weights = []
    for k in range(layers):
        mod = f"layers.{layers - 1 - k}"
        rms = 10 ** (-12 * k / layers)
        relu = add("ReluBackward0", "relu", module=mod, rms=rms)
        edges.append(Edge(relu, consumer, 0, slot))
        if k % 100 == 0:  # this output also feeds the fan-in: a shared node
            edges.append(Edge(relu, fan, 0, 1 + taps))
            taps += 1
        mm = add("AddmmBackward0", "addmm", module=mod, rms=rms)
        edges.append(Edge(mm, relu, 0, 0))
        bias = add("AccumulateGrad", f"{mod}.bias", PARAM, (f"{mod}.bias",), mod, rms)
        t = add("TBackward0", "t", module=mod, rms=rms)
        w = add("AccumulateGrad", f"{mod}.weight", PARAM, (f"{mod}.weight",), mod, rms)
        edges += [Edge(bias, mm, 0, 0), Edge(t, mm, 0, 2), Edge(w, t, 0, 0)]
        weights.append(w)
        consumer, slot = mm, 1
    findings = [
        Finding("vanishing", Severity.WARNING, weights[-1], "first layer's weight vanishes"),
        Finding("vanishing", Severity.WARNING, weights[len(weights) // 2], "a middle layer"),
        Finding("dead", Severity.INFO, weights[0], "last layer"),
    ]
    return b.graph(findings=findings)


KEYS = [
    ("cursor down (j)", ["j"]),
    ("expand (l)", ["l"]),
    ("next finding, deep (n)", ["n"]),
    ("search + enter", ["slash", "r", "e", "l", "u", "enter", "escape"]),
    ("regroup by module (g)", ["g"]),
    ("regroup back (g)", ["g"]),
]


async def _measure(graph: Graph, repeats: int) -> dict[str, float]:
    out: dict[str, float] = {}
    app = InspectorApp(graph, source="bench")
    t0 = time.perf_counter()
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        out["open (mount + first frame)"] = time.perf_counter() - t0
        for name, keys in KEYS:
            times = []
            for _ in range(repeats if name.startswith("cursor") else 1):
                t = time.perf_counter()
                await pilot.press(*keys)
                await pilot.pause()
                times.append(time.perf_counter() - t)
            out[name] = sum(times) / len(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    rows: dict[str, dict[str, float]] = {}
    sizes = {"tiny": 52, "big": args.nodes}
    with tempfile.TemporaryDirectory() as tmp:
        for label, n in sizes.items():
            t = time.perf_counter()
            graph = build(n)
            path = graph.save(Path(tmp) / f"{label}.json")
            built = time.perf_counter() - t
            t = time.perf_counter()
            graph = load(path)
            res = {"build + save": built, "model.load": time.perf_counter() - t}
            res.update(asyncio.run(_measure(graph, args.repeats)))
            rows[label] = res
            sizes[label] = len(graph.nodes)
    head = f"{'ms':28} " + " ".join(f"{f'{k} ({v:,} nodes)':>22}" for k, v in sizes.items())
    print(head)
    print("-" * len(head))
    for metric in rows["big"]:
        print(f"{metric:28} " + " ".join(f"{rows[k][metric] * 1000:22.1f}" for k in rows))


if __name__ == "__main__":
    main()
