"""Figures and the report section of feature visualisation (:mod:`kernelscope.analysis.visualize`).

Each channel is one row: its rendered image, the same optimisation on the network at
initialisation, then its top patches with their guided-backpropagation and deconvnet
projections. Rendered images and patches are drawn as images in [0, 1]; projections are
signed gradients, diverging around zero with one symmetric limit per crop. A channel that
does not beat its init control is labelled so in red and is not a finding.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.report import html as H
from kernelscope.report.figures.common import imshow_signed, imshow_unsigned, new_figure

__all__ = ["visualization_figure", "evolution_figure", "visualization_section"]


def _show_image(ax, image: np.ndarray) -> None:
    image = np.asarray(image, dtype=np.float64)
    if image.shape[0] == 3:
        imshow_unsigned(ax, np.where(np.isfinite(image), image, 1.0).transpose(1, 2, 0))
    else:
        imshow_unsigned(ax, np.ma.masked_invalid(image[0]), vmin=0.0, vmax=1.0)


def _show_gradient(ax, grad: np.ndarray) -> None:
    grad = np.nan_to_num(np.asarray(grad, dtype=np.float64))
    limit = float(np.abs(grad).max()) or 1.0
    if grad.shape[0] == 3:
        imshow_unsigned(ax, (0.5 + grad / (2 * limit)).transpose(1, 2, 0))
    else:
        imshow_signed(ax, grad[0], limit)


def visualization_figure(result: Any, projections: dict[str, Any] | None = None, *, max_channels: int = 16,
                         k_show: int = 3):
    """Rows: channels; columns: render, init render, then per top patch: patch, guided, deconvnet.

    Parameters
    ----------
    result : Visualization
    projections : dict of method name to Projections, optional
        Rows in the order of ``result.channels`` (unique channels).
    """
    channels = list(dict.fromkeys(result.channels))[:max_channels]
    projections = projections or {}
    k = min(k_show, result.top.crops.shape[1]) if result.top is not None else 0
    methods = [m for m in ("guided", "deconvnet") if m in projections]
    has_init = result.init_images is not None
    columns = 1 + has_init + k * (1 + len(methods))
    fig = new_figure(figsize=(1.0 * columns + 0.6, 1.05 * len(channels) + 0.6), layout=None)
    fig.subplots_adjust(left=0.02, right=0.99, bottom=0.01, top=1 - 0.55 / (1.05 * len(channels) + 0.6),
                        wspace=0.08, hspace=0.45)
    spec = fig.add_gridspec(len(channels), columns)
    ratio, init_ratio, beats = result.ratio, result.init_ratio, result.beats_init
    for row, channel in enumerate(channels):
        i = result.channels.index(channel)
        ax = fig.add_subplot(spec[row, 0])
        _show_image(ax, result.images[i])
        if not np.isfinite(ratio[i]):  # the channel never fires on the data: no ratio, not a finding
            ax.set_title(f"ch {channel}: never fires", fontsize=6, pad=1, color="grey")
        else:
            flag = "" if beats[i] else " NOT > init"
            ax.set_title(f"ch {channel}: {ratio[i]:.2f}x{flag}", fontsize=6, pad=1,
                         color="black" if beats[i] else "red")
        col = 1
        if has_init:
            ax = fig.add_subplot(spec[row, col])
            _show_image(ax, result.init_images[i])
            ax.set_title(f"init {init_ratio[i]:.2f}x" if np.isfinite(init_ratio[i]) else "init: never fires",
                         fontsize=6, pad=1)
            col += 1
        for j in range(k):
            ax = fig.add_subplot(spec[row, col])
            _show_image(ax, result.top.crops[channel, j])
            ax.set_title(f"patch {result.top.values[channel, j]:.2g}", fontsize=6, pad=1)
            col += 1
            for method in methods:
                ax = fig.add_subplot(spec[row, col])
                _show_gradient(ax, projections[method].crops[row if len(projections[method].crops) == len(channels)
                                                             else channel, j])
                ax.set_title(method, fontsize=6, pad=1)
                col += 1
    fig.suptitle(f"{result.read}: {result.objective} objective, {result.steps} steps; ratio = reached / data-set max "
                 "(init: the same on the network at initialisation)", fontsize=8)
    return fig


def evolution_figure(evolution: Any, *, max_channels: int = 8):
    """Rows: channels; columns: recorded epochs (one render each, its ratio above it)."""
    epochs = evolution.epochs
    channels = evolution.channels[:max_channels]
    fig = new_figure(figsize=(1.0 * len(epochs) + 0.8, 1.05 * len(channels) + 0.6), layout=None)
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.01, top=1 - 0.55 / (1.05 * len(channels) + 0.6),
                        wspace=0.08, hspace=0.45)
    spec = fig.add_gridspec(len(channels), len(epochs))
    for row, channel in enumerate(channels):
        for col, epoch in enumerate(epochs):
            ax = fig.add_subplot(spec[row, col])
            _show_image(ax, evolution.images[col][row])
            ax.set_title(f"e{epoch}: {evolution.ratios[col][row]:.2f}x", fontsize=6, pad=1)
            if col == 0:
                ax.set_ylabel(f"ch {channel}", fontsize=7)
    fig.suptitle(f"{evolution.layer}: renders at the recorded epochs (ratio = reached / that epoch's data-set max)",
                 fontsize=8)
    return fig


def visualization_section(result: Any, *, projections: dict[str, Any] | None = None, evolution: Any = None,
                          stability: Any = None, level: int = 2, prefix: str = "") -> H.Section:
    """The report section: renders beside top patches and projections, the ratios against both controls,
    and (given) the renders over training and the epochs from which top patches stay stable."""
    body: list[H.Html] = []
    summary = result.summary()
    projections = result.projections if projections is None else projections
    settings = result.settings or {}
    over = f" over {result.images_description}" if result.images_description else ""
    body.append(H.paragraph(
        f"Images optimised to excite each channel of {result.read}, beside the data-set patches{over} that excite "
        f"it most. {result.ratio_definition}."))
    starts = settings.get("starts", 1)
    body.append(H.how(
        f"{result.steps} steps of Adam on a Fourier-parameterised image (colour-decorrelated for RGB, started at the "
        f"data's mean colour{f', best of {starts} random starts' if starts > 1 else ''}) under random shifts, "
        f"scales and rotations, {result.objective} objective at {result.read}, optimising "
        f"{'the centre position' if result.objective == 'neuron' else 'the spatial ' + settings.get('reduce', 'max')}"
        "; ratio = the render's value (spatial max; the centre for a neuron) / the largest value over the data set "
        "(the top patch)",
        control="the same optimisation on the network at initialisation (its own data-set max), and "
                f"{len(result.random_reached)} random unit directions in the layer's activation space"))
    rows = []
    for unit in result.to_dict()["units"]:
        rows.append([unit["channel"], unit["reached"], unit["data_max"], unit["ratio"], unit["init_ratio"],
                     "yes" if unit["beats_init"] else "no (not a finding)"])
    body.append(H.table(["channel", "reached", "data-set max", "ratio", "init ratio", "beats init"], rows,
                        caption=f"{result.read}: {summary['reach_data_max']} of {summary['units']} units reach "
                                f"their data-set max, {summary['beat_init']} beat the init control; median ratio "
                                f"{H.format_number(summary['median_ratio'])} (init "
                                f"{H.format_number(summary['median_init_ratio'])}, random directions "
                                f"{H.format_number(summary['median_random_direction_ratio'])})"))
    body.append(H.figure(visualization_figure(result, projections), alt=f"feature visualisation of {result.layer}",
                         caption="Each row: the render (ratio; red when not above the init control), the init "
                                 "render, then each top patch with its guided-backprop and deconvnet projections."))
    if evolution is not None:
        body.append(H.figure(evolution_figure(evolution), alt=f"renders of {evolution.layer} over training",
                             caption="Columns: the recorded epochs (epoch 0 is the initialisation)."))
    if stability is not None:
        rows = [[layer, stability.settled.get(layer), *[stability.jaccard[layer][e] for e in range(len(stability.epochs))]]
                for layer in stability.layers]
        body.append(H.table(["layer", "stable from epoch", *[f"J e{e}" for e in stability.epochs]], rows,
                            caption=f"Mean Jaccard overlap of each channel's top-{stability.k} image set with the final "
                                    f"epoch's ({stability.n_images} images); stable from the first epoch after which "
                                    "it stays >= 0.8 (None: never)"))
        body.append(H.how("top-k image sets per channel at every checkpoint, compared with the final epoch",
                          control=f"chance overlap of random {stability.k}-sets of {stability.n_images} images: "
                                  f"~{H.format_number(stability.k / stability.n_images)}"))
    if summary["beat_init"] < summary["units"]:
        body.append(H.note(f"{summary['units'] - summary['beat_init']} unit(s) do no better than the init control: "
                           "their renders are not findings.", kind="warning"))
    return H.section(f"{prefix}visualize", "What each channel wants to see", *body, level=level)
