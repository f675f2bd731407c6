"""``kernelscope correlation``: does a channel measure correlation with a template?"""

from __future__ import annotations

from pathlib import Path

import click

from kernelscope.cli._channels import (
    Scale,
    at_option,
    open_from_options,
    out_option,
    scale_options,
    source_options,
    write_csv,
)


def _epochs(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        epochs = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"give epochs as integers separated by commas (0,5,10), got {value!r}") from None
    if not epochs or min(epochs) < 0:
        raise click.BadParameter(f"give epochs >= 0 separated by commas (0,5,10), got {value!r}")
    return epochs


@click.command("correlation")
@source_options
@click.option("--layer", "layers", multiple=True, help="Layer (repeat for several; default: every Conv2d).")
@click.option("--images", "image_set", default=None, help="Image set (default: 'test' for a run, else 'faces').")
@click.option("--limit", type=click.IntRange(5, 1_000_000), default=2000, show_default=True,
              help="At most this many images (at least 5: fit, validation and test splits).")
@click.option("--positions", type=click.IntRange(1, 16), default=3, show_default=True,
              help="Units per image: positions x positions, sharing one template.")
@click.option("--max-features", type=click.IntRange(16, 16384), default=2048, show_default=True,
              help="Largest patch (values) regressed on; larger receptive fields are block-averaged.")
@click.option("--over-training", is_flag=True, help="Also R^2 and OSI at every checkpoint of a run directory.")
@click.option("--epochs", callback=_epochs, default=None, help="With --over-training: these epochs (0,5,10).")
@at_option
@scale_options
@out_option
def command(source, arch, epoch, mean, std, trust_code, device, batch_size, layers, image_set, limit, positions,
            max_features, over_training, epochs, at, workers, checkpoint_every, resume, out_dir):
    """Linear templates (held-out R^2), raw vs normalised correlation and grating tuning of SOURCE's layers,
    each beside the network at initialisation.

    Writes correlation.json, layers.csv, templates_<layer>.npz/.png, tuning_<layer>.csv, depth.png,
    raw_vs_normalised.png (and over_training.csv/.png). The templates' pass runs sharded under
    ``torchrun --standalone --nproc_per_node=N -m kernelscope correlation ...`` (the rest on rank 0).
    """
    from kernelscope._io import write_json, write_npz
    from kernelscope.analysis.channel_correlation import correlation_of
    from kernelscope.errors import KernelscopeError
    from kernelscope.report import correlation as figures
    from kernelscope.report.figures.common import save_figure

    if epochs is not None and not over_training:
        raise click.UsageError("--epochs goes with --over-training")
    if workers:
        raise KernelscopeError("--workers decodes an image folder; correlation takes a named image set or "
                               ".npy/.npz (at most --limit images): leave --workers out")
    scale = Scale.start(device, out_dir, checkpoint_every, resume)
    src = open_from_options(source, arch, epoch, mean, std, trust_code, scale.device)
    if over_training and src.run is None:
        raise KernelscopeError(f"--over-training needs a run directory as SOURCE; {src.label} is not one")
    checkpoint = scale.checkpoint(command="correlation", source=src.label, layers=list(layers), images=image_set,
                                  limit=limit, positions=positions, max_features=max_features, at=at,
                                  batch_size=batch_size)
    result = correlation_of(src, layers=list(layers) or None, images=image_set, at=at, limit=limit,
                            positions=positions, max_features=max_features, batch_size=batch_size,
                            with_training=over_training, epochs=epochs, context=scale.context,
                            checkpoint=checkpoint)
    if result is None:  # not rank 0
        scale.close(checkpoint)
        return
    out = Path(out_dir)
    write_json(out / "correlation.json", result.to_dict())
    write_csv(out / "layers.csv", result.layer_rows())
    for layer in result.layers:
        t = result.depth.trained[layer]
        write_npz(out / f"templates_{layer}.npz", templates=t.templates, bias=t.bias, r2=t.r2,
                  init_templates=result.depth.init[layer].templates, init_r2=result.depth.init[layer].r2)
        save_figure(figures.templates_figure(t), out / f"templates_{layer}.png")
        write_csv(out / f"tuning_{layer}.csv", result.tuning[layer].rows())
    save_figure(figures.depth_figure(result.depth), out / "depth.png")
    if result.raw is not None:
        save_figure(figures.raw_vs_normalised_figure(result.raw, result.raw_init), out / "raw_vs_normalised.png")
    if result.training is not None:
        write_csv(out / "over_training.csv", result.training.rows())
        save_figure(figures.training_figure(result.training), out / "over_training.png")
    click.echo(f"{result.source}: {result.images}, read at {result.at}")
    click.echo(f"{'layer':<14} {'field':>6} {'median R2':>10} {'init':>6} {'OSI':>6} {'init':>6}")
    for row in result.layer_rows():
        click.echo(f"{row['layer']:<14} {row['field']:>6} {_n(row['median_r2']):>10} {_n(row['init_median_r2']):>6} "
                   f"{_n(row['median_osi']):>6} {_n(row['init_median_osi']):>6}")
    if result.raw is not None:
        m, mi = result.raw.medians(), result.raw_init.medians()
        click.echo(f"first layer {result.raw.layer}: median Spearman rho(activation, NCC) {_n(m['rho_ncc'])} "
                   f"(init {_n(mi['rho_ncc'])}), rho(activation, |p|) {_n(m['rho_contrast'])}, "
                   f"rho(activation, cos) {_n(m['rho_cos'])}")
    a = result.agreement
    if a is not None:
        if a.get("reason"):
            click.echo(f"orientation agreement: {a['reason']}")
        else:
            c = result.agreement_init
            click.echo(f"orientation agreement (Gabor fit vs gratings, within {a['tolerance_deg']:.0f} deg): "
                       f"{_n(a['agreement'])} of {a['n']} well-fit channels, all {_n(a['agreement_all'])}; init "
                       f"{_n(c['agreement'])} of {c['n']}, all {_n(c['agreement_all'])}; chance {_n(a['chance'])}")
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"-> {out}/correlation.json, layers.csv, depth.png")
    scale.close(checkpoint)


def _n(value) -> str:
    return "-" if value is None else f"{value:.3f}"
