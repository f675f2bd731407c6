"""Build the self-contained HTML report of a run directory.

``build_report(run_dir, out_path)`` writes one HTML file with a section for each
thing the run holds: the operation itself, training curves, first-layer kernels
and their evolution, the kernel atlas, feature maps, top patches, receptive
fields, feature visualisation, concept detectors, distribution shift and part detectors. Each section is
built by its own function and guarded: a capability that is missing, or a run
that lacks what a section needs, gives a section that says so in one line, and
the rest of the report is still written. ``strict=True`` (the tests) re-raises
unexpected exceptions instead of reporting them, so real bugs are not hidden.

Analyses that need data beyond the run (dissection needs concept masks, the shift
report an out-of-distribution set, the parts contrast a second model) are
computed when the run's dataset provides them (the bundled ``faces``), or passed
in precomputed through ``results`` (what ``kernelscope demo`` does).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError, suggest
from kernelscope.report import html as H
from kernelscope.train.rundir import Run, inspect_run

__all__ = ["ANALYSES", "ReportResult", "build_report", "run_sections", "operation_section",
           "write_report", "export_figures", "guarded"]

#: Every section a report can have, in the order shown.
ANALYSES = ("operation", "training", "kernels", "atlas", "featuremaps", "patches", "receptive",
            "visualize", "dissect", "shift", "parts")



@dataclass
class ReportResult:
    """What :func:`build_report` wrote: the file, its sections and what was missing."""

    path: Path
    sections: list[H.Section]
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> dict[str, str]:
        """Section id -> "ok" | "partial" | "unavailable"."""
        return {s.id: s.status for s in self.sections}

    def missing(self) -> dict[str, str]:
        """Section id -> the reason, for sections that are not fully shown."""
        return {s.id: s.reason for s in self.sections if s.status != "ok"}


def guarded(id: str, title: str, build: Callable[[], H.Section], *, strict: bool = False,
            level: int = 2) -> H.Section:
    """Run one section builder; turn a missing optional package or a user-level error into a note.

    - a third-party package that is not installed (``ModuleNotFoundError`` naming it): "needs the
      package 'x', which is not installed" (re-raised when ``strict``);
    - :class:`KernelscopeError` (the run lacks what the section needs): its message;
    - an ``ImportError`` from kernelscope's own modules is a bug, never a missing capability: it is
      always re-raised;
    - any other exception: re-raised when ``strict``, else reported in the section and on stderr.
    """
    try:
        return build()
    except ImportError as error:
        name = getattr(error, "name", None) or ""
        if not isinstance(error, ModuleNotFoundError) or not name or name.split(".")[0] == "kernelscope":
            raise
        if strict:
            raise
        reason = f"needs the package {name.split('.')[0]!r}, which is not installed ({error})"
    except KernelscopeError as error:
        reason = str(error)
    except Exception as error:
        if strict:
            raise
        reason = f"failed: {type(error).__name__}: {error}"
        print(f"kernelscope report: section {title!r} failed: {type(error).__name__}: {error}", file=sys.stderr)
    return H.Section(id=id, title=title, status="unavailable", reason=reason, level=level)


# --------------------------------------------------------------------------------------------
# The operation (needs no run)
# --------------------------------------------------------------------------------------------

EXAMPLE_INPUT = np.array([[9, 8, 7, 6], [5, 4, 3, 2], [1, 2, 3, 4], [5, 6, 7, 8]])
EXAMPLE_KERNEL = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])


def operation_section(*, level: int = 2) -> H.Section:
    """What a conv layer computes: the explain walk-through of the 4x4 / 3x3 example and the convention table."""
    from kernelscope.ops import convolve2d, correlate2d
    from kernelscope.ops.explain import explain

    body: list[H.Html] = [H.paragraph(
        "A convolution layer slides each kernel over its input and, at every position, multiplies the window "
        "element-wise with the kernel and sums the products (plus a bias). Strictly this is cross-correlation; "
        "true convolution flips the kernel first. Below, every output of the 4x4 input correlated with the "
        "3x3 kernel, computed by kernelscope's exact reference loop."
    )]
    trace = explain(EXAMPLE_INPUT, EXAMPLE_KERNEL)
    body.append(_explain_table(trace))
    text = _explain_text(trace)
    if text:
        body.append(H.Html("<details><summary>The same walk-through as terminal text "
                           "(<code>kernelscope explain --input \"9 8 7 6; 5 4 3 2; 1 2 3 4; 5 6 7 8\" "
                           "--kernel \"1 2 3; 4 5 6; 7 8 9\"</code>)</summary>" + H.pre(text) + "</details>"))
    xcorr = correlate2d(EXAMPLE_INPUT, EXAMPLE_KERNEL, method="direct")
    conv = convolve2d(EXAMPLE_INPUT, EXAMPLE_KERNEL, method="direct")
    body.append(H.table(["operation", "output (2x2)"], [
        ["cross-correlation (what nn.Conv2d computes)", _matrix(xcorr)],
        ["true convolution (kernel flipped on both axes)", _matrix(conv)],
    ], caption="The two conventions on the same input"))
    body.append(H.how("each output is sum(window * kernel) over the 3x3 window, exact integer arithmetic "
                      "(the engine's 'direct' method)",
                      control="true convolution of the same input, equal to cross-correlation with the "
                              "flipped kernel"))
    body.extend(_backward_parts())
    header, rows = _conventions_rows()
    body.append(H.table(header, rows, caption="Which installed library computes which "
                                              "(kernelscope conventions)"))
    body.append(H.how("an asymmetric kernel sent through each function; the output is compared with both "
                      "candidates (cross-correlation and true convolution)"))
    return H.Section(id="operation", title="The operation: cross-correlation, step by step", body=body,
                     level=level)


def _matrix(array: Any) -> str:
    array = np.asarray(array)
    return "; ".join(" ".join(H.format_number(v) for v in row) for row in array.reshape(array.shape[-2:]))


def _explain_table(trace: Any) -> H.Html:
    """One row per output position: the window, the products, the sum (from an ``Explanation``)."""
    rows = []
    for position in trace.positions:
        for term in position.channels:
            products = np.asarray(term.products).ravel()
            rows.append([
                f"({position.row}, {position.col})",
                _matrix(term.window),
                " + ".join(H.format_number(v) for v in products),
                term.sum if position.bias is None else f"{H.format_number(term.sum)} + bias",
                position.total,
            ])
    if not rows:
        raise KernelscopeError("kernelscope.ops.explain returned no output positions")
    return H.table(["output (row, col)", "input window under the kernel", "products window x kernel",
                    "sum of products", "output"], rows,
                   caption="Every output position of the 4x4 input correlated with the 3x3 kernel", digits=6)


def _explain_text(trace: Any) -> str:
    from kernelscope.ops.explain import format_explanation

    return format_explanation(trace)


def _backward_parts() -> list[H.Html]:
    """The same example's gradients (GRADIENTS' explain_backward): where the flip comes back."""
    from kernelscope.ops.explain_backward import explain_backward, format_backward

    trace = explain_backward(EXAMPLE_INPUT, EXAMPLE_KERNEL)
    parts = [
        H.Html("<h3>Learning the kernel: the backward pass</h3>"),
        H.paragraph("With the loss L = sum(output), so dL/doutput = 1 everywhere: the kernel's gradient is a "
                    "cross-correlation of the input with the output gradient, the input's gradient a true "
                    "convolution (the flip comes back) of the output gradient with the kernel."),
        H.table(["gradient", "value"], [
            ["dL/dkernel = xcorr(input, dL/doutput)", _matrix(trace.kernel_grad)],
            ["dL/dinput = full conv(dL/doutput, kernel)", _matrix(trace.input_grad)],
            ["dL/dbias = sum(dL/doutput)", " ".join(H.format_number(v) for v in trace.bias_grad)],
        ]),
        H.how("every product and sum traced by kernelscope.ops.explain_backward, written with the engine's own "
              "correlate/convolve" + ("; equal to the engine's backward" if trace.engine_agrees else ""),
              control="kernelscope.ops.backward's gradients (and, in the tests, torch.autograd)"),
        H.Html("<details><summary>The backward walk-through as terminal text (<code>kernelscope explain ... "
               "--backward</code>)</summary>" + H.pre(format_backward(trace)) + "</details>"),
    ]
    return parts


def _conventions_rows() -> tuple[list[str], list[list[Any]]]:
    """The convention probe as table rows: library, call, verdict, output vs. both candidates."""
    from kernelscope.analysis.conventions import probe_conventions

    report = probe_conventions()
    rows = []
    for item in report.results:
        evidence = item.note
        if item.output is not None:
            evidence = (f"output {_matrix(item.output)}; cross-correlation {_matrix(item.cross_correlation)}; "
                        f"convolution {_matrix(item.convolution)}" + (f" ({item.note})" if item.note else ""))
        rows.append([item.library, item.call, item.verdict, evidence])
    return ["library", "call", "computes", "evidence"], rows


# --------------------------------------------------------------------------------------------
# Sections from the run's own files
# --------------------------------------------------------------------------------------------


def _run_summary(inv: Run, *, level: int, prefix: str) -> H.Section:
    body: list[H.Html] = [H.table(["field", "value"], inv.summary_rows())]
    if inv.problems:
        body.append(H.Html("<p><b>Missing or incomplete in this run:</b></p><ul>"
                           + "".join(f"<li>{H.escape(p)}</li>" for p in inv.problems) + "</ul>"))
    return H.Section(id=f"{prefix}run", title="The run", body=body,
                     status="partial" if inv.problems else "ok",
                     reason=("this run is incomplete; the sections below show what was recorded"
                             if inv.problems else ""), level=level)


def _training_section(inv: Run, *, level: int, prefix: str) -> H.Section:
    from kernelscope.report.figures.run import training_curves

    metrics = inv.metrics
    if not metrics:
        raise KernelscopeError("the run's manifest.json has no per-epoch metrics")
    last = metrics[-1]
    classes = inv.classes
    chance = 1.0 / len(classes) if classes else float("nan")
    data = inv.manifest.get("dataset") or {}
    body = [
        H.figure(training_curves(metrics), alt="training and test loss and accuracy per epoch",
                 caption="Loss and accuracy per epoch, on the training split and the held-out test split."),
        H.table(["epoch", "train loss", "train acc", "test loss", "test acc", "seconds"],
                [[m.get("epoch", "?"), m.get("train_loss", float("nan")), m.get("train_acc", float("nan")),
                  m.get("test_loss", float("nan")), m.get("test_acc", float("nan")),
                  m.get("seconds", float("nan"))] for m in metrics]),
        H.how(f"accuracy = fraction of the {data.get('n_test', '?')} held-out test images (split seed "
              f"{data.get('split_seed', '?')}) whose arg-max class is right; final test accuracy "
              f"{H.format_number(last.get('test_acc', float('nan')))}",
              control=f"chance level 1/{len(classes) or '?'} = {H.format_number(chance)}"),
    ]
    return H.Section(id=f"{prefix}training", title="Training", body=body, level=level)


def _first_layer(inv: Run) -> str:
    layers = inv.conv_layers
    if not layers:
        raise KernelscopeError("the run records no conv layers (manifest conv_layers is empty and "
                               "there is no kernels/epoch_*.npz)")
    return layers[0]


def _kernels_section(inv: Run, *, level: int, prefix: str) -> H.Section:
    from kernelscope.report.figures.common import symmetric_limit
    from kernelscope.report.figures.kernels import draw_kernel_grid
    from kernelscope.report.figures.run import kernel_drift, kernel_evolution

    def grid(kernels: np.ndarray, title: str):  # (O, C, kh, kw): C other than 1 or 3 drawn as the mean
        shown = kernels if kernels.shape[1] in (1, 3) else kernels.mean(axis=1)
        return draw_kernel_grid(shown, annotate=False, suptitle=title, panel_size=0.8, max_kernels=64,
                                mosaic_image=shown.ndim == 3 or shown.shape[1] == 1)

    if not inv.kernel_epochs:
        raise KernelscopeError("no kernel snapshots in this run (kernels/epoch_*.npz is missing)")
    layer = _first_layer(inv)
    by_epoch = {}
    for epoch in inv.kernel_epochs:
        arrays = inv.kernels(epoch)
        if layer not in arrays:
            raise KernelscopeError(suggest(layer, arrays, what=f"layer in kernels/epoch_{epoch:03d}.npz"))
        by_epoch[epoch] = arrays[layer]
    first, last = inv.kernel_epochs[0], inv.kernel_epochs[-1]
    shape = by_epoch[last].shape
    body: list[H.Html] = []
    status, reason = "ok", ""
    if first != 0:
        status, reason = "partial", "no snapshot at initialisation (kernels/epoch_000.npz); the earliest is shown"
    lim_first = symmetric_limit([by_epoch[first]])
    lim_last = symmetric_limit([by_epoch[last]])
    label_first = "initialisation" if first == 0 else f"epoch {first}"
    body.append(H.figure(grid(by_epoch[first], f"{layer} at {label_first}"),
                         alt=f"first-layer kernels at {label_first}",
                         caption=f"Layer {layer}, {shape[0]} kernels of {shape[2]}x{shape[3]} "
                                 f"({_channels_note(shape[1])}), at {label_first}; "
                                 f"colour limit +-{H.format_number(lim_first)}."))
    body.append(H.figure(grid(by_epoch[last], f"{layer} after epoch {last}"),
                         alt=f"first-layer kernels after epoch {last}",
                         caption=f"The same kernels after epoch {last}; colour limit +-{H.format_number(lim_last)}"
                                 " (each grid has its own symmetric limit, diverging around 0)."))
    if len(by_epoch) > 1:
        drift = kernel_drift(by_epoch)
        body.append(H.figure(kernel_evolution(by_epoch), alt="kernel evolution over epochs",
                             caption="Six kernels across the recorded epochs (one colour limit per row), and how "
                                     "far every kernel has moved from its initial value."))
        body.append(H.how(f"relative distance ||k - k_init|| / ||k_init|| per kernel; after epoch {last}: "
                          f"median {H.format_number(float(np.median(drift[-1])))}, min "
                          f"{H.format_number(float(drift[-1].min()))}, max {H.format_number(float(drift[-1].max()))}",
                          control=f"the same kernels at {label_first} (distance 0)"))
    return H.Section(id=f"{prefix}kernels", title=f"First-layer kernels ({layer})", body=body, status=status,
                     reason=reason, level=level)


def _channels_note(channels: int) -> str:
    if channels == 1:
        return "one input channel"
    if channels == 3:
        return "3 input channels, drawn as RGB with zero at mid-grey"
    return f"{channels} input channels, shown as their mean"


def _featuremaps_section(inv: Run, *, level: int, prefix: str, n_images: int = 2) -> H.Section:
    from kernelscope.report.figures.channels import feature_maps_figure

    if not inv.feature_map_epochs:
        raise KernelscopeError("no feature-map snapshots in this run (featuremaps/epoch_*.npz is missing)")
    if not inv.has_probe:
        raise KernelscopeError("no probe images in this run (probe.npz is missing or unreadable)")
    _, raw, labels = inv.probe()
    classes = inv.classes
    last = inv.feature_map_epochs[-1]
    maps_last = inv.feature_maps(last)
    body: list[H.Html] = []
    for index in range(min(n_images, len(raw))):
        label = int(labels[index]) if index < len(labels) else -1
        name = classes[label] if 0 <= label < len(classes) else str(label)
        body.append(H.figure(
            feature_maps_figure({k: v[index] for k, v in maps_last.items()}, raw[index], max_channels=16,
                                title=""),
            alt=f"feature maps of probe image {index}",
            caption=f"Probe image {index} (class {name}) and its maps at every recorded conv layer after "
                    f"epoch {last} (first 16 channels per layer; one colour scale per layer, diverging around 0 "
                    "and symmetric when the layer has negative values)."))
    if 0 in inv.feature_map_epochs and last != 0:
        maps_init = inv.feature_maps(0)
        body.append(H.figure(
            feature_maps_figure({k: v[0] for k, v in maps_init.items()}, raw[0], max_channels=16, title=""),
            alt="feature maps of probe image 0 at initialisation",
            caption="Control: the same image through the network at initialisation (epoch 0)."))
    body.append(H.how("maps recorded by the training recorder on the run's fixed probe images (probe.npz), "
                      "pre-activation conv outputs as stored in featuremaps/epoch_*.npz",
                      control="the same probe image at initialisation (epoch 0)"))
    return H.Section(id=f"{prefix}featuremaps", title="Feature maps of the probe images", body=body, level=level)


# --------------------------------------------------------------------------------------------
# Sections from the other analyses (atlas, channels, parts)
# --------------------------------------------------------------------------------------------


def _analysis_section(name: str, inv: Run, result: Any, *, level: int, prefix: str) -> H.Section:
    from kernelscope.report import sections

    return getattr(sections, f"{name}_section")(inv, result, level=level, prefix=prefix)


_TITLES = {
    "operation": "The operation: cross-correlation, step by step",
    "training": "Training",
    "kernels": "First-layer kernels",
    "atlas": "Kernel atlas: learned kernels against the classical bank",
    "featuremaps": "Feature maps of the probe images",
    "patches": "Top patches per channel",
    "receptive": "Receptive fields",
    "visualize": "What each channel wants to see",
    "dissect": "Concept detectors (Network Dissection)",
    "shift": "Distribution shift: faces in, objects out",
    "parts": "Part detectors (occlusion)",
}


def _check_analyses(analyses: Iterable[str] | None) -> list[str]:
    if analyses is None:
        return list(ANALYSES)
    if isinstance(analyses, str):
        analyses = [a.strip() for a in analyses.split(",") if a.strip()]
    chosen = []
    for name in analyses:
        if name not in ANALYSES:
            raise KernelscopeError("analyses (--only): " + suggest(name, ANALYSES, what="section"))
        chosen.append(name)
    return chosen


def run_sections(run_dir: str | os.PathLike, *, analyses: Iterable[str] | None = None,
                 results: Mapping[str, Any] | None = None, strict: bool = False, level: int = 2,
                 prefix: str = "", progress: bool = True) -> tuple[Run, list[H.Section]]:
    """The sections of one run (all except "operation"), each guarded; see :func:`build_report`."""
    from kernelscope._progress import progress as _progress

    inv = inspect_run(run_dir)
    chosen = [a for a in _check_analyses(analyses) if a != "operation"]
    results = dict(results or {})
    sections = [_run_summary(inv, level=level, prefix=prefix)]
    sub = level
    for name in _progress(chosen, desc="report sections", disable=None if progress else True):
        title = _TITLES[name]
        result = results.get(name)
        if name == "training":
            build = lambda: _training_section(inv, level=sub, prefix=prefix)  # noqa: E731
        elif name == "kernels":
            build = lambda: _kernels_section(inv, level=sub, prefix=prefix)  # noqa: E731
        elif name == "featuremaps":
            build = lambda: _featuremaps_section(inv, level=sub, prefix=prefix)  # noqa: E731
        else:
            build = (lambda name=name, result=result:  # noqa: E731
                     _analysis_section(name, inv, result, level=sub, prefix=prefix))
        section = guarded(f"{prefix}{name}", title, build, strict=strict, level=sub)
        if section is not None:
            sections.append(section)
    return inv, sections


def write_report(out_path: str | os.PathLike, sections: list[H.Section], *, title: str,
                 subtitle: str | None = None, headline: H.Html | None = None) -> Path:
    """Write the sections as one self-contained HTML file, atomically."""
    from kernelscope._io import write_bytes

    out_path = Path(out_path)
    if out_path.exists() and out_path.is_dir():
        raise KernelscopeError(f"--out {str(out_path)!r} is a directory; give the path of an .html file")
    page = H.document(title, sections, subtitle=subtitle, headline=headline)
    path = write_bytes(out_path, page.encode("utf-8"))
    _shareable(path)
    return path


def _shareable(path: Path) -> None:
    """Give the file the usual permissions (0666 minus umask): atomic writes create it 0600."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def export_figures(sections: list[H.Section], folder: str | os.PathLike) -> list[Path]:
    """Write every figure embedded in ``sections`` as ``<section id>-<n>.png`` in ``folder`` (for READMEs)."""
    import base64
    import re

    from kernelscope._io import write_bytes

    folder = Path(folder)
    written = []
    for section in sections:
        html_text = "".join(section.body)
        uris = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)
        for index, data in enumerate(uris, start=1):
            written.append(write_bytes(folder / f"{section.id}-{index}.png", base64.b64decode(data)))
            _shareable(written[-1])
    return written


def build_report(run_dir: str | os.PathLike, out_path: str | os.PathLike, *,
                 analyses: Iterable[str] | None = None, results: Mapping[str, Any] | None = None,
                 strict: bool = False, title: str | None = None, progress: bool = True,
                 figures_dir: str | os.PathLike | None = None) -> ReportResult:
    """Write the self-contained HTML report of a run directory.

    Parameters
    ----------
    run_dir : str or PathLike
        A run directory (see ``docs/run-directory.md``).
    out_path : str or PathLike
        The HTML file to write (atomically).
    analyses : iterable of str, optional
        Which sections to include (default: all of :data:`ANALYSES`); a comma-separated string works too.
    results : dict, optional
        Precomputed analysis results by section name ("atlas", "dissect", "shift", "parts", ...), used
        instead of computing them again.
    strict : bool
        Re-raise unexpected exceptions instead of reporting them in the section (for tests).
    figures_dir : str or PathLike, optional
        Also write every figure as a PNG file there (``<section>-<n>.png``).

    Returns
    -------
    ReportResult
        The path written, the sections with their status, and the run's problems.

    Raises
    ------
    KernelscopeError
        When ``run_dir`` is not a readable run (see :func:`~kernelscope.train.rundir.inspect_run`)
        or an analysis name is unknown.

    Examples
    --------
    >>> build_report("/nonexistent/run", "report.html")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: run directory '/nonexistent/run' does not exist
    """
    start = time.perf_counter()
    chosen = _check_analyses(analyses)
    inv, sections = run_sections(run_dir, analyses=chosen, results=results, strict=strict, progress=progress)
    if "operation" in chosen:
        sections.insert(0, guarded("operation", _TITLES["operation"], operation_section, strict=strict))
    data = (inv.manifest.get("dataset") or {}).get("name", "?")
    model = (inv.manifest.get("model") or {}).get("name", "?")
    title = title or f"kernelscope report: {model} on {data}"
    path = write_report(out_path, sections, title=title, subtitle=f"Run directory: {inv.path}")
    if figures_dir is not None:
        export_figures(sections, figures_dir)
    return ReportResult(path=path, sections=sections, problems=list(inv.problems),
                        seconds=time.perf_counter() - start)
