"""Figures of what channels detect: feature maps, top patches, receptive fields, dissection, shift.

Colour scales are honest (see :mod:`kernelscope.report.figures.common`): signed maps are
diverging around zero with one symmetric limit per layer (shared across channels and
epochs); crops of images share one grey scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.report.figures.common import (
    imshow_signed,
    imshow_unsigned,
    label_tiles,
    mosaic,
    new_figure,
    symmetric_limit,
)

__all__ = ["feature_maps_figure", "feature_epochs_figure", "top_patches_figure", "erf_figure",
           "dissect_figure", "shift_figure"]


def feature_maps_figure(maps: dict[str, np.ndarray], image: np.ndarray | None = None, *, max_channels: int = 64,
                        columns: int = 16, title: str = "Feature maps (one colour scale per layer)"):
    """One image's maps at every layer: one block per layer, one colour scale per layer.

    A layer whose maps go below zero is drawn diverging around zero with one
    symmetric limit; a non-negative one (after a ReLU) from 0 to its maximum. The
    scale covers all the layer's channels, also those beyond ``max_channels``. Each
    layer's channels are tiled into one image (fast for wide layers), ``columns``
    per row, labelled with their index.

    Parameters
    ----------
    maps : dict of str to ndarray of shape (O, H', W')
        The image's feature maps per layer.
    image : ndarray of shape (C, H, W) or (H, W), optional
        The input, values in [0, 1], drawn first.
    max_channels : int
        The first channels drawn per layer.
    columns : int
        Channels per row.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fig = feature_maps_figure({"conv1": rng.normal(size=(4, 6, 6))}, rng.random((1, 8, 8)))
    >>> len(fig.axes)  # the input, the layer's maps, its colour bar
    3
    """
    names = list(maps)
    shown = {name: np.asarray(maps[name], dtype=np.float64)[:max_channels] for name in names}
    cols = max(1, min(columns, max(len(m) for m in shown.values())))
    # inches per layer block: its rows of tiles (0.55 inch wide each, the maps' aspect) and their labels
    heights = [int(np.ceil(len(m) / cols)) * (0.55 * (m.shape[1] + 1) / (m.shape[2] + 1) + 0.15)
               for m in shown.values()]
    extra = [1.6] if image is not None else []
    fig = new_figure(figsize=(0.55 * cols + 2.2, sum(heights) + sum(extra) + 0.6))
    spec = fig.add_gridspec(len(names) + len(extra), 2, width_ratios=[40, 1], height_ratios=extra + heights)
    if image is not None:
        ax = fig.add_subplot(spec[0, 0])
        img = np.asarray(image, dtype=np.float64)
        img = img[0] if img.ndim == 3 and img.shape[0] == 1 else np.moveaxis(img[:3], 0, -1) if img.ndim == 3 else img
        imshow_unsigned(ax, img, vmin=0, vmax=1)
        ax.set_title("input", fontsize=8)
        ax.set_frame_on(False)
    for row, name in enumerate(names):
        all_maps = np.asarray(maps[name], dtype=np.float64)
        layer_maps = shown[name]
        n, h, w = layer_maps.shape
        signed = bool(np.nanmin(all_maps) < 0)
        ax = fig.add_subplot(spec[row + len(extra), 0])
        tiles = mosaic(layer_maps, min(cols, n))
        if signed:
            image_ = imshow_signed(ax, tiles, limit=symmetric_limit([all_maps]))
        else:
            top = float(np.nanmax(all_maps))
            image_ = imshow_unsigned(ax, tiles, vmin=0.0, vmax=top if np.isfinite(top) and top > 0 else 1.0,
                                     cmap="magma")
        label_tiles(ax, n, min(cols, n), h, w)
        ax.set_frame_on(False)
        cax = fig.add_subplot(spec[row + len(extra), 1])
        fig.colorbar(image_, cax=cax)
        more = f", first {n} of {len(all_maps)}" if n < len(all_maps) else ""
        cax.set_title(f"{name}\n{'signed' if signed else '>= 0'}{more}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def feature_epochs_figure(epochs: list[int], maps: np.ndarray, layer: str, *, max_channels: int = 16):
    """Rows: recorded epochs (0 = initialisation); columns: channels; one symmetric scale for all."""
    maps = maps[:, :max_channels]
    n_epochs, n_channels = maps.shape[:2]
    fig = new_figure(figsize=(1.0 + 0.9 * n_channels, 0.8 + 0.9 * n_epochs), layout=None)
    fig.subplots_adjust(left=0.08, right=0.94, bottom=0.02, top=0.9, wspace=0.08, hspace=0.12)
    spec = fig.add_gridspec(n_epochs, n_channels + 1, width_ratios=[1] * n_channels + [0.15])
    signed = bool(np.nanmin(maps) < 0)
    limit = symmetric_limit([maps])
    vmax = float(np.nanmax(maps)) if np.nanmax(maps) > 0 else 1.0
    image = None
    for e in range(n_epochs):
        for c in range(n_channels):
            ax = fig.add_subplot(spec[e, c])
            if signed:
                image = imshow_signed(ax, maps[e, c], limit)
            else:
                image = imshow_unsigned(ax, maps[e, c], vmin=0, vmax=vmax, cmap="magma")
            if c == 0:
                ax.set_ylabel(f"epoch {epochs[e]}", fontsize=7)
            if e == 0:
                ax.set_title(f"ch {c}", fontsize=7)
    if image is not None:
        fig.colorbar(image, cax=fig.add_subplot(spec[:, -1]))
    fig.suptitle(f"{layer}: the probe image's maps across training (shared scale)", fontsize=9)
    return fig


def top_patches_figure(result: Any, *, max_channels: int = 32, raw: bool = True):
    """Rows: channels; columns: the top-k receptive-field crops, most activating first."""
    crops = result.crops[:max_channels]  # (C, k, C_in, rh, rw)
    n_channels, k = crops.shape[:2]
    fig = new_figure(figsize=(1.2 + 0.8 * k, 0.7 + 0.8 * n_channels), layout=None)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.02, top=1 - 0.5 / (0.7 + 0.8 * n_channels),
                        wspace=0.1, hspace=0.3)
    spec = fig.add_gridspec(n_channels, k)
    from matplotlib import colormaps

    grey = colormaps["gray"].with_extremes(bad="#bcd4f0")  # outside the image: light blue, not black
    finite = crops[np.isfinite(crops)]
    vmin, vmax = (0.0, 1.0) if raw else (float(finite.min()), float(finite.max())) if finite.size else (0, 1)
    for c in range(n_channels):
        for j in range(k):
            ax = fig.add_subplot(spec[c, j])
            crop = crops[c, j]
            shown = np.moveaxis(crop, 0, -1) if crop.shape[0] == 3 else crop[0]
            if shown.ndim == 3:
                shown = np.where(np.isfinite(shown), (shown - vmin) / max(vmax - vmin, 1e-12), 1.0)
                imshow_unsigned(ax, shown)
            else:
                imshow_unsigned(ax, np.ma.masked_invalid(shown), vmin=vmin, vmax=vmax, cmap=grey)
            if j == 0:
                ax.set_ylabel(f"ch {c}", fontsize=7)
            ax.set_title(f"{result.values[c, j]:.2g}", fontsize=6, pad=1)
    fig.suptitle(f"{result.layer}: top-{k} patches per channel ({result.field.size[0]}x{result.field.size[1]} "
                 f"receptive field, {result.n_images} images)", fontsize=9)
    return fig


def erf_figure(erf: Any):
    """The effective receptive field with the theoretical field (box) and the fitted 2-sigma ellipse."""
    from matplotlib.patches import Ellipse, Rectangle

    fig = new_figure(figsize=(5, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    image = imshow_unsigned(ax, erf.grad_map, vmin=0.0, vmax=float(erf.grad_map.max()) or 1.0, cmap="magma")
    top, bottom, left, right = erf.theoretical_box
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), right - left + 1, bottom - top + 1, fill=False,
                           edgecolor="cyan", linewidth=1.2, label=f"theoretical {erf.theoretical.size[0]}px"))
    ax.add_patch(Ellipse((erf.centre[1], erf.centre[0]), 4 * erf.sigma[1], 4 * erf.sigma[0], fill=False,
                         edgecolor="white", linestyle="--", linewidth=1.2,
                         label=f"Gaussian 4σ = {erf.effective_size[0]:.1f}px"))
    ax.legend(loc="lower right", fontsize=7)
    fig.colorbar(image, ax=ax, label="mean |d unit / d input|")
    ax.set_title(f"{erf.layer}: effective receptive field of unit {erf.unit}\n"
                 f"effective / theoretical = {erf.ratio[0]:.2f} (y), {erf.ratio[1]:.2f} (x)", fontsize=9)
    return fig


def dissect_figure(result: Any):
    """Per concept: IoU per channel, trained vs initialisation, with the nulls and the 0.04 line."""
    concepts = result.concepts
    fig = new_figure(figsize=(9, 2.6 * len(concepts)))
    for row, concept in enumerate(concepts):
        ax = fig.add_subplot(len(concepts), 1, row + 1)
        trained = result.trained["concepts"][concept]
        channels = np.arange(len(trained["iou"]))
        ax.bar(channels, trained["iou"], color="tab:blue", label="trained IoU")
        ax.plot(channels, trained["null_p95"], "k_", markersize=8, label="permutation null p95")
        ax.plot(channels, trained["chance"], "_", color="tab:orange", markersize=8, label="chance IoU")
        if result.init is not None:
            ax.plot(channels, result.init["concepts"][concept]["iou"], "x", color="tab:red", markersize=4,
                    label="at initialisation")
        ax.axhline(result.iou_threshold, color="grey", linestyle="--", linewidth=0.8,
                   label=f"detector threshold {result.iou_threshold}")
        ax.set_ylabel(f"IoU with {concept}")
        ax.set_xlabel("channel")
        ax.legend(fontsize=6, ncol=3, loc="upper right")
    fig.suptitle(f"Network Dissection of {result.layer} ({result.n_images} images, top "
                 f"{result.top_fraction:.1%} threshold)", fontsize=10)
    return fig


def shift_figure(result: Any, *, show: int = 6):
    """AUROC per channel with bootstrap 95% intervals (and init), then maxima of the clearest channels."""
    fig = new_figure(figsize=(10, 6.5))
    spec = fig.add_gridspec(2, 1, height_ratios=[1, 1.1])
    ax = fig.add_subplot(spec[0])
    ch = result.trained["channels"]
    channels = np.arange(len(ch["auroc"]))
    ax.errorbar(channels, ch["auroc"], yerr=[ch["auroc"] - ch["auroc_low"], ch["auroc_high"] - ch["auroc"]],
                fmt="o", markersize=3, color="tab:blue", label="trained (bootstrap 95% CI)")
    if result.init is not None:
        ax.plot(channels, result.init["channels"]["auroc"], "x", color="tab:red", markersize=4,
                label="at initialisation")
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("channel")
    ax.set_ylabel(f"AUROC ({result.names[0]} vs {result.names[1]})")
    ax.legend(fontsize=7)
    ax.set_title("> 0.5: channel goes quiet on OOD; < 0.5: fires more on OOD", fontsize=8)
    order = np.argsort(ch["auroc"])
    picked = list(order[::-1][: show // 2]) + list(order[: show - show // 2])
    ax2 = fig.add_subplot(spec[1])
    data, labels = [], []
    for c in picked:
        data += [result.maxima["in"][:, c], result.maxima["out"][:, c]]
        labels += [f"{c}\n{result.names[0]}", f"{c}\n{result.names[1]}"]
    boxes = ax2.boxplot(data, patch_artist=True, showfliers=False)
    for i, patch in enumerate(boxes["boxes"]):
        patch.set_facecolor("tab:blue" if i % 2 == 0 else "tab:orange")
    ax2.set_xticks(np.arange(1, len(labels) + 1), labels, fontsize=6)
    ax2.set_ylabel("spatial max of the channel")
    ax2.set_title("most in-selective and most OOD-selective channels", fontsize=8)
    lines = [f"{name}: AUROC {v['auroc']:.2f}, FPR@95TPR {v['fpr_at_95_tpr']:.2f}"
             for name, v in result.trained["network"].items()]
    rows = ["; ".join(lines[i : i + 2]) for i in range(0, len(lines), 2)]
    fig.suptitle("\n".join([f"Distribution shift at {result.layer}"] + rows), fontsize=8)
    return fig
