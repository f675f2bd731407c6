"""``kernelscope patches``: the top-k dataset patches of every channel of a layer."""

from __future__ import annotations

from pathlib import Path

import click

from kernelscope.cli._channels import at_option, open_from_options, out_option, source_options


@click.command("patches")
@source_options
@click.option("--layer", default=None, help="Layer (default: the deepest Conv2d).")
@click.option("--images", "image_set", default=None, help="Image set (default: 'test' for a run, else 'faces').")
@click.option("-k", "k", type=click.IntRange(1, 100), default=9, show_default=True, help="Patches per channel.")
@at_option
@out_option
def command(source, arch, epoch, mean, std, trust_code, device, batch_size, layer, image_set, k, at, out_dir):
    """Top-k patches per channel of SOURCE's layer, cropped by the receptive field (one streaming pass).

    Writes patches_<layer>.png, patches.json (values, images, positions) and patches.npz (crops).
    """
    from kernelscope._io import write_json, write_npz
    from kernelscope.analysis.toppatches import top_patches
    from kernelscope.report.figures.channels import top_patches_figure
    from kernelscope.report.figures.common import save_figure

    src = open_from_options(source, arch, epoch, mean, std, trust_code, device)
    layer = src.pick_layer(layer)
    inputs, raw, description = src.images(image_set or ("test" if src.run is not None else "faces"))
    result = top_patches(src.model, layer, inputs, k=k, display=raw, batch_size=batch_size, at=at)
    out = Path(out_dir)
    save_figure(top_patches_figure(result), out / f"patches_{layer}.png")
    write_npz(out / "patches.npz", crops=result.crops, values=result.values, image_index=result.image_index,
              position=result.position)
    write_json(out / "patches.json", {"source": src.label, "images": description, **result.to_dict()})
    click.echo(f"top-{result.k} patches of {result.values.shape[0]} channels of {result.read} over "
               f"{result.n_images} images ({description}) -> {out}/patches_{layer}.png")
