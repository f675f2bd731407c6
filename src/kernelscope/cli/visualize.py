"""``kernelscope visualize``: what each channel of a layer wants to see, against the data set and the controls."""

from __future__ import annotations

from pathlib import Path

import click

from kernelscope.cli._channels import at_option, open_from_options, out_option, source_options


@click.command("visualize")
@source_options
@click.option("--layer", default=None, help="Conv layer (default: the deepest Conv2d).")
@click.option("--channels", default=None, help="Channels, e.g. 0-15 or 0,3,7 (default: all).")
@click.option("--objective", type=click.Choice(["channel", "neuron", "direction"]), default="channel",
              show_default=True, help="channel: the whole map (reduced by --reduce); neuron: the centre position; "
                                      "direction: the mean activation vector at the channel's top patches.")
@click.option("--steps", type=int, default=128, show_default=True, help="Optimisation steps (>= 1).")
@click.option("--images", "image_set", default=None,
              help="Image set for the data-set maxima and top patches (default: 'test' for a run, else 'faces').")
@click.option("--limit", type=click.IntRange(1), default=2000, show_default=True, help="At most this many images.")
@click.option("-k", "k", type=click.IntRange(1, 100), default=6, show_default=True, help="Top patches per channel.")
@click.option("--per-unit", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Images per channel (with --diversity, pushed apart).")
@click.option("--diversity", type=float, default=0.0, show_default=True, help="Weight of the diversity term.")
@click.option("--starts", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Random starts per image, the best kept (4 helps small grey networks; costs as many renders).")
@click.option("--reduce", type=click.Choice(["max", "mean"]), default="max", show_default=True,
              help="Optimise the spatial max (what is reported and what the data-set max uses) or the mean over "
                   "positions (Lucid's texture objective).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the start images and transforms.")
@click.option("--no-projections", is_flag=True, help="Skip the deconvnet and guided-backprop projections.")
@click.option("--over-training", is_flag=True,
              help="A run: also render at every checkpointed epoch and find when each layer's top patches settle.")
@at_option
@out_option
def command(source, arch, epoch, mean, std, trust_code, device, batch_size, layer, channels, objective, steps,
            image_set, limit, k, per_unit, diversity, starts, reduce, seed, no_projections, over_training, at, out_dir):
    """Render images that excite each channel of SOURCE's layer (activation maximisation), beside its top patches
    and their projections; every render's value against the data-set max, the network at initialisation and
    random directions.

    Writes visualize_<layer>.png, visualize.json, visualize.npz (and with --over-training
    visualize_epochs_<layer>.png and the stability table in visualize.json).
    """
    import math

    from kernelscope._io import write_json, write_npz
    from kernelscope.analysis.visualize import over_training as render_over_training
    from kernelscope.analysis.visualize import patch_stability, visualize_source
    from kernelscope.errors import KernelscopeError
    from kernelscope.report.figures.common import save_figure
    from kernelscope.report.visualize import evolution_figure, visualization_figure

    if steps < 1:
        raise KernelscopeError(f"--steps must be >= 1, got {steps}")
    if not math.isfinite(diversity) or diversity < 0:
        raise KernelscopeError(f"--diversity must be a finite number >= 0, got {diversity}")
    src = open_from_options(source, arch, epoch, mean, std, trust_code, device)
    if over_training and src.run is None:
        raise KernelscopeError("--over-training needs a run directory as SOURCE")
    result = visualize_source(src, layer=layer, channels=channels, images=image_set, limit=limit,
                              projections=not no_projections, seed=seed, batch_size=batch_size, at=at,
                              objective=objective, steps=steps, per_unit=per_unit, diversity=diversity, k=k,
                              reduce=reduce, starts=starts)
    layer, chosen, projections = result.layer, list(dict.fromkeys(result.channels)), result.projections
    description = result.images_description
    out = Path(out_dir)
    summary = {"source": src.label, "images": description, **result.to_dict(),
               "projections": {m: p.to_dict() for m, p in projections.items()}}
    arrays = {"images": result.images, "reached": result.reached, "data_max": result.data_max,
              "patches": result.top.crops[chosen]}
    if result.init_images is not None:
        arrays["init_images"] = result.init_images
    for method, p in projections.items():
        arrays[f"projection_{method}"] = p.crops
    save_figure(visualization_figure(result, projections), out / f"visualize_{layer}.png")
    if over_training:
        inputs, _, _ = src.images(image_set or "test", limit=limit)
        evolution = render_over_training(src.run, layer, inputs, channels=chosen[:8], mean=src.mean, std=src.std,
                                         at=at, objective=objective, steps=steps, seed=seed, batch_size=batch_size,
                                         reduce=reduce, starts=starts)
        stability = patch_stability(src.run, inputs, k=k, at=at, batch_size=batch_size)
        save_figure(evolution_figure(evolution), out / f"visualize_epochs_{layer}.png")
        summary["over_training"] = evolution.to_dict()
        summary["stability"] = stability.to_dict()
        for name in stability.layers:
            click.echo(f"{name}: top-{k} patch sets stable (Jaccard >= 0.8 with the final epoch) from epoch "
                       f"{stability.settled[name]}; overlap per epoch "
                       + " ".join(f"{v:.2f}" for v in stability.jaccard[name]))
    write_npz(out / "visualize.npz", **arrays)
    write_json(out / "visualize.json", summary)
    s = result.summary()

    def fmt(value):
        return "n/a" if value is None else f"{value:.2f}"

    click.echo(f"{s['units']} unit(s) of {result.read}, {objective}, {steps} steps: median reached / data-set max "
               f"{fmt(s['median_ratio'])} (init control {fmt(s['median_init_ratio'])}, random directions "
               f"{fmt(s['median_random_direction_ratio'])}); {s['reach_data_max']} reach the data-set max, "
               f"{s['beat_init']} beat the init control, {s['dead_on_data']} never fire on {description}")
    click.echo(f"-> {out}/visualize_{layer}.png")
