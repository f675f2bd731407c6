"""``kernelscope patches``: the top-k dataset patches of every channel of a layer."""

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
)


@click.command("patches")
@source_options
@click.option("--layer", default=None, help="Layer (default: the deepest Conv2d).")
@click.option("--images", "image_set", default=None,
              help="Image set (default: 'test' for a run, else 'faces'), .npy/.npz, or a folder of images.")
@click.option("-k", "k", type=click.IntRange(1, 100), default=9, show_default=True, help="Patches per channel.")
@at_option
@scale_options
@out_option
def command(source, arch, epoch, mean, std, trust_code, device, batch_size, layer, image_set, k, at,
            workers, checkpoint_every, resume, out_dir):
    """Top-k patches per channel of SOURCE's layer, cropped by the receptive field (one streaming pass).

    Writes patches_<layer>.png, patches.json (values, images, positions) and patches.npz (crops).
    Runs sharded under ``torchrun --standalone --nproc_per_node=N -m kernelscope patches ...``.
    """
    from kernelscope._io import write_json, write_npz
    from kernelscope.analysis.toppatches import top_patches
    from kernelscope.report.figures.channels import top_patches_figure
    from kernelscope.report.figures.common import save_figure

    scale = Scale.start(device, out_dir, checkpoint_every, resume)
    src = open_from_options(source, arch, epoch, mean, std, trust_code, scale.device)
    layer = src.pick_layer(layer)
    images, _, description = open_images(src, image_set or ("test" if src.run is not None else "faces"))
    checkpoint = scale.checkpoint(command="patches", source=src.label, layer=layer, images=description, k=k,
                                  at=at, batch_size=batch_size)
    result = top_patches(src.model, layer, images, k=k, batch_size=batch_size, at=at, context=scale.context,
                         workers=workers, checkpoint=checkpoint)
    out = Path(out_dir)
    if scale.is_main:
        save_figure(top_patches_figure(result), out / f"patches_{layer}.png")
        write_npz(out / "patches.npz", crops=result.crops, values=result.values, image_index=result.image_index,
                  position=result.position)
        write_json(out / "patches.json", {"source": src.label, "images": description, **result.to_dict()})
    skipped = f", {len(result.data['skipped'])} unreadable skipped" if result.data and result.data["skipped"] else ""
    scale.echo(f"top-{result.k} patches of {result.values.shape[0]} channels of {result.read} over "
               f"{result.n_images} images ({description}{skipped}) -> {out}/patches_{layer}.png")
    scale.close(checkpoint)
