"""``kernelscope train``: train a zoo model on a data set, recording kernels and feature maps.

Several processes: ``torchrun --standalone --nproc_per_node=2 -m kernelscope train ...``.
"""

from __future__ import annotations

import math

import click

from kernelscope.train.config import LIMITS

__all__ = ["train_command"]


class FiniteFloat(click.ParamType):
    """A float that is a number: ``inf`` and ``nan`` are refused before anything trains."""

    name = "number"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


FINITE = FiniteFloat()


@click.command("train")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Run directory to write (see docs/run-directory.md).")
@click.option("--preset", default=None,
              help="Named recipe: plain (default), structure (first-layer edges/Gabors on MNIST), faces.")
@click.option("--data", default=None, help="Data set: mnist, digits, faces, animal-mnist, idx:PATH, "
                                            "cifar10:DIR, folder:DIR.")
@click.option("--model", default=None, help="Zoo model: lenet5, tinyvgg, resnet-small, large-kernel.")
@click.option("--epochs", type=click.IntRange(max=LIMITS["epochs"]), default=None, help="Number of epochs.")
@click.option("--batch-size", type=int, default=None, help="Global batch size.")
@click.option("--lr", type=FINITE, default=None, help="Learning rate.")
@click.option("--optimizer", default=None, help="adam, adamw or sgd.")
@click.option("--lr-schedule", type=click.Choice(["constant", "cosine"]), default=None,
              help="Learning-rate schedule (default cosine; constant with --backend numpy).")
@click.option("--weight-decay", type=FINITE, default=None, help="Weight decay.")
@click.option("--init-scale", type=FINITE, default=None, help="Multiply every conv kernel at init by this.")
@click.option("--shift", type=click.IntRange(max=LIMITS["shift"]), default=None,
              help="Random shifts of +-N pixels (augmentation).")
@click.option("--hflip/--no-hflip", default=None, help="Random horizontal flips.")
@click.option("--kernel-size", type=int, default=None, help="First-layer kernel size (odd).")
@click.option("--width", type=int, default=None, help="First-layer channels.")
@click.option("--depth", type=int, default=None, help="Conv blocks / stages.")
@click.option("--seed", type=click.IntRange(max=LIMITS["seed"]), default=None,
              help="Seed of init, shuffling and augmentation.")
@click.option("--split-seed", type=click.IntRange(max=LIMITS["split_seed"]), default=None,
              help="Seed of the train/test split.")
@click.option("--train-limit", type=int, default=None, help="Use only the first N training images.")
@click.option("--record-every-steps", type=int, default=None, help="Also record kernels every N steps.")
@click.option("--backend", type=click.Choice(["torch", "numpy"]), default=None,
              help="torch (default) or kernelscope's own NumPy engine.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where to train.")
@click.option("--tensorboard", type=click.Path(file_okay=False), default=None,
              help="Also write TensorBoard event files (scalars, kernel grids, probe feature maps) into DIR.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last complete epoch "
                                            "(either back end).")
@click.option("--force", is_flag=True, help="Overwrite a run already in --out.")
def train_command(out_dir, preset, resume, force, **options):
    """Train a zoo model and record its kernels and feature maps into --out.

    \b
    kernelscope train --data mnist --model tinyvgg --epochs 5 --out runs/mnist
    kernelscope train --preset structure --out runs/structure
    kernelscope train --out runs/mnist --resume
    kernelscope train --epochs 3 --out runs/mnist --tensorboard runs/tb/mnist
    """
    import os

    from kernelscope.train import config as config_module
    from kernelscope.train.loop import train
    from kernelscope.train.rundir import read_manifest

    overrides = {k: v for k, v in options.items() if v is not None}
    if resume and preset is None and os.path.isfile(os.path.join(out_dir, "manifest.json")):
        values = dict(read_manifest(out_dir)["config"])  # resume with the run's own settings
    else:
        values = config_module.preset(preset or "plain").to_dict()
    if overrides.get("backend") == "numpy" and "lr_schedule" not in overrides and not resume:
        overrides["lr_schedule"] = "constant"  # the NumPy back end steps with a constant rate
    values.update(overrides)
    config = config_module.TrainConfig.from_dict(values)
    run = train(config, out_dir, force=force, resume=resume)
    if int(os.environ.get("RANK", "0")) != 0:
        return
    last = run.metrics[-1] if run.metrics else None
    summary = (f"test accuracy {last['test_acc']:.4f} after epoch {last['epoch']}" if last else "no epochs")
    click.echo(f"{run.manifest['model']['name']} on {run.manifest['dataset']['name']}: {summary} -> {out_dir}")
