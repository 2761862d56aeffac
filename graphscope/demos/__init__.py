"""Built-in example models: small, random-init networks that each teach one idea.

Owns the catalogue behind ``graphscope demo`` (names, descriptions, lessons) as plain data, so
``graphscope demo --list`` and the inspector's lesson banner need no torch. The models live in
``graphscope.demos.models`` (torch and the capture layer), imported on the first ``make()`` or
``build()``, or when one of its names (``mlp``, ``LSTMRegressor``, ...) is asked of this module.
The TUI never imports this package (the CLI hands it a finished ``Graph`` and the lesson).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from graphscope.model import Graph


@dataclass(frozen=True)
class Demo:
    """One built-in example.

    Attributes:
        name: The name ``graphscope demo NAME`` takes.
        description: One sentence: what the example shows.
        lesson: What to look for in the inspector or the picture.
        maker: The function in ``graphscope.demos.models`` that builds ``(model, forward)``.
    """

    name: str
    description: str
    lesson: str
    maker: str

    def make(self) -> tuple[Any, Any]:
        """Build ``(model, forward)``; ``forward()`` runs the model and returns the loss."""
        return getattr(_models(), self.maker)()

    def build(self, *, seed: int = 0) -> Graph:
        """Build the model, capture its loss, run backward; returns the finished ``Graph``, its
        ``meta["lesson"]`` set (the inspector shows it in a banner). A ``tour:`` maker builds
        the whole graph itself (plain tensors, the learner's names)."""
        if self.maker.startswith("tour:"):
            graph = getattr(importlib.import_module("graphscope.demos.tour"), self.maker[5:])()
            graph.meta["title"] = f"{self.name}: {self.description}"
        else:
            graph = _models().build(self.name, self.description, self.make, seed=seed)
        graph.meta["lesson"] = self.lesson
        return graph


def _models() -> Any:
    return importlib.import_module("graphscope.demos.models")


_MODEL_NAMES = frozenset({"mlp", "LSTMRegressor", "UnrolledLSTM", "SelfAttention", "SafeSqrtNet",
                          "PartlyUsed", "DeadReLU"})


def __getattr__(name: str) -> Any:
    """The torch-side names (``mlp``, ``LSTMRegressor``, ...), imported on first use."""
    if name in _MODEL_NAMES:
        return getattr(_models(), name)
    raise AttributeError(f"module 'graphscope.demos' has no attribute {name!r}")


DEMOS: dict[str, Demo] = {
    d.name: d
    for d in [
        Demo(
            "sigmoid_mlp",
            "a 20-layer MLP with sigmoid activations",
            "Open the gradient-flow view: the norm falls by orders of magnitude toward the "
            "input, because every sigmoid multiplies the gradient by at most 0.25.",
            "_sigmoid_mlp",
        ),
        Demo(
            "relu_mlp",
            "the same 20-layer MLP with ReLU activations and Kaiming init",
            "Compare with sigmoid_mlp: the gradient norm stays within a small band per layer.",
            "_relu_mlp",
        ),
        Demo(
            "linear_regression",
            "linear regression as a one-layer network with no activation",
            "The whole graph is addmm -> mse_loss; weight and bias get their gradient from one op.",
            "_linear_regression",
        ),
        Demo(
            "exploding",
            "a 20-layer linear stack initialised with std 0.5",
            "Each layer multiplies the gradient by about 0.5 * sqrt(32) = 2.8, so it explodes "
            "toward the input.",
            "_exploding",
        ),
        Demo(
            "lstm",
            "a 2-layer LSTM written out step by step over 6 steps, so its gates show",
            "Each step is three sigmoid gates, two tanh and the cell-state sum c = f*c + i*g: "
            "follow c back through the steps. nn.LSTM fuses all of this into one node per "
            "layer, so its graph shows none of it.",
            "_lstm",
        ),
        Demo(
            "attention",
            "single-head self-attention with softmax, residual and LayerNorm",
            "q, k and v all read the same input x (the leaf under add): one node with four "
            "consumers, the residual add included; its gradient is the sum of the four.",
            "_attention",
        ),
        Demo(
            "cnn",
            "a small CNN: two conv-relu-pool blocks and a linear classifier",
            "Shapes on the edges show how pooling halves the feature maps.",
            "_cnn",
        ),
        Demo(
            "nan_hunt",
            "torch.where guarding sqrt: the NaN gradient trap",
            "The findings name sqrt as the origin: where() blocks NaN in forward, not backward.",
            "_nan_hunt",
        ),
        Demo(
            "unused_layer",
            "a model with an unused head, a detached branch and a frozen layer",
            "aux_head and branch are reported as never getting a gradient; frozen is info.",
            "_unused_layer",
        ),
        Demo(
            "dead_relu",
            "a hidden layer whose bias of -100 keeps every ReLU off",
            "The relu node receives gradient but sends back only zeros: dead units.",
            "_dead_relu",
        ),
        Demo(
            "tour-01",
            "requires_grad and grad_fn: s = a * c (examples/tour/01_requires_grad.py)",
            "Only a, which requires grad, is a leaf in the graph; the constant c is not drawn. "
            "s remembers the op that made it (its grad_fn, mul), and a's gradient is c = 4.",
            "tour:requires_grad",
        ),
        Demo(
            "tour-02",
            "backward() needs one number: loss = (x ** 2).sum() (examples/tour/02_grad_and_backward.py)",
            "x's box shows its data [1, 2, 3] and its gradient [2, 4, 6]: d(loss)/dx = 2x. "
            "y = x ** 2 is three numbers; sum makes the one number backward() starts from.",
            "tour:scalar_backward",
        ),
        Demo(
            "tour-03",
            "the chain rule on y = w * x + b (examples/tour/03_chain_rule.py)",
            "Each box shows its value and its gradient: add sends 1 to b and to mul unchanged; "
            "mul multiplies it by the other factor, so w gets x = 2 and x gets w = -3. Check it "
            "by hand: dy/dw = x, dy/dx = w, dy/db = 1.",
            "tour:chain_rule",
        ),
        Demo(
            "tour-04",
            "activations and their derivatives: four sigmoids on z = [-2, 0, 2] "
            "(examples/tour/04_activations.py)",
            "sigmoid'(z) is at most 0.25, so each sigmoid box's grad line is a quarter or less of "
            "the one above it: after four, z's gradient is about 0.25**4 = 0.004 of what reached "
            "the top (vanishing). tanh' is at most 1, relu' is 0 or 1.",
            "tour:activations",
        ),
        Demo(
            "tour-05",
            "linear regression as a one-layer network (examples/tour/05_linear_regression.py)",
            "weight and bias each get their gradient from one op, addmm: a linear layer is "
            "x @ weight.T + bias, and mse_loss's gradient flows straight back to both.",
            "tour:linear_regression",
        ),
        Demo(
            "tour-06",
            "the training loop without zero_grad() (examples/tour/06_training_loop.py)",
            "Three steps ran without optimizer.zero_grad(): the findings say .grad holds the "
            "earlier steps' gradients too, summed. Call optimizer.zero_grad() before each "
            "backward().",
            "tour:training_loop",
        ),
        Demo(
            "tour-07",
            "train() and eval(): dropout in train mode (examples/tour/07_train_eval_no_grad.py)",
            "In train mode dropout is the mul between relu and the last layer (by its mask, "
            "0 or 2), so its gradient is zero where a unit was dropped; after eval() it is not in "
            "the graph, and under "
            "torch.no_grad() there is no graph at all.",
            "tour:train_eval",
        ),
        Demo(
            "tour-08",
            "a multi-layer perceptron: Linear, ReLU, Linear, ReLU, Linear (examples/tour/08_mlp.py)",
            "Each layer's weight gets its gradient through every layer above it; a relu passes "
            "gradient only where its input was positive (the zeros in its box).",
            "tour:mlp",
        ),
        Demo(
            "tour-09",
            "an LSTM from nn.LSTMCell over 3 steps, its gates visible (examples/tour/09_lstm.py)",
            "Per step three sigmoid gates (input, forget, output), two tanh and the cell-state "
            "sum c = f*c + i*g: follow the add back through the steps; gradient reaches early "
            "steps through c as well as through the gates.",
            "tour:lstm_cell",
        ),
        Demo(
            "tour-10",
            "attention with softmax on 3 tokens (examples/tour/10_attention.py)",
            "x feeds q, k and v: one node with three consumers, and its gradient is the sum of "
            "theirs; the softmax box shows its 3x3 weights (each row sums to 1) and their gradient.",
            "tour:attention",
        ),
    ]
}
