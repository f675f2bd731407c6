"""``kernelscope replicate``: a recipe over N seeds, every headline number with its interval over seeds."""

from __future__ import annotations

import click


@click.command("replicate")
@click.option("--preset", "preset_name", default="structure", show_default=True,
              help="Training preset: plain, structure, faces.")
@click.option("--seeds", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Number of seeds (0 .. N-1), one trained network each.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Directory for seed_<s>/ run directories, replicate.json and replicate.md.")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=None, help="Override the preset's epochs.")
@click.option("--train-limit", type=click.IntRange(1), default=None, help="Use only the first N training images.")
@click.option("--n-null", type=click.IntRange(10, 100_000), default=1000, show_default=True,
              help="Atlas: kernels drawn per null distribution.")
@click.option("--surrogates", type=click.IntRange(19, 100_000), default=999, show_default=True,
              help="Atlas: surrogates per kernel in the surrogate test.")
@click.option("--quick", is_flag=True, help="Faces: fewer permutations and bootstrap resamples.")
def replicate_command(preset_name, seeds, out_dir, epochs, train_limit, n_null, surrogates, quick):
    """Train PRESET once per seed (finished runs in OUT are reused) and print every headline
    number (accuracy, atlas fractions and their controls, the surrogate-test fractions and,
    for faces, gated and ungated detector counts by dissection and by occlusion, the occlusion
    drops beside their equal-area controls, shift counts and AUROC) with its mean and a 95%
    bootstrap interval over seeds.
    """
    from kernelscope.analysis.replicate import replicate

    result = replicate(preset_name, seeds, out_dir, epochs=epochs, train_limit=train_limit, n_null=n_null,
                       surrogates=surrogates, quick=quick, log=click.echo)
    click.echo(result.table())
    click.echo(f"wrote {out_dir}/replicate.json, {out_dir}/replicate.md")
