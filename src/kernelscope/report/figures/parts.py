"""Figures of part detectors: part vs. control drops per channel, and the detectors' maps.

Left: every active channel of the layer as a point (control drop, part drop); the
diagonal is "no selectivity" and the dashed line the detector margin; detectors are
filled. Right: for the top channels, a few faces with the part outlined, the
channel's map on the intact face and with the part occluded, on one symmetric
diverging scale per channel (intact and occluded are directly comparable).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from kernelscope.report.figures.common import (
    imshow_signed,
    imshow_unsigned,
    new_figure,
    symmetric_limit,
)

__all__ = ["parts_figure", "contrast_figure"]

_PART_COLOURS = {"eyes": "tab:orange", "left_eye": "tab:orange", "right_eye": "tab:orange",
                 "nose": "tab:green", "mouth": "tab:purple"}


def _display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) grey or (H, W, 3) RGB."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 3:
        image = image[0] if image.shape[0] == 1 else np.moveaxis(image[:3], 0, -1)
    return np.clip(image, 0, 1)


def parts_figure(result: Any, display: np.ndarray, masks: Mapping[str, np.ndarray],
                 panels: Sequence[Mapping[str, Any]], *, title: str = ""):
    """Draw the part-selectivity figure.

    Parameters
    ----------
    result : kernelscope.analysis.parts.PartSelectivity
    display : ndarray of shape (N, C, H, W)
        The images in [0, 1] at the model's input size (for display).
    masks : dict of str to ndarray of shape (N, H, W), bool
    panels : list of dict
        From :func:`kernelscope.analysis.parts.detector_panels`.
    title : str

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> from kernelscope.analysis.parts import PartSelectivity
    >>> rng = np.random.default_rng(0)
    >>> a = rng.random((5, 3)) + 1
    >>> r = PartSelectivity("conv", ["eyes"], a, {"eyes": a * 0.5}, {"eyes": a[:, None].repeat(2, 1)},
    ...                     settings={"n_boot": 50})
    >>> m = {"eyes": np.zeros((5, 8, 8), bool)}
    >>> panels = [{"part": "eyes", "channel": 0, "detector": True, "selectivity": 0.5, "part_drop": 0.5,
    ...            "control_drop": 0.0, "faces": np.arange(2), "intact": rng.random((2, 4, 4)),
    ...            "occluded": rng.random((2, 4, 4))}]
    >>> fig = parts_figure(r, rng.random((5, 1, 8, 8)), m, panels)
    >>> len(fig.axes) > 3
    True
    """
    n_faces = max((len(p["faces"]) for p in panels), default=0)
    rows = max(len(panels), 1)
    fig = new_figure(figsize=(4.2 + 3 * 1.25 * max(n_faces, 1), max(3.6, 1.3 * rows + 0.8)))
    outer = fig.add_gridspec(1, 2, width_ratios=[1.3, 3 * max(n_faces, 1) * 0.42])
    ax = fig.add_subplot(outer[0, 0])
    margin = float(result.settings.get("margin", 0.15))
    low, high = -0.25, 1.0  # drops are at most 1 (maxima clamped at 0); an occlusion that raises a maximum
    # by more than 25% gives a drop below the range: drawn at the edge
    clipped = 0
    for part in result.parts:
        st = result.stats[part]
        active = st["active"]
        x, y = st["control_drop"][active], st["part_drop"][active]
        outside = (x < low) | (x > high) | (y < low) | (y > high)
        clipped += int(outside.sum())
        x, y = np.clip(x, low, high), np.clip(y, low, high)
        det = st["detector"][active]
        colour = _PART_COLOURS.get(part, "tab:blue")
        ax.scatter(x[~det], y[~det], s=14, facecolors="none", edgecolors=colour, linewidths=0.8,
                   label=f"{part} ({int(det.sum())} detector{'s' if det.sum() != 1 else ''})")
        ax.scatter(x[det], y[det], s=18, color=colour)
    span = np.array([low - 0.03, high + 0.03])
    ax.plot(span, span, color="0.5", linewidth=0.8)
    ax.plot(span, span + margin, color="0.5", linewidth=0.8, linestyle="--")
    ax.set_xlim(span)
    ax.set_ylim(span)
    ax.set_aspect("equal")
    ax.set_xlabel("drop with control occlusions")
    ax.set_ylabel("drop with the part occluded")
    read = f" (at {result.at})" if getattr(result, "at", None) else ""
    ax.set_title(f"layer {result.layer}{read}\n{result.channels} channels, {result.n_images} images", fontsize=8)
    if clipped:
        ax.text(0.98, 0.02, f"{clipped} point(s) outside\n[{low}, {high}] drawn at the edge", fontsize=6,
                ha="right", va="bottom", transform=ax.transAxes)
    ax.legend(fontsize=7, loc="upper left")

    if panels:
        grid = outer[0, 1].subgridspec(rows, 3 * n_faces, wspace=0.05, hspace=0.35)
        for r, panel in enumerate(panels):
            limit = symmetric_limit([panel["intact"], panel["occluded"]])
            mask = np.asarray(masks[panel["part"]])
            kind = "detector" if panel["detector"] else "best, not a detector"
            for j, face in enumerate(panel["faces"]):
                a_img = fig.add_subplot(grid[r, 3 * j])
                imshow_unsigned(a_img, _display(display[face]), vmin=0, vmax=1)
                a_img.contour(mask[face].astype(float), levels=[0.5],
                              colors=[_PART_COLOURS.get(panel["part"], "yellow")], linewidths=0.8)
                a_int = fig.add_subplot(grid[r, 3 * j + 1])
                imshow_signed(a_int, panel["intact"][j], limit=limit)
                a_occ = fig.add_subplot(grid[r, 3 * j + 2])
                imshow_signed(a_occ, panel["occluded"][j], limit=limit)
                if r == 0:
                    a_img.set_title(f"face {int(face)}", fontsize=7)
                    a_int.set_title("intact", fontsize=7)
                    a_occ.set_title("occluded", fontsize=7)
                if j == 0:
                    a_img.set_ylabel(f"{panel['part']} ch {panel['channel']}\n{kind}\n"
                                     f"{panel['part_drop']:.0%} vs {panel['control_drop']:.0%}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def contrast_figure(contrast: Mapping[str, Any]):
    """Bar chart of :func:`kernelscope.analysis.part_contrast.part_contrast`: best channel's part vs. control drop.

    One pair of bars per network (ONet, easy task, eyes task, random init), with
    the selectivity's bootstrap interval, and the face probability intact vs. part
    occluded written under each pair.

    Examples
    --------
    >>> c = {"part": "eyes", "models": {"easy": {"part_drop": 0.1, "control_drop": 0.05, "ci": [0.0, 0.1],
    ...      "selectivity": 0.05, "layer": "3", "channel": 2, "detector": False,
    ...      "output": {"intact": 0.9, "occluded": 0.89, "control": 0.9}}}}
    >>> len(contrast_figure(c).axes)
    1
    """
    models = contrast["models"]
    names = list(models)
    fig = new_figure(figsize=(1.6 + 1.5 * len(names), 3.4))
    ax = fig.add_subplot()
    x = np.arange(len(names), dtype=float)
    part = contrast.get("part", "part")
    part_drop = [models[n].get("part_drop", np.nan) or np.nan for n in names]
    control_drop = [models[n].get("control_drop", np.nan) or np.nan for n in names]
    ax.bar(x - 0.18, part_drop, width=0.36, color=_PART_COLOURS.get(part, "tab:orange"),
           label=f"{part} occluded")
    ax.bar(x + 0.18, control_drop, width=0.36, color="0.6", label="equal-area controls")
    for i, name in enumerate(names):
        info = models[name]
        if info.get("ci") and info.get("part_drop") is not None:
            lo, hi = info["ci"]
            centre = info["control_drop"]
            ax.plot([x[i] - 0.18] * 2, [centre + lo, centre + hi], color="k", linewidth=1)
    labels = []
    for name in names:
        info = models[name]
        out = info.get("output") or {}
        where = f"{info.get('layer')}:{info.get('channel')}" if info.get("channel") is not None else "-"
        prob = f"\np {out['intact']:.2f}->{out['occluded']:.2f}" if out else ""
        labels.append(f"{name}\n{where}{' *' if info.get('detector') else ''}{prob}")
    ax.set_xticks(x, labels, fontsize=7)
    ax.axhline(0, color="k", linewidth=0.6)
    ax.set_ylabel("drop of the channel's spatial max")
    ax.set_title(f"best {part} channel per network (* = detector; bar: 95% CI of the difference)", fontsize=8)
    ax.legend(fontsize=7)
    return fig
