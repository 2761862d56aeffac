"""Human-readable numbers and the gradient-magnitude colour scale, shared by every view.

The DOT exporter and the TUI both take their numbers and colours from here, so the picture and
the terminal always agree. No torch, textual or graphviz imports.

The colour of a gradient is its ``graphscope.health.Band`` (the one judgement the findings use
too), shaded within the healthy band on a log scale of its RMS (its norm divided by
sqrt(numel), so big and small tensors compare fairly):

    vanishing                        blue     at or below the vanishing limit, or (a parameter)
                                              far below the largest parameter gradient
    healthy                          green -> yellow -> orange on log10(rms)
    exploding                        red      at or above the exploding limit, or (a parameter)
                                              part of a growth through depth
    nonfinite                        magenta  NaN or Inf anywhere
    none                             grey     no gradient recorded, or empty

The limits move with a ``GradScaler`` loss scale, so a scaled healthy model stays green.

An empty gradient (zero elements: a branch whose batch selected no rows) carries no magnitude;
nothing flowed, so it is grey, never "vanishing".
"""

from __future__ import annotations

import math

from graphscope.health import Band, Health
from graphscope.model import GradStats, Graph, Node, TensorMeta
# Counts and shapes are written by graphscope.model's rules (its own summary needs them).
from graphscope.model import fmt_count, fmt_shape  # noqa: F401 - re-exported

BAND_COLOURS = {
    Band.VANISHING: "#4f7fd9",
    Band.HEALTHY: "#4caf50",
    Band.EXPLODING: "#e53935",
    Band.NONFINITE: "#d500f9",
    Band.NONE: "#9e9e9e",
}

# The healthy range is shaded between these, on log10(rms).
_HEALTHY_STOPS = ("#26a69a", "#66bb6a", "#d4e157", "#ffb300")


def fmt_num(x: float | int | None) -> str:
    """Format a number compactly: ``0``, ``12``, ``0.0123``, ``1.2e-07``, ``nan``."""
    if x is None:
        return "-"
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}" if abs(x) >= 10_000 else str(x)
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0:
        return "0"
    a = abs(x)
    if a >= 1e4 or a < 1e-3:
        return f"{x:.2e}"
    return f"{x:.4g}"


def fmt_module(path: str | None, graph: Graph) -> str:
    """A module as people know it: ``encoder.layers.3 (TransformerEncoderLayer)``, with the
    class the capture recorded; ``Net (top level)`` for the model itself; ``-`` for none."""
    if path is None:
        return "-"
    cls = (graph.meta.get("module_classes") or {}).get(path)
    if not path:
        return f"{cls} (top level)" if cls else "(top level)"
    return f"{path} ({cls})" if cls else path


def fmt_meta(meta: TensorMeta) -> str:
    """A tensor: ``(3, 4) float32 cpu``; ``nested tensor float32 cpu`` when it has no shape."""
    head = fmt_shape(meta.shape) if meta.shape is not None or not meta.value else meta.value
    return " ".join(x for x in (head, meta.dtype, meta.device) if x)


def fmt_saved(meta: TensorMeta) -> str:
    """What an op saved for backward: ``self (3, 4) float32 cpu``, ``ignore_index = -100``.

    A saved tensor has a shape or a dtype; anything else is a value the op kept (an int, a
    tuple, a string, ``None`` for an absent optional tensor), stored as the text the user wrote.
    """
    name = meta.name or "?"
    if meta.shape is None and meta.dtype is None and meta.value is not None:
        return f"{name} = {meta.value}"
    if meta.shape == () and meta.value is not None:  # a constant: a number autograd wrapped
        return f"{name} = {meta.value} ({meta.dtype})"
    return f"{name} {fmt_meta(meta)}"


def _mix(a: str, b: str, f: float) -> str:
    ca = [int(a[i : i + 2], 16) for i in (1, 3, 5)]
    cb = [int(b[i : i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(x + (y - x) * f):02x}" for x, y in zip(ca, cb))


def magnitude_colour(x: Node | GradStats | None, health: Health) -> str:
    """A hex colour for a node's (or bare statistics') gradient on the scale above."""
    b = health.band(x)
    if b is not Band.HEALTHY:
        return BAND_COLOURS[b]
    stats = x.grad if isinstance(x, Node) else x
    assert stats is not None
    return rms_colour(stats.rms, health)


def rms_colour(rms: float, health: Health) -> str:
    """The healthy band's shade for an RMS value (for legends and plots)."""
    f = health.position(rms) * (len(_HEALTHY_STOPS) - 1)
    i = min(int(f), len(_HEALTHY_STOPS) - 2)
    return _mix(_HEALTHY_STOPS[i], _HEALTHY_STOPS[i + 1], f - i)


def fmt_stats(stats: GradStats | None) -> str:
    """One line: ``norm 0.12  mean 1e-3  std 0.04  zeros 50%`` (or why there is none)."""
    if stats is None:
        return "no gradient"
    if stats.numel == 0:
        return "empty (0 elements): nothing flowed"
    parts = [
        f"norm {fmt_num(stats.norm)}",
        f"mean {fmt_num(stats.mean)}",
        f"std {fmt_num(stats.std)}",
        f"min {fmt_num(stats.min)}",
        f"max {fmt_num(stats.max)}",
        f"zeros {stats.zero_frac:.0%}",
    ]
    if stats.nan_count:
        parts.append(f"NaN x{stats.nan_count}")
    if stats.inf_count:
        parts.append(f"Inf x{stats.inf_count}")
    return "  ".join(parts)
