"""The demo's report: several runs and the parts contrast in one self-contained page.

:func:`build_story_report` puts the operation first, then one group of sections per
run (its training, kernels, atlas, feature maps, ...), then the part-detector
contrast and a table of the demo's stages, with the key numbers at the top.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kernelscope.report import html as H
from kernelscope.report.build import (
    export_figures,
    guarded,
    operation_section,
    run_sections,
    write_report,
)

__all__ = ["build_story_report", "headline_numbers"]


def headline_numbers(numbers: Mapping[str, Any]) -> H.Html:
    """The key numbers as a row of boxes (value, what it is, its control)."""
    boxes: list[tuple[str, str, str]] = []

    def pct(value: Any) -> str:
        try:
            return f"{100 * float(value):.0f}%"
        except (TypeError, ValueError):
            return "n/a"

    def num(value: Any) -> str:
        try:
            return f"{float(value):.3f}"
        except (TypeError, ValueError):
            return "n/a"

    if "mnist_test_acc" in numbers:
        boxes.append((pct(numbers["mnist_test_acc"]), "MNIST test accuracy", "chance 10%"))
    strict = numbers.get("strict") or {}
    if "structured_beyond_spectrum" in strict:
        boxes.append((pct(strict["structured_beyond_spectrum"]), "MNIST first-layer kernels structured beyond "
                      "their spectrum (surrogate test, q < 0.05)",
                      f"smoothed random kernels {pct(strict.get('structured_beyond_spectrum_control_smooth'))}"))
    for concept in ("eyes", "mouth"):
        if f"detectors_{concept}_gated" in strict:
            boxes.append((str(strict[f"detectors_{concept}_gated"]), f"{concept} detectors gated on the null",
                          f"IoU > 0.04 alone {strict[f'detectors_{concept}']}"))
    if "atlas_fraction" in numbers:
        boxes.append((pct(numbers["atlas_fraction"]), "first-layer kernels edge-/Gabor-like",
                      f"at initialisation {pct(numbers.get('atlas_init_fraction'))}"))
    if "faces_test_acc" in numbers:
        boxes.append((pct(numbers["faces_test_acc"]), "faces test accuracy", "chance 50%"))
    for concept in ("eyes", "mouth"):
        d = numbers.get(f"dissect_{concept}")
        if d:
            boxes.append((num(d["iou"]), f"best {concept} IoU (layer {d['layer']} #{d['channel']})",
                          f"chance {num(d['chance'])}, detector above {d['threshold']}"))
    s = numbers.get("shift")
    if s:
        boxes.append((num(s["network_auroc"]), f"faces vs objects AUROC ({s['network_score']})",
                      f"init {num(s.get('init_auroc'))}"))
    f = numbers.get("facenet")
    if f:
        boxes.append((pct(f["atlas"]["edge_or_gabor"]), f"{f['source']}: first-layer kernels edge-/Gabor-like",
                      f"init {pct(f['atlas']['controls'].get('init'))}, smoothed random "
                      f"{pct(f['atlas']['controls'].get('smooth'))}"))
        eyes = f.get("occlusion_eyes") or {}
        if eyes.get("channel") is not None:
            boxes.append((pct(eyes["part_drop"]), f"eyes occlusion drop, {f['source']} {eyes['layer']}:{eyes['channel']}",
                          f"elsewhere {pct(eyes['control_drop'])}; init detectors {eyes.get('init_detectors')}"))
    for name, p in (numbers.get("parts") or {}).items():
        boxes.append((pct(p["part_drop"]), f"{p['part']} occlusion drop, {name}",
                      f"elsewhere {pct(p['control_drop'])}"))
    if not boxes:
        return H.Html("")
    cells = "".join(f"<div><b>{H.escape(v)}</b>{H.escape(label)}<br><small>{H.escape(ctrl)}</small></div>"
                    for v, label, ctrl in boxes)
    return H.Html(f'<div class="numbers">{cells}</div>')


def build_story_report(out_path: str | os.PathLike,
                       runs: Sequence[tuple[str, str, str | os.PathLike, Sequence[str], Mapping[str, Any]]], *,
                       parts: Mapping[str, Any] | None = None, facenet: Any = None, correlation: Any = None,
                       numbers: Mapping[str, Any] | None = None,
                       stages: Mapping[str, Any] | None = None, strict: bool = False, progress: bool = True,
                       title: str = "kernelscope: what the convolution kernels learned",
                       figures_dir: str | os.PathLike | None = None) -> Path:
    """Write the demo's report.

    Parameters
    ----------
    out_path : str or PathLike
        The HTML file.
    runs : sequence of (label, title, run_dir, analyses, results)
        One group of sections per run; ``label`` prefixes the section ids.
    parts : dict, optional
        The result of :func:`kernelscope.analysis.part_contrast.part_contrast`.
    correlation : CorrelationResult, optional
        The result of :func:`kernelscope.analysis.channel_correlation.correlation_of`.
    facenet : FaceNetworkResult, optional
        The result of :func:`kernelscope.analysis.face_network.face_network`.
    numbers : dict, optional
        The demo's key numbers (shown at the top).
    stages : dict, optional
        The demo's :class:`~kernelscope.demo.StageResult` per stage (shown at the end).
    figures_dir : str or PathLike, optional
        Also write every figure there as ``<section>-<n>.png``.
    """
    from kernelscope.report import sections as S

    body: list[H.Section] = [guarded("operation", "The operation: cross-correlation, step by step",
                                     operation_section, strict=strict)]
    for label, heading, run_dir, analyses, results in runs:
        inv, secs = run_sections(run_dir, analyses=analyses, results=results, strict=strict, level=3,
                                 prefix=f"{label}-", progress=progress)
        body.append(H.Section(id=label, title=heading, body=[H.paragraph(
            f"Run directory {inv.path}: open it with `kernelscope report {inv.path}` for this run alone.")]))
        body.extend(secs)
    if parts is not None:
        body.append(guarded("parts", "Part detectors: which face networks have eye channels",
                            lambda: S.parts_contrast_section(parts), strict=strict))
    if correlation is not None:
        from kernelscope.report.correlation import correlation_section

        body.append(guarded("correlation", "Does a channel measure correlation?",
                            lambda: correlation_section(correlation), strict=strict))
    if facenet is not None:
        body.append(guarded("facenet", "A real face network", lambda: S.face_network_section(facenet),
                            strict=strict))
    if stages:
        rows = [[s.name, s.status, round(s.seconds, 1), s.reason] for s in stages.values()]
        body.append(H.Section(id="stages", title="How this report was made", body=[
            H.table(["stage", "status", "seconds", "note"], rows),
            H.paragraph("Made by `kernelscope demo`; every number above comes from the runs and result files "
                        "in the same folder."),
        ]))
    path = write_report(out_path, body, title=title, headline=headline_numbers(numbers or {}))
    if figures_dir is not None:
        export_figures(body, figures_dir)
    return path
