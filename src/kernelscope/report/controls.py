"""The stricter claims, each with its control: surrogate tests, replication over seeds, channels across seeds.

For the demo and the report (issue 19):

* :func:`strict_numbers` (an :class:`~kernelscope.analysis.atlas.AtlasResult` and,
  optionally, dissection results) -> a flat dict of the stricter headline numbers
  with their controls: the share of kernels structured beyond their spectrum beside
  smoothed random kernels put through the same test, the classical share beside the
  *measured* random and init controls (independent draws), and the dissection
  detector counts gated on the permutation null beside the IoU-only counts;
* :func:`strict_lines` -> the same as printable lines;
* :func:`controls_section` -> a report section (surrogate test table, replication
  table, channels matched across seeds with their figure);
* :func:`matched_kernels_figure` -> a figure of the first-layer kernels matched across seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.report import html as H

__all__ = ["strict_numbers", "strict_lines", "controls_section", "matched_kernels_figure", "replication_rows"]


def strict_numbers(atlas: Any, dissect: dict[str, Any] | None = None) -> dict[str, Any]:
    """The stricter headline numbers, each beside its control.

    Parameters
    ----------
    atlas : AtlasResult
        With the surrogate test (``atlas(..., surrogates=999)``, the default).
    dissect : dict of str to DissectResult, optional
        Layer -> dissection (e.g. :func:`kernelscope.analysis.runs.dissect_of_run`).

    Returns
    -------
    dict
        ``structured_beyond_spectrum`` (fraction, count, n), ``..._control_smooth`` and its
        size, ``structured_beyond_pixels`` and control, ``classical`` with
        ``classical_control_random`` / ``_init`` (independent draws, measured), and per concept
        ``detectors_<concept>`` and ``detectors_<concept>_gated`` summed over the layers.
    """
    out: dict[str, Any] = dict(atlas.headline())
    for kind, key in (("phase", "structured_beyond_spectrum"), ("shuffle", "structured_beyond_pixels")):
        test = atlas.surrogate.get(kind)
        if test is not None:
            out[f"{key}_count"] = test.count
            out[f"{key}_n"] = int(test.structured.size)
            out[f"{key}_alpha"] = test.alpha
            for name, size in test.control_sizes.items():
                out[f"{key}_control_{name}_n"] = size
    for name, size in atlas.control_sizes.items():
        out[f"control_{name}_n"] = size
    if dissect:
        concepts = sorted({k for r in dissect.values() for k in r.concepts})
        for concept in concepts:
            for which, suffix in (("trained", ""), ("init", "_init")):
                counts = [r.detector_counts(which).get(concept) for r in dissect.values()]
                counts = [c for c in counts if c is not None]
                if counts:
                    out[f"detectors_{concept}{suffix}"] = sum(c["iou"] for c in counts)
                    out[f"detectors_{concept}{suffix}_gated"] = sum(c["gated"] for c in counts)
    return out


def strict_lines(numbers: dict[str, Any]) -> list[str]:
    """Printable lines of :func:`strict_numbers` (the demo's summary can print them as they are).

    Examples
    --------
    >>> strict_lines({"structured_beyond_spectrum": 0.25, "structured_beyond_spectrum_count": 4,
    ...               "structured_beyond_spectrum_n": 16, "structured_beyond_spectrum_control_smooth": 0.14,
    ...               "structured_beyond_spectrum_control_smooth_n": 64})[0]
    'structured beyond its spectrum: 4 of 16 kernels (25%; smoothed random kernels: 14% of 64)'
    """
    lines = []
    for key, what in (("structured_beyond_spectrum", "structured beyond its spectrum"),
                      ("structured_beyond_pixels", "structured beyond its pixel values")):
        if key in numbers:
            ctrl = numbers.get(f"{key}_control_smooth")
            extra = (f"; smoothed random kernels: {ctrl:.0%} of {numbers.get(f'{key}_control_smooth_n', '?')}"
                     if ctrl is not None else "")
            lines.append(f"{what}: {numbers.get(f'{key}_count', '?')} of {numbers.get(f'{key}_n', '?')} kernels "
                         f"({numbers[key]:.0%}{extra})")
    if "classical" in numbers:
        ctrls = ", ".join(f"{name} {numbers[f'classical_control_{name}']:.0%}"
                          for name in ("random", "init", "smooth", "spectral")
                          if f"classical_control_{name}" in numbers)
        lines.append(f"classical (edge/Gabor/centre-surround/blob): {numbers['classical']:.0%} (controls, drawn "
                     f"apart from the thresholds' calibration: {ctrls})")
    for key in sorted(numbers):
        if key.startswith("detectors_") and not key.endswith(("_gated", "_init")):
            concept = key[len("detectors_"):]
            init = numbers.get(f"{key}_init_gated")
            lines.append(f"{concept} detectors: {numbers.get(key + '_gated')} gated on the permutation null "
                         f"(IoU > 0.04 alone: {numbers[key]})" + (f"; init gated {init}" if init is not None else ""))
    return lines


def replication_rows(replication: dict[str, Any], keys: list[str] | None = None) -> list[list[Any]]:
    """Rows ``[number, mean, ci low, ci high, min, max, n]`` of a :func:`~kernelscope.analysis.replicate.replicate` result."""
    summary = replication["summary"]
    keys = list(summary) if keys is None else [k for k in keys if k in summary]
    return [[k, summary[k]["mean"], *summary[k]["ci95"], summary[k]["min"], summary[k]["max"], summary[k]["n"]]
            for k in keys if summary[k]["mean"] is not None]


def matched_kernels_figure(matching: Any, *, max_channels: int = 16):
    """The reference seed's first-layer kernels (rows) beside their matched kernels in every other seed.

    Rows are ordered by how many seeds the channel recurs in; a cell is titled with the
    matched cosine and drawn with a black frame when the match clears the null's p95.
    """
    from kernelscope.report.figures.common import imshow_signed, new_figure

    if matching.kind != "kernels" or not matching.kernels:
        raise ValueError("matched_kernels_figure needs a first-layer (kernel) matching")
    ref = matching.kernels[0]
    order = np.argsort(-matching.recurrence_counts, kind="stable")[:max_channels]
    n_seeds = len(matching.kernels)
    fig = new_figure(figsize=(1.0 * n_seeds + 0.6, 1.0 * len(order) + 0.4))
    axes = fig.subplots(len(order), n_seeds, squeeze=False)

    def profile(k):  # (C, kh, kw) -> (kh, kw): grey layers as they are, RGB by their channel mean
        return k[0] if k.shape[0] == 1 else k.mean(axis=0)

    for row, c in enumerate(order):
        imshow_signed(axes[row, 0], profile(ref[c]))
        axes[row, 0].set_title(f"ch {c}: {int(matching.recurrence_counts[c])}/{n_seeds - 1}", fontsize=6)
        for j, pair in enumerate(matching.pairs):
            ax = axes[row, j + 1]
            partner = int(pair.partner[c])
            if partner < 0:
                ax.set_axis_off()
                continue
            imshow_signed(ax, profile(matching.kernels[j + 1][partner]))
            ax.set_title(f"{pair.similarity[c]:.2f}", fontsize=6)
            for spine in ax.spines.values():
                spine.set_visible(bool(pair.recurs[c]))
                spine.set_linewidth(2)
    fig.suptitle("first-layer kernels matched across seeds (framed: above the permutation null's p95)", fontsize=7)
    return fig


def controls_section(atlas: Any = None, *, replication: dict[str, Any] | None = None, matching: Any = None,
                     dissect: dict[str, Any] | None = None, level: int = 2, prefix: str = "") -> H.Section:
    """Report section: the stricter numbers with their controls, the replication table, matched channels."""
    body: list[H.Html] = []
    if atlas is not None and atlas.surrogate:
        rows = []
        for kind, test in atlas.surrogate.items():
            rows.append([{"phase": "beyond its amplitude spectrum", "shuffle": "beyond its pixel values"}[kind],
                         test.count, test.fraction,
                         *[test.control_fractions.get(n, float("nan")) for n in ("smooth",)]])
        body.append(H.table(["structured ...", "kernels", "fraction", "smoothed random kernels (same test)"], rows,
                            caption=f"Surrogate test per kernel, layer {atlas.layer}: best-match score against "
                                    f"{next(iter(atlas.surrogate.values())).n_surrogates} surrogates each, "
                                    f"Benjamini-Hochberg q < {next(iter(atlas.surrogate.values())).alpha:g} "
                                    f"over the layer"))
        body.append(H.how("per kernel, p = (1 + surrogates scoring at least as high) / (n + 1); surrogates keep "
                          "the kernel's Fourier amplitudes with random phases (or its pixel values, shuffled)",
                          control="smoothed random kernels drawn apart from everything else, in pseudo-layers of "
                                  "the layer's size, put through the same test: the fraction that passes is measured"))
    if atlas is not None or dissect:
        lines = strict_lines(strict_numbers(atlas, dissect)) if atlas is not None else []
        if lines:
            body.append(H.pre("\n".join(lines)))
    if replication is not None:
        n = len(replication["seeds"])
        body.append(H.table(["number", "mean", "95% low", "95% high", "min", "max", "seeds"],
                            replication_rows(replication),
                            caption=f"Preset {replication['preset']} over {n} seeds: mean and percentile-"
                                    f"bootstrap 95% interval of the mean over seeds"))
    if matching is not None:
        body.append(H.paragraph(matching.summary_line()))
        if matching.kind == "kernels":
            body.append(H.figure(matched_kernels_figure(matching), alt="kernels matched across seeds",
                                 caption="Each reference kernel (left, with the number of seeds it recurs in) beside "
                                         "its Hungarian match in every other seed, titled with the cosine."))
    if not body:
        body.append(H.note("no stricter controls were computed for this run", kind="missing"))
    return H.Section(id=f"{prefix}controls", title="Stricter controls: surrogates, seeds, gated detectors",
                     body=body, level=level)
