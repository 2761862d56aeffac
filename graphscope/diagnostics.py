"""Diagnoses a captured graph: pure functions from a ``Graph`` to ``Finding`` records.

Owns the thresholds (one frozen ``Thresholds`` dataclass) and the wording of every finding.
Imports only ``graphscope.model`` and ``graphscope.errors``: no torch, textual or graphviz, so
a saved capture can be re-diagnosed anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    """When a gradient counts as vanishing, exploding or dead.

    Magnitudes are RMS values (norm / sqrt(numel)) so tensors of any size compare fairly.

    Attributes:
        vanishing_rms: A parameter gradient at or below this RMS is vanishing.
        exploding_rms: A parameter gradient at or above this RMS is exploding.
        vanishing_ratio: A parameter whose RMS is below this fraction of the largest parameter
            RMS in the same graph is vanishing relative to the rest (the sigmoid-stack fade).
        exploding_ratio: The largest parameter RMS above this multiple of the smallest, with
            gradients growing toward the input, is an explosion through depth. Uniform scaling
            (e.g. ``GradScaler``) changes no ratio, so it is never called exploding by this rule.
        dead_frac: An op that receives a non-zero gradient but sends back at least this fraction
            of exact zeros has dead units.
        min_layers: The depth rules (ratios) need at least this many parameter gradients.
    """

    vanishing_rms: float = 1e-8
    exploding_rms: float = 1e6
    vanishing_ratio: float = 1e-4
    exploding_ratio: float = 1e4
    dead_frac: float = 1.0
    min_layers: int = 3
