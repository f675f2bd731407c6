"""``kernelscope dissect``: Network Dissection of a layer with concept masks (eyes, mouth by default)."""

from __future__ import annotations

from pathlib import Path

import click

from kernelscope.cli._channels import (
    Scale,
    at_option,
    open_from_options,
    open_images,
    out_option,
    scale_options,
    source_options,
    write_csv,
)


@click.command("dissect")
@source_options
@click.option("--layer", default=None, help="Layer (default: the deepest Conv2d).")
@click.option("--images", "image_set", default="faces", show_default=True,
              help="Images the masks belong to: a named set, .npy/.npz, or a folder of images (in file order).")
@click.option("--masks", "masks_path", default=None,
              help="Concept masks: .npz (one array per concept), .npy, or DIR/<concept>/*.png. "
                   "Default with --images faces: eye and mouth masks from Haar cascades.")
@click.option("--permutations", type=click.IntRange(0, 1000), default=20, show_default=True,
              help="Mask shuffles for the permutation null.")
@click.option("--no-init", is_flag=True, help="Skip the initialisation control.")
@click.option("--seed", type=int, default=0, show_default=True)
@at_option
@scale_options
@out_option
def command(source, arch, epoch, mean, std, trust_code, device, batch_size,
            layer, image_set, masks_path, permutations, no_init, seed,
            at, workers, checkpoint_every, resume, out_dir):
    """Which channels of SOURCE's layer detect a concept? IoU per channel (top 0.5% threshold,
    IoU > 0.04 = detector) with chance IoU, a permutation null and the network at initialisation.

    Writes dissect.json, dissect.csv and dissect.png. Runs sharded under
    ``torchrun --standalone --nproc_per_node=N -m kernelscope dissect ...``.
    """
    from kernelscope._io import write_json
    from kernelscope.analysis.dissect import dissect
    from kernelscope.data.face_masks import check_masks, face_part_masks, load_masks
    from kernelscope.errors import KernelscopeError
    from kernelscope.report.figures.channels import dissect_figure
    from kernelscope.report.figures.common import save_figure

    scale = Scale.start(device, out_dir, checkpoint_every, resume)
    src = open_from_options(source, arch, epoch, mean, std, trust_code, scale.device)
    layer = src.pick_layer(layer)
    images, raw, description = open_images(src, image_set)
    counts = None
    if masks_path is not None:
        masks = load_masks(masks_path)
    elif image_set == "faces":
        found = face_part_masks(raw.mean(axis=1))  # grey; ONet's RGB faces are grey repeated
        masks, counts = found.masks, found.counts
    else:
        raise KernelscopeError(f"give --masks for image set {image_set!r} (built-in masks exist for 'faces')")
    size = tuple(images.inputs.shape[2:]) if images.inputs is not None else tuple(src.spec.shape[1:])
    masks = check_masks(masks, len(images), size)
    init = None if no_init else src.init_model(seed)
    checkpoint = scale.checkpoint(command="dissect", source=src.label, layer=layer, images=description,
                                  masks=str(masks_path), permutations=permutations, init=not no_init, seed=seed,
                                  at=at, batch_size=batch_size)
    result = dissect(src.model, layer, images, masks, init_model=init, n_permutations=permutations, seed=seed,
                     mask_counts=counts, at=at, batch_size=batch_size, context=scale.context, workers=workers,
                     checkpoint=checkpoint)
    if not scale.is_main:
        scale.close(checkpoint)
        return
    out = Path(out_dir)
    save_figure(dissect_figure(result), out / "dissect.png")
    write_csv(out / "dissect.csv", result.rows())
    write_json(out / "dissect.json", {"source": src.label, "images": description, **result.to_dict()})
    click.echo(f"read at {result.read}")
    for concept, info in result.to_dict()["summary"]["trained"].items():
        init_info = result.to_dict()["summary"]["init"]
        init_text = f"; at init best {init_info[concept]['best_iou']:.3f}" if init_info else ""
        click.echo(f"{concept}: best channel {info['best_channel']} IoU {info['best_iou']:.3f} "
                   f"(null p95 up to {info['max_null_p95']:.3f}), {info['n_detectors']} detector(s) "
                   f"IoU > {result.iou_threshold}{init_text}")
    if counts:
        click.echo("masks: " + ", ".join(f"{c} {v['cascade']} cascade + {v['template']} template"
                                          for c, v in counts.items()))
    if result.data and result.data["skipped"]:
        click.echo(f"{len(result.data['skipped'])} unreadable image(s) skipped (listed in dissect.json)")
    scale.close(checkpoint)
