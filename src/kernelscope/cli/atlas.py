"""``kernelscope atlas``: how close a layer's kernels are to classical filters, against nulls."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("atlas")
@click.argument("source", metavar="RUN_OR_MODEL")
@click.option("--layer", default=None, help="Conv layer by dotted name (default: the first).")
@click.option("--epoch", type=int, default=None, help="Run directories: which epoch (default: the last).")
@click.option("--arch", default=None,
              help="Architecture of a state-dict file (lenet5, resnet18, ...; see `kernelscope models`) or "
                   "package.module:callable (runs your code). Without it a state dict gives its conv weights.")
@click.option("--trust-code", is_flag=True, help="TorchScript outside the zoo: allow running the file's code.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Directory for atlas.json, atlas.csv and the figures.")
@click.option("--percentile", type=click.FloatRange(50, 100, min_open=True, max_open=True), default=99.0,
              show_default=True, help="Null percentile a score must clear for its class.")
@click.option("--n-null", type=click.IntRange(10, 100_000), default=1000, show_default=True,
              help="Kernels drawn per null distribution.")
@click.option("--strict", is_flag=True,
              help="Also let the smoothed-random and spectrum-matched nulls set thresholds "
                   "(smoothness and frequency content alone are not structure).")
@click.option("--no-evolution", is_flag=True, help="Run directories: skip the atlas over epochs.")
@click.option("--steps", is_flag=True,
              help="Run directories: evolution over the recorded optimiser steps (record_every_steps) "
                   "instead of epochs.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the null draws.")
def atlas_command(source, layer, epoch, arch, trust_code, out_dir, percentile, n_null, strict, no_evolution, steps, seed):
    """The kernel atlas of RUN_OR_MODEL's conv layer: per class (edge-like, Gabor-like,
    centre-surround, blob/low-pass, unexplained) the count and fraction beside the
    fraction of every null (random, smoothed random, pixel-shuffled, spectrum-matched
    random, initialisation), with the thresholds used.

    Writes atlas.json, atlas.csv, atlas_matches.png, atlas_nulls.png and, for a run
    directory, atlas_evolution.png.
    """
    from kernelscope._io import write_bytes, write_json
    from kernelscope.analysis.atlas import atlas_of
    from kernelscope.report.figures.atlas import atlas_figures
    from kernelscope.report.figures.common import save_figure

    threshold_nulls = ("random", "shuffled", "init") + (("smooth", "spectral") if strict else ())
    result = atlas_of(source, layer=layer, epoch=epoch, arch=arch, trust_code=trust_code,
                      with_evolution=not no_evolution,
                      over="steps" if steps else "epochs", seed=seed,
                      n_null=n_null, percentile=percentile, threshold_nulls=threshold_nulls)
    out = Path(out_dir)
    written = [write_json(out / "atlas.json", result.to_dict()),
               write_bytes(out / "atlas.csv", result.to_csv().encode("utf-8"))]
    written += [save_figure(fig, out / f"{stem}.png") for stem, fig in atlas_figures(result).items()]
    click.echo(result.summary_table())
    click.echo("wrote " + ", ".join(str(p) for p in written))
