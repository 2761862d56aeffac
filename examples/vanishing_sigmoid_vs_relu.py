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
from torch import nn

import graphscope
from graphscope.formatting import fmt_num

torch.manual_seed(0)  # the same random init and data on every run
out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "out")
rms: dict[str, dict[str, float]] = {}
x, y = torch.randn(32, 8), torch.randn(32, 1)


def mlp(activation: type[nn.Module]) -> nn.Sequential:
    """20 hidden Linear layers of 32 units, each followed by ``activation``, then one output."""
    layers: list[nn.Module] = []
    for i in range(20):
        layers += [nn.Linear(32 if i else 8, 32), activation()]
    return nn.Sequential(*layers, nn.Linear(32, 1))


sigmoid_mlp = mlp(nn.Sigmoid)
relu_mlp = mlp(nn.ReLU)
# ReLU alone is not enough at depth 20: PyTorch's default init shrinks the signal by about 0.4
# a layer. Kaiming (He) init keeps it at 1, which is what makes deep ReLU nets train.
with torch.no_grad():
    for m in relu_mlp.modules():
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            m.bias.zero_()

for name, model in (("sigmoid_mlp", sigmoid_mlp), ("relu_mlp", relu_mlp)):
    loss = nn.functional.mse_loss(model(x), y)
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
