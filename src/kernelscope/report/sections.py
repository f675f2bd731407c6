"""Report sections that show the other analyses: atlas, top patches, receptive fields,
dissection, distribution shift and part detectors.

Each ``<name>_section(inv, result, *, level, prefix)`` takes the run's
:class:`~kernelscope.train.rundir.Run` (from ``inspect_run``) and, optionally, a
precomputed result of that analysis; without one it computes the analysis from the
run when the run makes that possible, and raises
:class:`~kernelscope.errors.KernelscopeError` (shown as a one-line note) when not.
The analyses themselves live in ``kernelscope.analysis``; an ``ImportError`` here
means the capability is not installed, and the report says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.report import html as H
from kernelscope.train.rundir import Run

__all__ = ["atlas_section", "patches_section", "receptive_section", "dissect_section", "shift_section",
           "parts_section", "parts_contrast_section", "face_network_section", "visualize_section"]


def _source(inv: Run):
    """The run opened as CHANNELS' analysis source (model at the last checkpoint, normalisation, data)."""
    if not inv.checkpoint_epochs:
        raise KernelscopeError("no checkpoint in this run (checkpoints/epoch_*.pt is missing): the model-based "
                               "analyses need the trained weights")
    from kernelscope.sources import open_source

    return open_source(inv.path)


def atlas_section(inv: Run, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Each first-layer kernel beside its best classical match; class fractions against the controls."""
    from kernelscope.analysis.atlas import CLASSES, atlas_of

    if result is None:
        if not inv.kernel_epochs:
            raise KernelscopeError("no kernel snapshots in this run: the atlas needs kernels/epoch_*.npz")
        result = atlas_of(inv.path)
    o, c, kh, kw = result.shape
    body: list[H.Html] = []
    nulls = list(result.control_fractions)
    rows = []
    for cls in CLASSES:
        if cls == "gabor-like" and "gabor" not in result.thresholds:
            continue
        rows.append([cls, result.counts.get(cls, 0), result.fractions.get(cls, 0.0),
                     *[result.control_fractions[n].get(cls, float("nan")) for n in nulls]])
    body.append(H.table(["class", "count", "fraction",
                         *[f"{n} control ({result.control_sizes.get(n, '?')} kernels)" for n in nulls]], rows,
                        caption=f"Layer {result.layer} after epoch {result.epoch}: {o} kernels of "
                                f"{c}x{kh}x{kw}, classified against the controls"))
    data = result.to_dict()
    thresholds = ", ".join(f"{k} {H.format_number(v)}" for k, v in result.thresholds.items()
                           if v is not None and np.isfinite(v))
    controls = data.get("control_median_best_match") or {}
    body.append(H.how(
        f"per kernel (mean removed, unit norm): best |cosine| against the classical bank over the 8 "
        f"rotations/flips and small shifts, a free-centre Gabor fit (R^2), spectral shape; a class is given only "
        f"when its score clears the p{result.percentile:g} of the {', '.join(result.threshold_nulls)} nulls "
        f"(thresholds: {thresholds}); median best match {H.format_number(data.get('median_best_match'))}",
        control="median best match of the controls: " + ", ".join(
            f"{n} {H.format_number(v)}" for n, v in controls.items() if v is not None)))
    from kernelscope.report.figures.atlas import (
        evolution_figure,
        match_grid_figure,
        null_distributions_figure,
    )

    body.append(H.figure(match_grid_figure(result), alt="each kernel beside its best classical match",
                         caption="Each learned kernel (left) beside its best classical match (right), titled "
                                 "with its class and score."))
    body.append(H.figure(null_distributions_figure(result), alt="scores against the null distributions",
                         caption="Each score's distribution in every null (lines), the learned kernels' "
                                 "scores, and the class threshold."))
    if result.evolution is not None and len(result.evolution.epochs) > 1:
        body.append(H.figure(evolution_figure(result.evolution), alt="the atlas over training",
                             caption="Class fractions, median scores and drift from initialisation at every "
                                     "recorded epoch (epoch 0 = the initialisation control)."))
    ev = result.evolution
    if ev is not None and len(ev.epochs) > 1:
        body.append(H.table(["epoch", *[f"{cls} fraction" for cls in ev.fractions], "median best match"],
                            [[e, *[ev.fractions[cls][i] for cls in ev.fractions], ev.median_match[i]]
                             for i, e in enumerate(ev.epochs)],
                            caption="Over training (thresholds of the final atlas held fixed); epoch 0 is the "
                                    "initialisation control"))
    for note_text in result.notes:
        body.append(H.note(note_text, kind="info"))
    return H.Section(id=f"{prefix}atlas", title="Kernel atlas: learned kernels against the classical bank",
                     body=body, level=level)


def patches_section(inv: Run, result: Any = None, *, level: int = 2, prefix: str = "",
                    k: int = 6, limit: int = 1000) -> H.Section:
    """Top-k dataset patches per channel (first and last conv layer), cropped by the receptive field."""
    from kernelscope.analysis.toppatches import top_patches
    from kernelscope.report.figures.channels import top_patches_figure

    body: list[H.Html] = []
    if result is None:
        src = _source(inv)
        x, raw, description = src.images("test", limit=limit)
        layers = inv.conv_layers
        chosen = [layers[0], layers[-1]] if len(layers) > 1 else layers
        result = {layer: top_patches(src.model, layer, x, k=k, display=raw) for layer in chosen}
    else:
        description = "the given images"
    for layer, patches in result.items():
        body.append(H.figure(top_patches_figure(patches, max_channels=16), alt=f"top patches of {layer}",
                             caption=f"Layer {layer}: for each channel (rows, first 16), the {patches.crops.shape[1]} "
                                     f"patches of {description} that activate it most, cropped by the "
                                     "receptive field of the maximising position; the number is the activation."))
    body.append(H.how("one streaming pass over the images keeps each channel's running top-k spatial maxima; the "
                      "crop is the theoretical receptive field of the maximising unit (grey outside the image)"))
    return H.Section(id=f"{prefix}patches", title="Top patches per channel", body=body, level=level)


def receptive_section(inv: Run, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Theoretical receptive field per layer (with the formula) and the effective field of the deepest conv."""
    from kernelscope.analysis.receptive import FORMULA, effective_receptive_field, receptive_fields
    from kernelscope.report.figures.channels import erf_figure

    src = _source(inv)
    layer = src.pick_layer(None)
    images, _, description = src.images("test", limit=64)
    shape = tuple(images.shape[1:])
    table = receptive_fields(src.model, shape)
    erf = effective_receptive_field(src.model, layer, images, input_shape=shape)
    rows = [[f.layer, f.kind, f"{f.kernel[0]}x{f.kernel[1]}", f.stride[0], f.padding[0], f.dilation[0],
             f"{f.size[0]}x{f.size[1]}", f.jump[0], f.start[0]] for f in table]
    body = [
        H.table(["layer", "kind", "kernel", "stride", "padding", "dilation", "receptive field", "jump", "start"],
                rows, caption=f"Theoretical receptive fields for a {shape[1]}x{shape[2]} input"),
        H.how(f"layer by layer: {FORMULA}"),
        H.figure(erf_figure(erf), alt=f"effective receptive field of {layer}", width=520,
                 caption=f"Effective receptive field of the centre unit of {layer}, averaged over {erf.n_images} "
                         f"images ({description}): 4 sigma = {erf.effective_size[0]:.1f} x "
                         f"{erf.effective_size[1]:.1f} px against the theoretical {erf.theoretical.size[0]} x "
                         f"{erf.theoretical.size[1]}; {100 * erf.mass_inside:.1f}% of the gradient mass lies inside "
                         "the theoretical field."),
        H.how("mean |d unit / d input| over the images (Luo et al. 2016), a 2-D Gaussian fitted by moments",
              control="the theoretical field (the box): outside it the gradient is exactly 0"),
    ]
    return H.Section(id=f"{prefix}receptive", title="Receptive fields", body=body, level=level)


def visualize_section(inv: Run, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Renders of the deepest conv layer's channels beside their top patches and projections, with the controls
    (``result``: a :class:`~kernelscope.analysis.visualize.Visualization`; computed small when not given)."""
    from kernelscope.report.visualize import visualization_section

    if result is None:
        from kernelscope.analysis.visualize import visualize_source
        from kernelscope.models.layers import get_layer

        src = _source(inv)
        layer = src.pick_layer(None)
        channels = range(min(8, get_layer(src.model, layer).out_channels))
        result = visualize_source(src, layer=layer, channels=channels, limit=500, steps=64, starts=2, k=3)
    return visualization_section(result, level=level, prefix=prefix)


def dissect_section(inv: Run, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Network Dissection IoU of every channel with the eye and mouth masks, against chance.

    ``result`` is ``{layer: DissectResult}`` (what the demo computes); without it the
    dissection is computed here when the run was trained on the bundled faces.
    """
    if result is None:
        result = _dissect_faces_run(inv)
    if not result:
        raise KernelscopeError("no dissection result")
    rows = []
    concepts: list[str] = []
    first = next(iter(result.values()))
    for layer, r in result.items():
        for concept in r.concepts:
            if concept not in concepts:
                concepts.append(concept)
            t = r.trained["concepts"][concept]
            c = int(np.argmax(t["iou"]))
            init = r.init["concepts"][concept] if r.init is not None else None
            rows.append([layer, concept, c, float(t["iou"][c]), float(t["chance"][c]), float(t["null_p95"][c]),
                         float(np.max(init["iou"])) if init is not None else float("nan"),
                         len(r.detectors().get(concept, [])), len(t["iou"])])
    body = [H.table(["layer", "concept", "best channel", "IoU", "chance IoU", "permutation p95",
                     "best IoU at init", "detectors", "channels"], rows,
                    caption="The most concept-aligned channel of every layer")]
    body.append(H.how(
        f"each channel thresholded at the top {first.top_fraction:.1%} of its activations over the "
        f"{first.n_images} faces, maps upsampled bilinearly to 25x25, IoU with the {', '.join(concepts)} masks "
        f"pooled over the dataset; a detector needs IoU > {first.iou_threshold}",
        control=f"chance IoU for the mask coverage, a permutation null ({first.n_permutations} shuffles of "
                "masks across images, 95th percentile) and the same network at initialisation"))
    counts = first.mask_counts or {}
    if counts:
        body.append(H.paragraph("Mask sources: " + "; ".join(
            f"{concept}: " + ", ".join(f"{n} from {src}" for src, n in c.items()) for concept, c in counts.items())
            + " (Haar cascades on 8x upscaled crops, template ellipses where the cascade finds nothing)."))
    from kernelscope.report.figures.channels import dissect_figure

    last = list(result)[-1]
    body.append(H.figure(dissect_figure(result[last]), alt=f"dissection IoU per channel of {last}",
                         caption=f"IoU of every channel of {last} with each concept, against chance, the "
                                 "permutation null and the network at initialisation."))
    return H.Section(id=f"{prefix}dissect", title="Concept detectors (Network Dissection)", body=body,
                     level=level)


def _dissect_faces_run(inv: Run) -> dict[str, Any]:
    data = (inv.manifest.get("dataset") or {}).get("name")
    if data != "faces":
        raise KernelscopeError(f"dissection needs concept masks; this run's dataset is {data!r} (the bundled "
                               "'faces' have eye and mouth masks; run `kernelscope dissect` with your own masks)")
    from kernelscope.analysis.runs import dissect_of_run

    return dissect_of_run(inv.path, quick=False, seed=0)


def parts_contrast_section(result: Any, *, level: int = 2, prefix: str = "") -> H.Section:
    """The part-detector contrast: ONet, the easy faces net, the net whose task needs eyes, a random net."""
    part = result.get("part", "eyes")
    settings = result.get("settings", {})
    labels = {"onet": "MTCNN ONet (pretrained, 48x48 RGB)", "easy": "small net, face vs. non-face",
              "eyes": "small net, task that needs eyes", "random": "small net at random init (control)"}
    rows = []
    for name, m in result.get("models", {}).items():
        output = m.get("output") or {}
        ci = m.get("ci") or [float("nan"), float("nan")]
        rows.append([labels.get(name, name), f"{m.get('layer')}:{m.get('channel')}",
                     _f(m.get("part_drop")), _f(m.get("control_drop")), _f(m.get("selectivity")),
                     f"[{H.format_number(_f(ci[0]))}, {H.format_number(_f(ci[1]))}]",
                     bool(m.get("detector", False)), bool(m.get("detector_gated", False)),
                     sum((m.get("n_detectors") or {}).values()),
                     sum((m.get("n_detectors_gated") or {}).values()),
                     _f(output.get("intact")), _f(output.get("occluded")), _f(output.get("control")),
                     _f(m.get("test_accuracy"))])
    body = [
        H.paragraph("Does a face network have a channel that responds to an eye? Measured by occlusion: the drop "
                    f"of each channel's spatial-max activation when the {part} are covered, against the drop for "
                    "equal-area occlusions elsewhere on the same face. The honest answer depends on the task."),
        H.table(["network", "best layer:channel", f"{part} drop", "control drop", "selectivity",
                 "95% CI", "detector", "detector, gated", "detectors (all layers)",
                 "gated detectors (all layers)", "p(face) intact", f"p(face) {part} occluded",
                 "p(face) control occluded", "test accuracy"], rows,
                caption=f"The most {part}-selective channel of each network"),
        H.how(f"relative drop of the channel's spatial max over {_images(settings.get('images'))}; "
              f"selectivity = part drop - control drop; detector when selectivity > {settings.get('margin')} "
              f"and the bootstrap CI ({settings.get('n_boot')} resamples) excludes 0; gated: its part drop also "
              "lies beyond the equal-area controls' own 95% bootstrap interval; occluder fill "
              f"{settings.get('fill')!r} (the normalised data mean)",
              control=f"{settings.get('n_controls')} equal-area occlusions elsewhere on each face, and the same "
                      "small net at random initialisation"),
    ]
    from kernelscope.report.figures.parts import contrast_figure

    body.append(H.figure(contrast_figure(result), alt="part drop against control drop per network"))
    return H.Section(id=f"{prefix}parts", title="Part detectors: which face networks have eye channels",
                     body=body, level=level)


def _images(images: Any) -> str:
    if isinstance(images, dict):
        names = {"onet": "faces for ONet", "small": "held-out faces for the small nets"}
        return ", ".join(f"{n} {names.get(k, k)}" for k, n in images.items())
    return f"{images} images"


def _f(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _objects_text(network: dict[str, Any]) -> str:
    """What the bundled 'objects' are, and what the network-level scores say about them."""
    from kernelscope.data.faces import HELD_OUT_SEED

    text = (f"The objects are non-face patches held out from training: cut at new positions and scales (seed "
            f"{HELD_OUT_SEED}) from the same natural images as the training non-faces, none identical to a "
            "training patch. They are the network's own negative class, not a novel domain.")
    below = [f"{name} {v['auroc']:.3f}" for name, v in network.items() if v["auroc"] < 0.5]
    if below:
        text += (f" So network-level scores do not flag them: AUROC below 0.5 ({', '.join(below)}) means the "
                 "objects score higher than the faces, i.e. the network is more confident on them; it was "
                 "trained to call them non-face.")
    return text


def shift_section(inv: Run, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Channels that go quiet (or fire more) out of distribution; AUROC per channel and network-level."""
    from kernelscope.report.figures.channels import shift_figure

    if result is None:
        data = (inv.manifest.get("dataset") or {}).get("name")
        if data != "faces":
            raise KernelscopeError(f"the bundled shift report is faces in, objects out; this run's dataset is "
                                   f"{data!r} (run `kernelscope shift RUN --id ... --ood ...` with your own sets)")
        from kernelscope.analysis.runs import shift_of_run

        result = shift_of_run(inv.path, quick=False, seed=0)
    t = result.trained
    n_channels = len(t["channels"]["auroc"])
    body: list[H.Html] = [
        H.paragraph(f"In-distribution: {result.n_in} {result.names[0]}; out-of-distribution: {result.n_out} "
                    f"{result.names[1]}, at layer {result.layer} ({n_channels} channels). "
                    f"{len(t['quiet_on_ood'])} channels go quiet on the {result.names[1]} "
                    f"(channels {', '.join(map(str, t['quiet_on_ood'])) or 'none'}); "
                    f"{len(t['fire_more_on_ood'])} fire more "
                    f"(channels {', '.join(map(str, t['fire_more_on_ood'])) or 'none'})."),
        H.figure(shift_figure(result), alt="per-channel AUROC between faces and objects"),
    ]
    if result.names[1] == "objects":
        body.insert(1, H.paragraph(_objects_text(t["network"])))
    rows = []
    for name, v in t["network"].items():
        init = (result.init or {}).get("network", {}).get(name, {}) if result.init is not None else {}
        rows.append([name, v["auroc"], v["fpr_at_95_tpr"], init.get("auroc", float("nan")),
                     init.get("fpr_at_95_tpr", float("nan"))])
    body.append(H.table(["network score", "AUROC", "FPR at 95% TPR", "AUROC at init", "FPR at init"], rows,
                        caption="Network-level out-of-distribution scores (higher = more in-distribution)"))
    if result.init is not None:
        i = result.init
        body.append(H.paragraph(f"At initialisation: {len(i['quiet_on_ood'])} channels quiet, "
                                f"{len(i['fire_more_on_ood'])} fire more."))
    body.append(H.how("per channel, the spatial maximum of its map as a score for in-distribution: AUROC with a "
                      "bootstrap 95% interval; 'quiet' when the interval lies above 0.5, 'fires more' when below",
                      control="the same network at initialisation, scored the same way"))
    for note_text in t.get("notes", []):
        body.append(H.note(note_text, kind="info"))
    return H.Section(id=f"{prefix}shift", title="Distribution shift: faces in, objects out", body=body,
                     level=level)


def parts_section(inv: Run, result: Any = None, *, level: int = 2, prefix: str = "") -> H.Section:
    """Occlusion part selectivity: the contrast of face networks (``result`` from ``part_contrast``)."""
    if result is None:
        raise KernelscopeError("part detectors need part landmarks or masks: run `kernelscope parts RUN --out DIR` "
                               "for this run; `kernelscope demo` shows the contrast of four face networks")
    return parts_contrast_section(result, level=level, prefix=prefix)


def face_network_section(result: Any, *, level: int = 2, prefix: str = "") -> H.Section:
    """A real pretrained face network on real photos (:func:`kernelscope.analysis.face_network.face_network`)."""
    from kernelscope.report.figures.atlas import atlas_figures
    from kernelscope.report.figures.channels import shift_figure, top_patches_figure

    s = result.summary()
    a = s["atlas"]
    body: list[H.Html] = [
        H.paragraph(f"{result.source}: a face-recognition network trained on about 3 million faces, measured here on "
                    f"real photographs. Faces: {result.images['faces']} Animal faces: {result.images['animal faces']} "
                    f"Objects: {result.images['objects']}"),
        H.table(["kernels of " + a["layer"], "edge- or Gabor-like", *[f"{k} control" for k in a["controls"]]],
                [[a["n"], a["edge_or_gabor"], *a["controls"].values()]],
                caption="First layer: spatial classes against the nulls (smoothed random kernels score high too: "
                        "much of a classical look is smoothness)"),
    ]
    for stem, fig in atlas_figures(result.atlas).items():
        body.append(H.figure(fig, alt=f"{stem} of {result.source}", caption=stem.replace("_", " ")))
    body.append(H.figure(top_patches_figure(result.patches, max_channels=16), alt="top patches on face chips",
                         caption=f"Layer {result.patches.layer} ({result.patches.read}): the face-chip patches that "
                                 "activate each channel most (first 16 channels)."))
    rows = []
    for part in ("eyes", "mouth"):
        for layer, r in result.parts.items():
            best, init = r.best(part), result.parts_init[layer].best(part)
            rows.append([part, layer, best.get("channel"), _f(best.get("part_drop")), _f(best.get("control_drop")),
                         _f(best.get("selectivity")), len(r.detectors(part)), _f(init.get("selectivity")),
                         len(result.parts_init[layer].detectors(part))])
    body.append(H.table(["part", "layer", "best channel", "part drop", "control drop", "selectivity", "detectors",
                         "init: best selectivity", "init: detectors"], rows,
                        caption="Occlusion on real face chips: the most part-selective channel per layer"))
    body.append(H.how("relative drop of each channel's spatial max when the part is covered by a blurred copy of "
                      "the chip; selectivity = part drop - drop for equal-area occlusions elsewhere; detector when "
                      "selectivity > 0.15 and its bootstrap CI excludes 0",
                      control="8 equal-area occlusions elsewhere per face, and the same network at initialisation"))
    for name, r in result.shifts.items():
        t = r.trained
        body.append(H.paragraph(f"Faces against {name} at {r.read}: {len(t['quiet_on_ood'])} of "
                                f"{len(t['channels']['auroc'])} channels quieter on the {name}, "
                                f"{len(t['fire_more_on_ood'])} louder; at initialisation "
                                f"{len(r.init['quiet_on_ood'])} quieter, {len(r.init['fire_more_on_ood'])} louder."))
        body.append(H.figure(shift_figure(r), alt=f"faces against {name}", caption=f"Faces against {name}."))
    return H.Section(id=f"{prefix}facenet", title=f"A real face network: {result.source}", body=body, level=level)
