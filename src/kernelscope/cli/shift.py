"""``kernelscope shift``: which channels go quiet, or fire more, on out-of-distribution images."""

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


@click.command("shift")
@source_options
@click.option("--layer", default=None, help="Layer (default: the deepest Conv2d).")
@click.option("--id", "id_set", default="faces", show_default=True,
              help="In-distribution image set (a named set, .npy/.npz, or a folder of images).")
@click.option("--ood", "ood_set", default="objects", show_default=True,
              help="Out-of-distribution image set (a named set, .npy/.npz, or a folder of images).")
@click.option("--mahalanobis/--no-mahalanobis", default=True, show_default=True,
              help="Fit the Mahalanobis score on the run's training split (runs only).")
@click.option("--bootstrap", type=click.IntRange(10, 100000), default=1000, show_default=True)
@click.option("--no-init", is_flag=True, help="Skip the initialisation control.")
@click.option("--seed", type=int, default=0, show_default=True)
@at_option
@scale_options
@out_option
def command(source, arch, epoch, mean, std, trust_code, device, batch_size,
            layer, id_set, ood_set, mahalanobis, bootstrap, no_init, seed,
            at, workers, checkpoint_every, resume, out_dir):
    """Distribution shift at SOURCE's layer between --id and --ood images: per-channel AUROC with a
    bootstrap 95% interval and firing rates above the ID 95th percentile; MSP, max logit, energy and
    Mahalanobis scores (AUROC, FPR at 95% TPR); the same for the network at initialisation.

    Writes shift.json, shift.csv and shift.png. Runs sharded under
    ``torchrun --standalone --nproc_per_node=N -m kernelscope shift ...``.
    """
    from kernelscope._io import write_json, write_npz
    from kernelscope.analysis.shift import shift
    from kernelscope.report.figures.channels import shift_figure
    from kernelscope.report.figures.common import save_figure

    scale = Scale.start(device, out_dir, checkpoint_every, resume)
    src = open_from_options(source, arch, epoch, mean, std, trust_code, scale.device)
    layer = src.pick_layer(layer)
    in_x, _, in_desc = open_images(src, id_set)
    out_x, _, out_desc = open_images(src, ood_set)
    train_x = train_y = None
    if mahalanobis and src.run is not None:
        data = src.run.dataset()
        train_x, train_y = src.normalise(data.x_train), data.y_train
    init = None if no_init else src.init_model(seed)
    checkpoint = scale.checkpoint(command="shift", source=src.label, layer=layer, id=in_desc, ood=out_desc,
                                  mahalanobis=train_x is not None, init=not no_init, seed=seed, at=at,
                                  batch_size=batch_size)
    result = shift(src.model, layer, in_x, out_x, train_images=train_x, train_labels=train_y, init_model=init,
                   n_boot=bootstrap, seed=seed, names=(id_set, ood_set), at=at, batch_size=batch_size,
                   logits=src.kind != "pretrained" or src.classes is not None, context=scale.context,
                   workers=workers, checkpoint=checkpoint)
    if not scale.is_main:
        scale.close(checkpoint)
        return
    out = Path(out_dir)
    save_figure(shift_figure(result), out / "shift.png")
    write_csv(out / "shift.csv", result.rows())
    write_npz(out / "shift_maxima.npz", **result.maxima)
    write_json(out / "shift.json", {"source": src.label, "id_images": in_desc, "ood_images": out_desc,
                                    **result.to_dict()})
    t = result.trained
    click.echo(f"{result.read}: {len(t['quiet_on_ood'])} channel(s) go quiet on {ood_set}, "
               f"{len(t['fire_more_on_ood'])} fire more (bootstrap 95% CI of the AUROC excludes 0.5)")
    for name, v in t["network"].items():
        control = ""
        if result.init is not None and name in result.init["network"]:
            control = f" (init: {result.init['network'][name]['auroc']:.3f})"
        click.echo(f"  {name:<12} AUROC {v['auroc']:.3f}{control}  FPR@95%TPR {v['fpr_at_95_tpr']:.3f}")
    for note in t["notes"]:
        click.echo(f"  note: {note}")
    for which, read in (result.data or {}).items():
        if read and read["skipped"]:
            click.echo(f"  {read['n_skipped']} unreadable image(s) of the {which} set skipped (listed in shift.json)")
    scale.close(checkpoint)
