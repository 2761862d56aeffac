"""A recorded run as a picture: loss and gradient norm over steps, a layers x steps heatmap of
gradient RMS, and the findings over time marked where they started.

``draw_timeline(run, "timeline.svg")`` (SVG, PNG or PDF by suffix) with matplotlib, headless
(the Agg canvas; nothing opens a window). The heatmap's colours are the product's: RMS on a
log scale between the run's vanishing and exploding limits (``graphscope.health``, each
step's loss scale divided out), the healthy range shaded as in the graph pictures and the
inspector, values past the limits in the vanishing and exploding band colours, non-finite
ones in the non-finite colour, and no gradient left blank. Decimated stretches of old steps are drawn at their maxima
where a layer's gradient grew and at their minima where it faded, so no extreme is averaged away.

Imports the run store, health, formatting and trends, and matplotlib (lazily, when drawing);
never torch or textual.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from graphscope.formatting import BAND_COLOURS, _HEALTHY_STOPS
from graphscope.health import Band, Health, Thresholds
from graphscope.model import Severity
from graphscope.runs import Run
from graphscope.trends import RunFinding, analyze, run_thresholds

FORMATS = ("svg", "png", "pdf")
_SEVERITY_COLOURS = {Severity.INFO: "#5c6bc0", Severity.WARNING: "#ffa000", Severity.ERROR: "#d32f2f"}
_MAX_LAYERS = 60  # rows of the heatmap; more layers are merged into groups of neighbours
_LISTED = 10  # findings written under the picture


def draw_timeline(
    run: Run,
    out: str | Path,
    *,
    rank: int = 0,
    thresholds: Thresholds | None = None,
    findings: list[RunFinding] | None = None,
) -> Path:
    """Draw ``run`` to ``out`` (``.svg``, ``.png`` or ``.pdf``).

    Args:
        run: An open run store.
        out: The picture's path; its suffix picks the format.
        rank: Which process's steps to draw.
        thresholds: Colour with these limits instead of the run's own.
        findings: The findings to mark; ``trends.analyze(run)`` when ``None``.

    Returns:
        The path written.

    Raises:
        ValueError: An unknown suffix, or a run without steps.
    """
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ValueError(f"cannot draw a timeline as {out.suffix or 'a file without suffix'!r}: "
                         f"use .svg, .png or .pdf")
    steps = run.steps(rank)
    if not len(steps):
        raise ValueError(f"the run {run.path} has no steps recorded yet")
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import colors
    from matplotlib.figure import Figure

    if findings is None:
        findings = analyze(run, rank=rank, thresholds=thresholds)
    # Coloured as the loss scale of each row's step leaves them: with a GradScaler the RMS is
    # divided by that step's scale and judged against the unscaled limits (the same band as
    # Health(scale=s) gives the scaled value), so a scale that changes mid-run changes no colour.
    health = Health(thresholds=thresholds or run_thresholds(run))
    layers = run.layer_series(rank)
    names, grid, present = heat_grid(layers, steps)

    listed = sum(1 for _ in findings)
    caption = 0.14 * (min(listed, _LISTED) + (listed > _LISTED)) + (0.1 if listed else 0)
    height = 4.2 + 0.16 * len(names) + caption
    fig = Figure(figsize=(11, height), layout="constrained")
    gs = fig.add_gridspec(4, 2, height_ratios=[1.4, 1.4, max(1.5, 0.16 * len(names)), max(caption, 0.01)],
                          width_ratios=[40, 1])
    ax_loss = fig.add_subplot(gs[0, 0])
    ax_norm = fig.add_subplot(gs[1, 0], sharex=ax_loss)
    ax_heat = fig.add_subplot(gs[2, 0], sharex=ax_loss)
    ax_bar = fig.add_subplot(gs[2, 1])

    x = steps.step
    _curve(ax_loss, x, steps.loss, "loss", "#1e88e5")
    _curve(ax_norm, x, steps.grad_norm, "gradient norm (all parameters)", "#8e24aa")
    bad = x[steps.loss_nonfinite | ~np.isfinite(steps.grad_norm)]
    for ax in (ax_loss, ax_norm):
        if bad.size:
            ax.axvspan(bad[0] - 0.5, x[-1] + 0.5, color=BAND_COLOURS[Band.NONFINITE], alpha=0.12,
                       lw=0, label=f"non-finite from step {bad[0]}")

    lo, hi = health.vanishing_rms, health.exploding_rms
    cmap = colors.LinearSegmentedColormap.from_list(
        "graphscope_healthy", list(_HEALTHY_STOPS)).with_extremes(
        under=BAND_COLOURS[Band.VANISHING], over=BAND_COLOURS[Band.EXPLODING], bad="#ffffff")
    finite = np.where(np.isfinite(grid), grid, np.nan)
    with np.errstate(divide="ignore"):
        shown = np.where(finite > 0, finite, lo / 10)  # an all-zero gradient is "vanishing"
    shown = np.where(np.isfinite(grid), shown, np.nan)
    edges = np.concatenate([layers.lo - 0.5, [layers.hi[-1] + 0.5]]) if len(layers) else np.array([0.5, 1.5])
    mesh = ax_heat.pcolormesh(edges, np.arange(len(names) + 1), np.ma.masked_invalid(shown.T),
                              cmap=cmap, norm=colors.LogNorm(vmin=lo, vmax=hi), shading="flat")
    nonfinite = present & ~np.isfinite(grid)
    if nonfinite.any():
        ax_heat.pcolormesh(edges, np.arange(len(names) + 1), np.ma.masked_where(~nonfinite.T, nonfinite.T),
                           cmap=colors.ListedColormap([BAND_COLOURS[Band.NONFINITE]]), shading="flat")
    ax_heat.set_yticks(np.arange(len(names)) + 0.5, labels=names, fontsize=7)
    ax_heat.invert_yaxis()  # the input-side layers on top, as the model reads
    ax_heat.set_xlabel("step")
    ax_heat.set_title("gradient RMS per layer", fontsize=9, loc="left")
    bar = fig.colorbar(mesh, cax=ax_bar, extend="both")
    bar.set_label("gradient RMS", fontsize=7)
    bar.ax.tick_params(labelsize=7)

    at: dict[int, list[RunFinding]] = {}
    for f in findings:
        at.setdefault(f.step, []).append(f)
    listed: list[str] = []
    for n, (step, here) in enumerate(sorted(at.items()), 1):
        c = _SEVERITY_COLOURS.get(max(f.severity for f in here), "#5c6bc0")
        for ax in (ax_loss, ax_norm, ax_heat):
            ax.axvline(step, color=c, lw=0.9, ls="--", alpha=0.85)
        ax_loss.text(step, 0.97, f" {n}", transform=ax_loss.get_xaxis_transform(), fontsize=7,
                     color=c, va="top", ha="left", clip_on=True, fontweight="bold")
        for f in here:
            text = f.message if len(f.message) <= 150 else f.message[:147] + "..."
            listed.append(f"{n}  step {f.step}  [{f.severity}] {text}")
    if listed:
        more = len(listed) - _LISTED
        caption = "\n".join(listed[:_LISTED]) + (f"\n... and {more} more (graphscope report RUN)" if more > 0 else "")
        fig.text(0.01, 0.0, caption, fontsize=7, va="bottom", ha="left", family="monospace",
                 wrap=False)
    for c in run.captures(rank):
        ax_norm.plot([c.step], [0.02], marker="v", ms=4, color="#455a64",
                     transform=ax_norm.get_xaxis_transform(), clip_on=False)
    title = f"{run.path.name}: {len(steps)} steps"
    if run.meta.get("model"):
        title += f" of {run.meta['model']}"
    worst = [f for f in findings if f.severity >= Severity.WARNING]
    title += f"; {len(worst)} warning(s) or error(s)" if worst else "; no warnings"
    fig.suptitle(title, fontsize=10)
    ax_norm.legend(handles=[matplotlib.lines.Line2D([], [], marker="v", ls="", color="#455a64",
                                                    label="full capture")]
                   + ([matplotlib.patches.Patch(color=BAND_COLOURS[Band.NONFINITE], alpha=0.3,
                                                label="non-finite")] if bad.size else []),
                   fontsize=7, loc="upper left")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format=fmt, dpi=110)
    return out


def _curve(ax, x: np.ndarray, y: np.ndarray, label: str, colour: str) -> None:
    ok = np.isfinite(y)
    ax.plot(x[ok], y[ok], color=colour, lw=1.2)
    if ok.any() and (y[ok] > 0).all() and y[ok].max() / max(y[ok].min(), 1e-300) > 50:
        ax.set_yscale("log")
    ax.set_ylabel(label, fontsize=8)
    ax.grid(alpha=0.25)
    ax.tick_params(labelsize=7)


def heat_grid(layers, steps) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The heatmap's rows (layer names), values (stored rows x heatmap rows: RMS with the
    row's loss scale divided out) and presence, from a run's ``LayerSeries`` and ``Steps``."""
    names, grid, present = _heat_rows(layers)
    if len(layers) and len(steps):
        at = np.clip(np.searchsorted(steps.step, layers.lo), 0, len(steps) - 1)
        scale = steps.loss_scale[at]
        grid = grid / np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)[:, None]
    return names, grid, present


def _heat_rows(layers) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Heatmap rows (layer names), values and presence (steps x rows): each decimated stretch
    at its extreme away from the layer's typical value, so spikes and fades show."""
    if not len(layers):
        empty = np.full((1, max(len(layers.names), 1)), np.nan)
        return list(layers.names) or ["(none)"], empty, np.zeros(empty.shape, dtype=bool)
    typical = np.nanmedian(np.where(np.isfinite(layers.rms), layers.rms, np.nan), axis=0)
    with np.errstate(invalid="ignore"):
        up = layers.rms_max >= typical
    grid = np.where(layers.n[:, None] > 1, np.where(up, layers.rms_max, layers.rms_min), layers.rms)
    present = layers.present
    names = [n or "(root)" for n in layers.names]
    if len(names) > _MAX_LAYERS:
        k = math.ceil(len(names) / _MAX_LAYERS)
        groups = [slice(i, i + k) for i in range(0, len(names), k)]
        names = [f"{names[g][0]} .. {names[g][-1]}" if len(names[g]) > 1 else names[g][0]
                 for g in groups]
        grid = np.stack([_worst(grid[:, g], present[:, g]) for g in groups], axis=1)
        present = np.stack([present[:, g].any(axis=1) for g in groups], axis=1)
    return names, grid, present


def _worst(block: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per row of a group of layers: NaN when one of them is non-finite (drawn as such, since
    the group is present), else the largest RMS, so one exploding layer is not averaged away."""
    with np.errstate(all="ignore"):
        largest = np.where(np.isfinite(block), block, -np.inf).max(axis=1)
    bad = (present & ~np.isfinite(block)).any(axis=1)
    return np.where(bad | ~np.isfinite(largest), np.nan, largest)
