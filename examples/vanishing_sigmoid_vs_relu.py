"""Vanishing gradients: a 20-layer sigmoid MLP next to the same MLP with ReLU and Kaiming init.

    python examples/vanishing_sigmoid_vs_relu.py [OUT_DIR]
    # writes OUT_DIR/sigmoid_mlp.svg and OUT_DIR/relu_mlp.svg

The sigmoid's derivative is at most 0.25, so every layer shrinks the gradient on its way back:
twenty layers later the first weights get almost nothing. graphscope warns
(``VanishingGradientWarning``) when backward finishes, and the picture turns the starved
layers blue. With ReLU and Kaiming init the per-layer gradient RMS stays in one band.
"""

import sys
import warnings
from pathlib import Path

import torch

import graphscope
from graphscope.demos import DEMOS
from graphscope.formatting import fmt_num

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")
rms: dict[str, dict[str, float]] = {}

for name in ("sigmoid_mlp", "relu_mlp"):
    model, forward = DEMOS[name].make()
    loss = forward()
    graph = graphscope.capture(loss, model=model)  # warn=True: findings become warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loss.backward()
    print(f"{name}: {len(caught)} warning(s)" + (f", e.g. {caught[0].message}" if caught else ""))
    rms[name] = {p.name: p.grad.rms for p in graph.param_nodes if p.name.endswith("weight")}
    graphscope.render(graph, out / f"{name}.svg")

print(f"\n{'weight':>10}  {'sigmoid rms':>12}  {'relu rms':>12}")
for param in rms["sigmoid_mlp"]:
    print(f"{param:>10}  {fmt_num(rms['sigmoid_mlp'][param]):>12}  {fmt_num(rms['relu_mlp'][param]):>12}")
print(f"\nwrote {out / 'sigmoid_mlp.svg'} and {out / 'relu_mlp.svg'}")
