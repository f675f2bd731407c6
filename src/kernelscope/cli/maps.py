"""``kernelscope maps``: every channel of the conv layers for one image, and across epochs for a run."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from kernelscope.cli._channels import (
    Scale,
    at_option,
    open_from_options,
    out_option,
    source_options,
)


@click.command("maps")
@source_options
@click.option("--layer", "layers", multiple=True, help="Layer(s) to show (default: every Conv2d).")
@click.option("--images", "image_set", default=None,
              help="Image set (default: the run's probe images, or 'faces'), .npy/.npz, or a folder of images "
                   "(only image --index is read).")
@click.option("--index", type=int, default=0, show_default=True, help="Which image of the set.")
@at_option
@out_option
def command(source, arch, epoch, mean, std, trust_code, device, batch_size, layers, image_set, index, at, out_dir):
    """Feature maps of SOURCE (a run directory or a model file with --arch) for one image.

    Writes feature_maps.png (one colour scale per layer, diverging when signed),
    feature_maps.npz and maps.json; for a run also epochs_<layer>.png, the first
    probe image's recorded maps across training (for --layer, default the first conv layer).
    Under ``torchrun`` rank 0 alone computes and writes (one image: nothing to share); the others
    wait and leave.
    """
    from kernelscope._io import write_json, write_npz
    from kernelscope.analysis.featuremaps import feature_maps, run_feature_maps
    from kernelscope.errors import KernelscopeError
    from kernelscope.report.figures.channels import feature_epochs_figure, feature_maps_figure
    from kernelscope.report.figures.common import save_figure

    scale = Scale.start(device, out_dir, 0, False)
    if not scale.is_main:
        scale.close()
        return
    src = open_from_options(source, arch, epoch, mean, std, trust_code, scale.device)
    image_set = image_set or ("probe" if src.run is not None else "faces")
    if Path(image_set).is_dir():  # a folder: decode only the image asked for
        folder = src.image_folder(image_set)
        if not 0 <= index < len(folder):
            raise KernelscopeError(f"--index must be in 0..{len(folder) - 1} for {image_set!r}, got {index}")
        raw = folder[index][None]  # (1, C, H, W)
        inputs, description, index = src.normalise(raw), f"{folder.path(index)}", 0
    else:
        inputs, raw, description = src.images(image_set)
    if not 0 <= index < inputs.shape[0]:
        raise KernelscopeError(f"--index must be in 0..{inputs.shape[0] - 1} for {image_set!r}, got {index}")
    maps = feature_maps(src.model, inputs[index], list(layers) or None, at=at)
    out = Path(out_dir)
    save_figure(feature_maps_figure(maps, raw[index]), out / "feature_maps.png")
    write_npz(out / "feature_maps.npz", **maps)
    summary = {
        "source": src.label, "images": description, "index": index, "at": at,
        "layers": {name: {"shape": list(m.shape), "signed": bool(m.min() < 0),
                          "channel_max": m.reshape(m.shape[0], -1).max(axis=1).tolist(),
                          "channel_mean_abs": np.abs(m).reshape(m.shape[0], -1).mean(axis=1).tolist()}
                   for name, m in maps.items()},
    }
    if src.run is not None and src.run.feature_map_epochs:
        summary["epochs"] = {}
        recorded = src.run.feature_maps(src.run.feature_map_epochs[0])
        for name in list(layers) or [next(iter(maps))]:  # default: the first conv layer
            if name not in recorded:
                continue
            epochs, stack = run_feature_maps(src.run, name, index=0)
            save_figure(feature_epochs_figure(epochs, stack, name), out / f"epochs_{name}.png")
            summary["epochs"][name] = {"epochs": epochs, "probe_index": 0,
                                       "mean_abs": np.abs(stack).mean(axis=(1, 2, 3)).tolist()}
    write_json(out / "maps.json", summary)
    click.echo(f"{len(maps)} layer(s) of {src.label} (at {at}) on {description}[{index}] -> {out}/feature_maps.png")
    if scale.context.distributed:
        click.echo(f"(rank 0 of {scale.context.world_size} computed the maps: one image, nothing to share)")
    scale.close()
