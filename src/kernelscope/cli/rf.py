"""``kernelscope rf``: theoretical and effective receptive fields, and the locality check."""

from __future__ import annotations

from pathlib import Path

import click

from kernelscope.cli._channels import (
    at_option,
    open_from_options,
    out_option,
    source_options,
    write_csv,
)


@click.command("rf")
@source_options
@click.option("--layer", default=None, help="Layer for the effective field (default: the deepest Conv2d).")
@click.option("--input-size", nargs=3, type=int, default=None, metavar="C H W",
              help="Input shape (model files; a run knows it).")
@click.option("--images", "image_set", default=None,
              help="Images to average the effective field over (default: the run's test split; "
                   "random normal inputs for a model file).")
@click.option("--limit", type=click.IntRange(1), default=64, show_default=True, help="At most this many images.")
@at_option
@out_option
def command(source, arch, epoch, mean, std, trust_code, device, batch_size, layer, input_size, image_set, limit, at, out_dir):
    """Receptive fields of SOURCE: size, jump and start per layer (with the formula), the effective
    field of the centre unit of --layer (Luo et al. 2016) and a locality check.

    Writes rf.json, rf.csv and erf_<layer>.png.
    """
    from kernelscope._io import write_json
    from kernelscope.analysis.receptive import (
        FORMULA,
        check_input_shape,
        effective_receptive_field,
        locality_check,
        receptive_fields,
    )
    from kernelscope.errors import KernelscopeError
    from kernelscope.report.figures.channels import erf_figure
    from kernelscope.report.figures.common import save_figure

    if input_size:
        check_input_shape(input_size, "--input-size")  # before the model is opened or anything allocated
    src = open_from_options(source, arch, epoch, mean, std, trust_code, device)
    layer = src.pick_layer(layer)
    shape = tuple(input_size) if input_size else src.input_shape
    if shape is None:
        raise KernelscopeError("give --input-size C H W for a model file (a run directory knows it)")
    images = None
    description = "random normal inputs"
    if image_set or src.run is not None:
        images, _, description = src.images(image_set or "test", limit=limit)
        shape = tuple(images.shape[1:])
    table = receptive_fields(src.model, shape)
    erf = effective_receptive_field(src.model, layer, images, input_shape=shape, at=at, batch_size=batch_size)
    local = locality_check(src.model, layer, shape, images=images)
    out = Path(out_dir)
    save_figure(erf_figure(erf), out / f"erf_{layer}.png")
    rows = [{"layer": f.layer, "kind": f.kind, "kernel": f.kernel[0], "stride": f.stride[0],
             "padding": f.padding[0], "dilation": f.dilation[0], "rf_size": f.size[0], "jump": f.jump[0],
             "start": f.start[0], "output_h": f.output_size[0], "output_w": f.output_size[1]} for f in table]
    write_csv(out / "rf.csv", rows)
    write_json(out / "rf.json", {"source": src.label, "input_shape": list(shape), "formula": FORMULA,
                                 "layers": [f.to_dict() for f in table], "effective": erf.to_dict(),
                                 "effective_images": description, "locality": local.to_dict()})
    click.echo(f"formula: {FORMULA}")
    click.echo(f"{'layer':<16}{'kind':<11}{'k':>3}{'s':>3}{'p':>3}{'d':>3}{'size':>6}{'jump':>6}{'start':>7}")
    for f in table:
        click.echo(f"{f.layer:<16}{f.kind:<11}{f.kernel[0]:>3}{f.stride[0]:>3}{f.padding[0]:>3}"
                   f"{f.dilation[0]:>3}{f.size[0]:>6}{f.jump[0]:>6}{f.start[0]:>7.1f}")
    click.echo(f"effective field of {erf.read} unit {erf.unit} ({description}): 4 sigma = "
               f"{erf.effective_size[0]:.1f} x {erf.effective_size[1]:.1f} px vs theoretical "
               f"{erf.theoretical.size[0]} x {erf.theoretical.size[1]} (ratio {erf.ratio[0]:.2f})")
    click.echo(f"locality: outside the field the unit changed by {local.max_change_outside:g} (max over "
               f"{local.n_trials} trials); inside it changed in {local.changed_inside}/{local.n_trials} -> "
               f"{'PASS' if local.passed else 'FAIL'}")
