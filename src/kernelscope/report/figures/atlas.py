"""Figures of the kernel atlas (each takes an ``AtlasResult`` or ``Evolution`` and returns a Figure).

* :func:`match_grid_figure` — every kernel beside its best classical match, with the
  class, the family and the score; kernels and matches are drawn on their own
  symmetric limits (shapes are compared, not amplitudes); RGB kernels in colour.
* :func:`null_distributions_figure` — per score, the distribution of each null and
  the learned kernels' scores, with the threshold drawn: a class means "beyond this line".
* :func:`colour_census_figure` — RGB layers: every kernel drawn in colour, one row per
  colour class (luminance, colour-opponent, colour-blob, mixed/unexplained), beside the
  fraction of the layer and of each colour control in each class.
* :func:`atlas_figures` — all of them for one result, by file stem (for the report and the CLI).
* :func:`evolution_figure` — over the recorded epochs: class fractions, median match
  and Gabor R^2 (epoch 0 is the init control), and each kernel's distance from its
  initial value with the epoch it settles.

Save with :func:`kernelscope.report.figures.common.save_figure` (atomic).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kernelscope.analysis.atlas.measure import nanmedian
from kernelscope.report.figures.common import imshow_signed, new_figure, symmetric_limit
from kernelscope.report.figures.kernels import rgb_kernel_image

if TYPE_CHECKING:
    from kernelscope.analysis.atlas import AtlasResult, Evolution

__all__ = ["atlas_figures", "match_grid_figure", "null_distributions_figure", "evolution_figure", "CLASS_COLOURS",
           "colour_census_figure", "COLOUR_CLASS_COLOURS"]

CLASS_COLOURS = {"edge-like": "tab:blue", "gabor-like": "tab:red", "centre-surround": "tab:green",
                 "blob/low-pass": "tab:orange", "unexplained": "0.5", "degenerate": "black"}
COLOUR_CLASS_COLOURS = {"luminance": "0.3", "colour-opponent": "tab:red", "colour-blob": "tab:orange",
                        "mixed/unexplained": "0.65"}
_SHORT = {"edge-like": "edge", "gabor-like": "gabor", "centre-surround": "c-s", "blob/low-pass": "blob",
          "unexplained": "unexpl.", "degenerate": "dead"}


def match_grid_figure(result: AtlasResult, *, max_kernels: int = 64, pairs_per_row: int = 8):
    """Each kernel (left) beside its best classical match (right), titled with class and score.

    Parameters
    ----------
    result : AtlasResult
    max_kernels : int
        Draw at most this many kernels (the first ones).
    pairs_per_row : int

    Returns
    -------
    matplotlib Figure
    """
    n = min(len(result.records), max_kernels)
    cols = max(1, min(pairs_per_row, n))
    rows = int(np.ceil(n / cols))
    fig = new_figure(figsize=(2.0 * cols, 1.25 * rows + 0.6))
    grid = fig.add_gridspec(rows, 2 * cols, wspace=0.05, hspace=0.35)
    colour = result.kernels.shape[1] == 3
    for i in range(n):
        r, c = divmod(i, cols)
        record = result.records[i]
        ax_k = fig.add_subplot(grid[r, 2 * c])
        ax_m = fig.add_subplot(grid[r, 2 * c + 1])
        if colour:
            kernel = result.kernels[i]
            ax_k.imshow(rgb_kernel_image(kernel, symmetric_limit([kernel])), interpolation="nearest")
            ax_k.set_xticks([])
            ax_k.set_yticks([])
        else:
            imshow_signed(ax_k, result.profiles[i])
        imshow_signed(ax_m, result.best_templates[i])
        cls = record["class"]
        best = record["best_match"]
        ax_k.set_title(f"#{i} {_SHORT[cls]}", fontsize=7, color=CLASS_COLOURS[cls], loc="left")
        ax_m.set_title(f"{best['family'][:5]} {best['score']:.2f}", fontsize=7, loc="right")
        for ax in (ax_k, ax_m):
            for spine in ax.spines.values():
                spine.set_edgecolor(CLASS_COLOURS[cls])
    title = "kernels (left) and their best classical match (right)"
    if result.layer:
        title += f": layer {result.layer}"
    if result.epoch is not None:
        title += f", epoch {result.epoch}"
    if n < len(result.records):
        title += f" (first {n} of {len(result.records)})"
    fig.suptitle(title, fontsize=9)
    return fig


def null_distributions_figure(result: AtlasResult, *, bins: int = 30):
    """Per score: each null's distribution, the kernels' scores and the class threshold.

    Returns
    -------
    matplotlib Figure
    """
    scores = [s for s in ("edge", "gabor", "centre-surround", "blob") if s in result.thresholds]
    fig = new_figure(figsize=(3.2 * len(scores), 2.8))
    axes = fig.subplots(1, len(scores), squeeze=False)[0]
    null_styles = {"random": "0.35", "smooth": "tab:purple", "shuffled": "tab:brown", "spectral": "tab:cyan",
                   "init": "tab:olive"}
    for ax, score in zip(axes, scores, strict=True):
        learned = np.asarray(result.scores.get(score, []), dtype=float)
        values = [learned[np.isfinite(learned)]] + [
            np.asarray(v[score], dtype=float) for v in result.null_scores.values() if score in v]
        finite = np.concatenate([v[np.isfinite(v)] for v in values if v.size]) if values else np.zeros(1)
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        edges = np.linspace(min(low, 0.0), max(high, 1.0) if score != "gabor" else max(high, 1.0), bins + 1)
        for name, null in result.null_scores.items():
            if score not in null:
                continue
            v = np.asarray(null[score], dtype=float)
            v = v[np.isfinite(v)]
            if v.size:
                ax.hist(v, bins=edges, density=True, histtype="step", color=null_styles.get(name, "0.5"),
                        label=f"{name} (n={v.size})")
        if learned[np.isfinite(learned)].size:
            ax.hist(learned[np.isfinite(learned)], bins=edges, density=True, alpha=0.45, color="tab:red",
                    label=f"kernels (n={int(np.isfinite(learned).sum())})")
        t = result.thresholds[score]
        if np.isfinite(t):
            ax.axvline(t, color="black", linestyle="--", linewidth=1)
            ax.text(t, ax.get_ylim()[1] * 0.95, f" p{result.percentile:g} = {t:.2f}", fontsize=7, va="top")
        ax.set_title("Gabor fit R$^2$" if score == "gabor" else f"{score} match |cos|", fontsize=9)
        ax.set_xlabel("score", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("density", fontsize=8)
    axes[-1].legend(fontsize=6, loc="upper left")
    fig.suptitle(f"scores against the nulls (thresholds from {', '.join(result.threshold_nulls)})", fontsize=9)
    return fig


def evolution_figure(evolution: Evolution):
    """Class fractions, median scores and per-kernel drift over the recorded epochs.

    Returns
    -------
    matplotlib Figure
    """
    epochs = np.asarray(evolution.epochs)
    fig = new_figure(figsize=(11, 3.0))
    ax_frac, ax_score, ax_drift = fig.subplots(1, 3)
    for cls, values in evolution.fractions.items():
        if np.any(np.asarray(values) > 0):
            ax_frac.plot(epochs, values, marker="o", markersize=3, color=CLASS_COLOURS[cls], label=cls)
    ax_frac.set_ylim(-0.02, 1.02)
    ax_frac.set_title(f"class fractions ({evolution.unit} 0 = init)", fontsize=9)
    ax_frac.legend(fontsize=6)
    ax_score.plot(epochs, evolution.median_match, marker="o", markersize=3, label="median best match |cos|")
    if np.any(np.isfinite(evolution.median_gabor_r2)):
        ax_score.plot(epochs, evolution.median_gabor_r2, marker="s", markersize=3, label="median Gabor R$^2$")
    ax_score.axhline(evolution.median_match[0], color="0.6", linestyle=":", linewidth=1)
    ax_score.set_ylim(0, 1.02)
    ax_score.set_title("median scores (dotted: init)", fontsize=9)
    ax_score.legend(fontsize=6)
    for k in range(evolution.distance.shape[1]):
        ax_drift.plot(epochs, evolution.distance[:, k], color="0.6", linewidth=0.7)
    ax_drift.plot(epochs, nanmedian(evolution.distance, axis=1), color="black", linewidth=2, label="median")
    settle = evolution.settle_epoch
    final = evolution.distance[-1]
    ax_drift.scatter(settle, [evolution.distance[list(epochs).index(s), k] for k, s in enumerate(settle)],
                     s=10, color="tab:red", zorder=3, label="settles")
    ax_drift.set_title("distance from init / initial norm", fontsize=9)
    ax_drift.legend(fontsize=6)
    if np.all(np.isfinite(final)):
        ax_drift.set_ylim(0, max(1e-6, float(np.nanmax(evolution.distance)) * 1.05))
    for ax in (ax_frac, ax_score, ax_drift):
        ax.set_xlabel(evolution.unit, fontsize=8)
        ax.tick_params(labelsize=7)
    return fig


def colour_census_figure(result: AtlasResult, *, per_row: int = 16):
    """RGB kernels grouped by colour class (one row each), beside the class fractions of the layer and controls.

    Parameters
    ----------
    result : AtlasResult
        Of an RGB layer (``result.colour`` set).
    per_row : int
        Kernels drawn per class (the first ones; the row title gives the count).

    Returns
    -------
    matplotlib Figure
    """
    from kernelscope.analysis.atlas.colour import COLOUR_CLASSES

    census = result.colour
    if census is None:
        from kernelscope.errors import KernelscopeError

        raise KernelscopeError(f"the colour census needs an RGB layer (C = 3); this one has shape {result.shape}")
    per_row = max(1, int(per_row))
    fig = new_figure(figsize=(0.55 * per_row + 5.0, 0.75 * len(COLOUR_CLASSES) + 1.0))
    grid = fig.add_gridspec(len(COLOUR_CLASSES), per_row + 7, wspace=0.08, hspace=0.55)
    for row, cls in enumerate(COLOUR_CLASSES):
        members = [i for i, c in enumerate(census.classes) if c == cls]
        for col, i in enumerate(members[:per_row]):
            ax = fig.add_subplot(grid[row, col])
            kernel = result.kernels[i]
            ax.imshow(rgb_kernel_image(kernel, max(symmetric_limit([kernel]), 1e-12)), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"#{i}", fontsize=6)
            for spine in ax.spines.values():
                spine.set_edgecolor(COLOUR_CLASS_COLOURS[cls])
            if col == 0:
                ax.set_ylabel(cls, fontsize=7, rotation=0, ha="right", va="center", color=COLOUR_CLASS_COLOURS[cls])
        shown = min(len(members), per_row)
        label = fig.add_subplot(grid[row, shown:per_row]) if shown < per_row else None
        if label is not None:
            label.axis("off")
            if not members:
                label.text(0.0, 0.5, f"{cls}: none", fontsize=7, va="center", color=COLOUR_CLASS_COLOURS[cls])
    bars = fig.add_subplot(grid[:, per_row + 2:])
    groups = ["layer", *census.control_fractions]
    values = {"layer": census.fractions, **census.control_fractions}
    width = 0.8 / len(COLOUR_CLASSES)
    y = np.arange(len(groups))
    for k, cls in enumerate(COLOUR_CLASSES):
        bars.barh(y + (k - (len(COLOUR_CLASSES) - 1) / 2) * width, [values[g][cls] for g in groups], height=width,
                  color=COLOUR_CLASS_COLOURS[cls], label=cls)
    bars.set_yticks(y, [g if g == "layer" else f"{g} (n={census.control_sizes[g]})" for g in groups], fontsize=7)
    bars.invert_yaxis()
    bars.set_xlim(0, 1)
    bars.set_xlabel("fraction in each colour class", fontsize=8)
    bars.tick_params(labelsize=7)
    bars.legend(fontsize=6, loc="lower right")
    thr = ", ".join(f"{c} {t:.2f}" for c, t in census.thresholds.items() if np.isfinite(t))
    bars.set_title(f"thresholds (p{census.percentile:g}): {thr}", fontsize=7)
    title = f"colour census of {len(census.classes)} RGB kernels"
    if result.layer:
        title += f": layer {result.layer}"
    if result.epoch is not None:
        title += f", epoch {result.epoch}"
    fig.suptitle(title, fontsize=9)
    return fig


def atlas_figures(result: AtlasResult) -> dict:
    """Every atlas figure of ``result``: ``{"atlas_matches": Figure, "atlas_nulls": Figure,
    "atlas_colour": Figure, "atlas_evolution": Figure}`` (colour only for an RGB layer,
    evolution only when the result has one)."""
    figures = {"atlas_matches": match_grid_figure(result), "atlas_nulls": null_distributions_figure(result)}
    if getattr(result, "colour", None) is not None:
        figures["atlas_colour"] = colour_census_figure(result)
    if result.evolution is not None:
        figures["atlas_evolution"] = evolution_figure(result.evolution)
    return figures
