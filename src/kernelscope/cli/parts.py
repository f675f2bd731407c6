"""``kernelscope parts``: which channels detect eyes, nose, mouth? Occlusion part selectivity of a layer."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from kernelscope.cli._channels import (
    Scale,
    at_option,
    open_from_options,
    scale_options,
    source_options,
)
from kernelscope.errors import KernelscopeError
from kernelscope.sources import resize_images, resize_masks

#: Mask sources that need no file.
MASK_SOURCES = ("landmarks", "haar")


def _fill(value: str) -> str | float:
    if value in ("zero", "mean", "blur"):
        return value
    try:
        return float(value)
    except ValueError:
        raise KernelscopeError(f"--fill: expected 'zero', 'mean', 'blur' or a number, got {value!r}") from None


def _target(spec: str | None, classes: list[str] | None) -> int | None:
    """The class whose probability is the output effect: --target, else "face" when the classes have it."""
    if spec is None:
        return classes.index("face") if classes and "face" in classes else None
    if classes and spec in classes:
        return classes.index(spec)
    try:
        return int(spec)
    except ValueError:
        from kernelscope.errors import suggest

        raise KernelscopeError(f"--target: {suggest(spec, classes or [], what='class')}; or a class index") from None


def _load_raw(spec: str) -> tuple[np.ndarray, str]:
    if spec == "faces":
        from kernelscope.data.faces import lfw_faces

        return lfw_faces(), "the 100 lfw_subset faces (25x25 grey)"
    path = Path(spec)
    if not path.is_file():
        raise KernelscopeError(f"--images: expected 'faces' or an .npy/.npz file of face crops, got {spec!r}")
    from kernelscope.data.formats import read_image_array

    raw = np.asarray(read_image_array(path), dtype=np.float32)
    if raw.ndim == 3:
        raw = raw[:, None]
    if raw.ndim != 4 or raw.shape[1] not in (1, 3) or raw.shape[0] < 2:
        raise KernelscopeError(f"--images: expected (N, H, W) or (N, 1|3, H, W) with N >= 2, got {raw.shape}")
    if raw.min() < 0 or raw.max() > 1:
        raise KernelscopeError(f"--images: expected values in [0, 1], got [{raw.min():.3g}, {raw.max():.3g}]")
    return raw, str(path)


def _masks(spec: str, raw: np.ndarray, size: tuple[int, int], parts: list[str], radius: float,
           n_all: int) -> tuple[dict[str, np.ndarray], str]:
    """Masks for ``raw`` (the first images of a set of ``n_all``; file masks for all of them are cut to match)."""
    from kernelscope.analysis.occlusion import PART_NAMES, landmark_part_masks
    from kernelscope.errors import suggest

    if spec == "landmarks":
        unknown = [p for p in parts if p not in PART_NAMES]
        if unknown:
            raise KernelscopeError(f"--parts: {suggest(unknown[0], PART_NAMES, what='part with landmarks')}")
        from kernelscope.models.onet import onet_predict

        landmarks = onet_predict(raw)["landmarks"]
        return landmark_part_masks(landmarks, size, parts=parts, radius=radius), \
            f"discs (radius {radius:.3g} of the side) at ONet's landmarks"
    if spec == "haar":
        from kernelscope.data.face_masks import face_part_masks

        found = face_part_masks(raw.mean(axis=1))
        masks = {k: resize_masks(v, size) for k, v in found.masks.items()}
        return masks, f"Haar cascades (with template fallback): {found.counts}"
    path = Path(spec)
    if not path.exists():
        raise KernelscopeError(f"--masks: expected 'landmarks', 'haar' or an .npz/.npy/folder, got {spec!r}")
    from kernelscope.data.face_masks import load_masks

    masks = {}
    for name, mask in load_masks(path).items():
        mask = np.asarray(mask)
        if mask.ndim == 4 and mask.shape[1] == 1:
            mask = mask[:, 0]
        if mask.ndim == 3 and mask.shape[0] == n_all != len(raw):
            mask = mask[:len(raw)]  # --limit applies to the masks too
        if mask.ndim == 3 and mask.shape[1:] == raw.shape[2:] and tuple(raw.shape[2:]) != tuple(size):
            mask = resize_masks(mask.astype(bool), size)  # given at the images' size: scaled like them
        elif mask.ndim != 3 or tuple(mask.shape[1:]) != tuple(size):
            raise KernelscopeError(
                f"--masks: mask {name!r} has shape {tuple(mask.shape)}; expected (N, H, W) at the images' size "
                f"{tuple(raw.shape[2:])} or the model's input size {tuple(size)}"
            )
        masks[name] = mask
    return masks, str(path)


@click.command("parts")
@source_options
@click.option("--parts", "parts_spec", default="eyes,nose,mouth", show_default=True,
              help="Comma-separated parts: eyes, left_eye, right_eye, nose, mouth (landmarks), or mask names.")
@click.option("--layer", default=None, help="Layer (default: conv3 for onet, else the deepest Conv2d).")
@click.option("--images", "image_spec", default="faces", show_default=True,
              help="'faces' (the bundled lfw_subset faces) or an .npy/.npz of face crops in [0, 1].")
@click.option("--masks", "mask_spec", default="landmarks", show_default=True,
              help="'landmarks' (ONet's), 'haar' (eyes, mouth) or an .npz/.npy/folder of masks.")
@click.option("--limit", type=click.IntRange(2, None), default=None, help="Use only the first N images.")
@click.option("--fill", "fill_spec", default="zero", show_default=True,
              help="Occluder value after normalisation: zero (the data mean; mid-grey for onet), mean "
                   "(each image's mean), blur (the image blurred, sigma = side/8) or a number. Keep it neutral: "
                   "black or white occluders draw edges of their own.")
@click.option("--controls", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Control placements per image and part.")
@click.option("--margin", type=float, default=0.15, show_default=True,
              help="Detector: part drop - control drop > margin and its CI excludes 0.")
@click.option("--radius", type=click.FloatRange(0, 0.5, min_open=True), default=4 / 48,
              show_default="4/48", help="Landmark disc radius, as a fraction of the image side.")
@click.option("--boot", type=click.IntRange(100, 100000), default=1000, show_default=True,
              help="Bootstrap resamples over images.")
@click.option("--top", type=click.IntRange(1, 10), default=3, show_default=True, help="Channels per part in the figure.")
@click.option("--target", default=None,
              help="Class whose probability is the output effect (name or index; default: 'face' when the "
                   "model has it, else none).")
@click.option("--no-init", is_flag=True, help="Skip the control: the same protocol on the network at initialisation.")
@click.option("--seed", type=int, default=0, show_default=True)
@at_option
@scale_options
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Folder for parts.json, parts.csv and parts.png (created).")
def command(source, arch, epoch, mean, std, trust_code, device, batch_size,
            parts_spec, layer, image_spec, mask_spec, limit, fill_spec,
            controls, margin, radius, boot, top, target, no_init, seed, at, workers, checkpoint_every, resume,
            out_dir):
    """Part detectors in SOURCE (a run directory, a model file with --arch, or 'onet'), by occlusion.

    For every channel of the layer: the relative drop of its spatial maximum when
    a part is covered, against equal-area occlusions elsewhere on the same faces,
    with a bootstrap interval over images; and the face probability intact vs.
    occluded. Writes parts.json, parts.csv and parts.png. Runs sharded under
    ``torchrun --standalone --nproc_per_node=N -m kernelscope parts ...`` (the images are in memory:
    their masks come from them).
    """
    from kernelscope._io import write_json
    from kernelscope.analysis.parts import detector_panels, part_selectivity
    from kernelscope.cli._channels import write_csv
    from kernelscope.report.figures.common import save_figure
    from kernelscope.report.figures.parts import parts_figure

    parts = [p.strip() for p in parts_spec.split(",") if p.strip()]
    if not parts:
        raise KernelscopeError(f"--parts: expected comma-separated part names, got {parts_spec!r}")
    fill = _fill(fill_spec)
    if workers:
        raise KernelscopeError("--workers decodes an image folder; parts takes a named image set or .npy/.npz "
                               "(its part masks come from the images): leave --workers out")
    scale = Scale.start(device, out_dir, checkpoint_every, resume)
    src = open_from_options(source, arch, epoch, mean, std, trust_code, scale.device)
    model, label, classes = src.model, src.label, src.classes
    target_index = _target(target, classes)
    if layer is None:  # ONet's eye channels are in conv3 (docs/parts.md); else the deepest conv layer
        layer = "conv3" if src.kind == "pretrained" and "conv3" in src.conv_layers else src.pick_layer(None)
    raw, description = _load_raw(image_spec)
    n_all = len(raw)
    if limit is not None:
        raw = raw[:limit]
    inputs = src.normalise(src.fit(raw))  # (N, C, H, W) as the model takes them
    size = tuple(inputs.shape[2:])
    masks, mask_description = _masks(mask_spec, raw, size, parts, radius, n_all)
    checkpoint = scale.checkpoint(command="parts", source=label, layer=layer, images=description,
                                  masks=mask_description, parts=parts, fill=str(fill), controls=controls,
                                  seed=seed, target=target_index, at=at, batch_size=batch_size)
    run = dict(context=scale.context, checkpoint=checkpoint)
    result = part_selectivity(model, inputs, masks, layer=layer, parts=parts, fill=fill, n_controls=controls,
                              margin=margin, n_boot=boot, seed=seed, target=target_index, at=at,
                              batch_size=batch_size, **run)
    init = None
    if not no_init:  # the control: the same layer, images, masks and occluders at initialisation
        init = part_selectivity(src.init_model(seed), inputs, masks, layer=layer, parts=parts, fill=fill,
                                n_controls=controls, margin=margin, n_boot=boot, seed=seed, target=None, at=at,
                                batch_size=batch_size, name="parts-init", **run)
    if not scale.is_main:
        scale.close(checkpoint)
        return
    display = resize_images(raw, (raw.shape[1], *size))
    panels = detector_panels(model, result, inputs, masks, top=top)
    out = Path(out_dir)
    save_figure(parts_figure(result, display, masks, panels, title=f"{label}, layer {layer}"), out / "parts.png")
    write_csv(out / "parts.csv", result.table())
    target_name = None if target_index is None else (
        classes[target_index] if classes and 0 <= target_index < len(classes) else f"class {target_index}")
    record = {"source": label, "images": description, "masks": mask_description, "target_class": target_name,
              **result.to_json()}
    if init is not None:
        record["init"] = {"what": "the same protocol on the network at initialisation (a run's epoch 0, else "
                                  "PyTorch's default init)", "summary": init.summary()}
    write_json(out / "parts.json", record)
    for part, info in result.summary().items():
        best = info["best"]
        line = f"{part}: {info['n_detectors']} detector(s) of {result.channels} channels in {result.read}"
        if best["channel"] is not None:
            line += (f"; best channel {best['channel']}: drop {best['part_drop']:.0%} vs {best['control_drop']:.0%} "
                     f"for controls (difference {best['selectivity']:.2f}, 95% CI {best['ci'][0]:.2f}.."
                     f"{best['ci'][1]:.2f})")
        if "output" in info:
            o = info["output"]
            line += (f"; p({target_name}) {o['intact']:.3f} intact, {o['occluded']:.3f} occluded, "
                     f"{o['control']:.3f} with controls")
        if init is not None:
            init_best = init.best(part)
            line += f"; at init {len(init.detectors(part))} detector(s)"
            if init_best["channel"] is not None:
                line += f", best difference {init_best['selectivity']:.2f}"
        click.echo(line)
    click.echo(f"wrote {out / 'parts.json'}, {out / 'parts.csv'}, {out / 'parts.png'}")
    scale.close(checkpoint)
