"""Figures and the report section "Does a channel measure correlation?".

The numbers come from :func:`kernelscope.analysis.channel_correlation.correlation_of`; this module
only draws them: the linear templates of a layer titled with their held-out R^2, the median R^2
over depth against the network at initialisation, the raw-vs-normalised rank correlations of the
first layer, and the per-layer R^2 and orientation selectivity over training.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.report import html as H
from kernelscope.report.figures.common import imshow_signed, new_figure, symmetric_limit

__all__ = ["templates_figure", "depth_figure", "raw_vs_normalised_figure", "training_figure",
           "correlation_section"]


def _spatial(templates: np.ndarray) -> np.ndarray:
    """(C_out, h, w) images of templates (C_out, C_in, h, w): the channel itself, or the leading spatial profile."""
    if templates.shape[1] == 1:
        return templates[:, 0]
    from kernelscope.analysis.atlas.matching import spatial_profiles

    return spatial_profiles(templates)[0]


def templates_figure(result: Any, *, columns: int = 8, max_channels: int = 32):
    """Each channel's linear template (signed colour scale shared by the layer), titled with its held-out R^2."""
    images = _spatial(np.asarray(result.templates))[:max_channels]
    n = images.shape[0]
    cols = min(columns, n)
    rows = -(-n // cols)
    fig = new_figure(figsize=(1.3 * cols, 1.45 * rows + 0.4))
    limit = symmetric_limit([images])
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        imshow_signed(ax, images[i], limit)
        r2 = result.r2[i]
        ax.set_title(f"{i}: R2 {r2:.2f}" if np.isfinite(r2) else f"{i}: constant", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
    pool = f", {result.pool}x{result.pool} pooled" if result.pool > 1 else ""
    fig.suptitle(f"Linear templates of {result.read} ({result.field_size[0]}x{result.field_size[1]} field{pool})",
                 fontsize=9)
    return fig


def depth_figure(depth: Any):
    """Per-channel held-out R^2 (dots) and the median (line) per layer, trained and at initialisation."""
    fig = new_figure(figsize=(max(4.0, 1.2 * len(depth.layers) + 2), 3.2))
    ax = fig.add_subplot(1, 1, 1)
    x = np.arange(len(depth.layers))
    for results, colour, label, offset in ((depth.trained, "C0", "trained", -0.08),
                                           (depth.init, "C7", "init (control)", 0.08)):
        if results is None:
            continue
        medians = [results[layer].median_r2 for layer in depth.layers]
        for i, layer in enumerate(depth.layers):
            r2 = results[layer].r2
            ax.plot(np.full(r2.size, i + offset), r2, ".", color=colour, alpha=0.4, ms=4)
        ax.plot(x + offset, medians, "-o", color=colour, label=f"{label}: median")
    ax.set_xticks(x, depth.layers, rotation=30, fontsize=8)
    ax.set_ylabel("held-out R2 of the linear template")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.02)
    ax.axhline(1.0, color="k", lw=0.5)
    ax.legend(fontsize=8)
    ax.set_title(f"How linear is each channel? (read at {depth.at})", fontsize=9)
    return fig


def raw_vs_normalised_figure(raw: Any, raw_init: Any = None):
    """Per channel: Spearman's rho of the activation ranking with NCC, contrast |p| and cosine."""
    fig = new_figure(figsize=(6.5, 3.0))
    ax = fig.add_subplot(1, 1, 1)
    names = (("rho_ncc", "NCC (Pearson)"), ("rho_contrast", "contrast |p|"), ("rho_cos", "cos(p, w)"))
    for k, (name, label) in enumerate(names):
        values = getattr(raw, name)
        ax.plot(np.full(values.size, k - 0.1), values, "o", color=f"C{k}", alpha=0.6, ms=4,
                label=f"{label}: median {np.nanmedian(values):.2f}")
        if raw_init is not None:
            init = getattr(raw_init, name)
            ax.plot(np.full(init.size, k + 0.1), init, "x", color="C7", alpha=0.6, ms=4,
                    label="init (control)" if k == 0 else None)
    ax.set_xticks(range(3), [label for _, label in names])
    ax.set_ylabel("Spearman rho with activation")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title(f"{raw.layer}: ranking by activation vs by ... ({raw.n_units} units)", fontsize=9)
    return fig


def training_figure(curve: Any):
    """Median held-out R^2 and median OSI per layer at every epoch analysed."""
    fig = new_figure(figsize=(7.5, 3.0))
    for k, (values, label) in enumerate(((curve.median_r2, "median held-out R2"), (curve.median_osi, "median OSI"))):
        ax = fig.add_subplot(1, 2, k + 1)
        for j, layer in enumerate(curve.layers):
            ax.plot(curve.epochs, values[:, j], "-o", ms=3, label=layer)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if k == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"Over training (read at {curve.at})", fontsize=9)
    return fig


def _f(value: Any) -> Any:
    return float("nan") if value is None else value


def correlation_section(result: Any, *, level: int = 2, prefix: str = "") -> H.Section:
    """"Does a channel measure correlation?": templates over depth, raw vs normalised, tuning, over training.

    ``result`` is a :class:`~kernelscope.analysis.channel_correlation.CorrelationResult`.
    """
    rows = [[r["layer"], r["read"], r["field"], r["channels"], _f(r["median_r2"]), _f(r["init_median_r2"]),
             _f(r["median_osi"]), _f(r["init_median_osi"]), _f(r["simple_fraction"]),
             _f(r["init_simple_fraction"])] for r in result.layer_rows()]
    body: list[H.Html] = [
        H.paragraph("At the first layer, before the nonlinearity, each output is exactly a cross-correlation of "
                    "an input patch with the kernel. How far does that hold after the ReLU and deeper? For every "
                    "channel, the best linear template (ridge regression from the receptive-field patch to the "
                    "response) and how much of the response it explains on held-out images."),
        H.table(["layer", "read", "field", "channels", "median R2", "init median R2", "median OSI",
                 "init median OSI", "simple-like", "init simple-like"], rows,
                caption=f"{result.source}, {result.images}"),
        H.how("ridge regression per channel from the unit's receptive-field patch to its response, at 3x3 "
              "positions per image; the penalty chosen on a validation split (1/5 of the images), R2 on a "
              "held-out test split (another 1/5); one streaming pass of X^T X. Tuning: full-field gratings "
              "(12 orientations x 7 frequencies x 8 phases) at the centre unit; OSI = 1 - circular variance "
              "of the orientation curve; simple-like when F1/F0 > 1",
              control="the same network at initialisation (Source.init_model), same images and gratings"),
        H.figure(depth_figure(result.depth), alt="held-out R2 of linear templates over depth, trained vs init"),
    ]
    first = result.layers[0]
    body.append(H.figure(templates_figure(result.depth.trained[first]), alt=f"linear templates of {first}",
                         caption=f"Linear templates of {first}: at={result.at}. At at=conv the template equals "
                                 "the kernel and R2 = 1."))
    if result.raw is not None:
        m = result.raw.medians()
        mi = result.raw_init.medians() if result.raw_init is not None else {}
        body.append(H.table(
            ["", "rho(activation, NCC)", "rho(activation, |p|)", "rho(activation, cos)", "top-k overlap with NCC",
             "top-k contrast percentile", "top-k cos percentile"],
            [[label, *[_f(d.get(k)) for k in ("rho_ncc", "rho_contrast", "rho_cos", "top_overlap",
                                              "top_contrast_percentile", "top_cos_percentile")]]
             for label, d in (("trained", m), ("init (control)", mi)) if d],
            caption=f"Raw vs normalised correlation, {result.raw.layer}: medians over channels "
                    f"({result.raw.n_units} sampled units, top k = {result.raw.k})"))
        body.append(H.how("activation = |p| |w| cos(p, w) + b read from the conv (valid positions); NCC = Pearson "
                          "correlation of patch and kernel (OpenCV's TM_CCOEFF_NORMED, checked against it), "
                          "computed with kernelscope.ops.correlate2d; Spearman's rho per channel",
                          control="the network at initialisation"))
        body.append(H.figure(raw_vs_normalised_figure(result.raw, result.raw_init),
                             alt="rank correlation of activation with NCC, contrast and cosine"))
    for label, agreement in (("trained", result.agreement), ("init (control)", result.agreement_init)):
        if agreement is None:
            continue
        if agreement.get("reason"):
            body.append(H.note(f"Gabor fit vs measured orientation ({label}): {agreement['reason']}", kind="info"))
            break
        body.append(H.paragraph(
            f"Gabor fit of the weights vs orientation measured with gratings, {agreement['layer']} ({label}): "
            f"{H.format_number(_f(agreement['agreement']))} of {agreement['n']} well-fit channels (Gabor R2 >= "
            f"{agreement['min_gabor_r2']}) within {agreement['tolerance_deg']:.0f} degrees; all responding channels "
            f"{H.format_number(_f(agreement['agreement_all']))} of {agreement['n_all']}; chance "
            f"{H.format_number(agreement['chance'])}."))
    if result.training is not None:
        body.append(H.figure(training_figure(result.training), alt="median R2 and OSI per layer over training"))
    for note in result.notes:
        body.append(H.note(note, kind="info"))
    return H.Section(id=f"{prefix}correlation", title="Does a channel measure correlation?", body=body, level=level)
