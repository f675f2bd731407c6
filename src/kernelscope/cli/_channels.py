"""What the channel commands (maps, patches, rf, dissect, shift, parts, atlas) share: their options.

SOURCE and its image sets are opened by :func:`kernelscope.sources.open_source` (see there for
what SOURCE and ``--images`` may name); this module only declares the options once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click


def source_options(function):
    """``SOURCE`` argument with ``--arch``, ``--epoch``, ``--mean``, ``--std``, ``--trust-code``."""
    function = click.option("--batch-size", type=click.IntRange(1, 65536), default=64, show_default=True,
                            help="Images per forward pass.")(function)
    function = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                            show_default=True, help="Where the model runs (auto: CUDA when torch sees a GPU).")(function)
    function = click.option("--trust-code", is_flag=True,
                            help="TorchScript outside the zoo: allow running the file's own code (it runs with "
                                 "your permissions). Without it a TorchScript file is read as data only.")(function)
    function = click.option("--std", type=float, multiple=True, callback=_finite_values,
                            help="Per-channel std to normalise images (model files); finite, > 0.")(function)
    function = click.option("--mean", type=float, multiple=True, callback=_finite_values,
                            help="Per-channel mean to normalise images (model files); finite.")(function)
    function = click.option("--epoch", type=int, default=None,
                            help="Epoch of a run to analyse (default: the last).")(function)
    function = click.option("--arch", default=None,
                            help="Architecture of a state-dict model file: a zoo or standard name (resnet18, ...; "
                                 "see `kernelscope models`) or package.module:callable (runs your code).")(function)
    function = click.argument("source")(function)
    return function


def _finite_values(ctx: click.Context, param: click.Parameter, values: tuple[float, ...]) -> tuple[float, ...]:
    """``--mean`` must be finite, ``--std`` finite and positive: else NaN/inf would reach every number written."""
    import math

    from kernelscope.errors import KernelscopeError

    name = f"--{param.name}"
    for value in values:
        if not math.isfinite(value):
            raise KernelscopeError(f"{name} must be a finite number, got {value}")
        if param.name == "std" and value <= 0:
            raise KernelscopeError(f"{name} must be greater than 0 (it divides the images), got {value:g}")
    return values


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Write rows (dicts with the same keys) as CSV, atomically."""
    import csv
    import io

    from kernelscope._io import write_bytes

    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return write_bytes(path, buffer.getvalue().encode("utf-8"))


def out_option(function):
    return click.option("--out", "out_dir", type=click.Path(file_okay=False), required=True,
                        help="Folder for figures and numbers (created).")(function)


def at_option(function):
    """``--at conv|activation``: read a conv layer's own output, or the activation that follows it."""
    return click.option("--at", type=click.Choice(["conv", "activation"]), default="activation", show_default=True,
                        help="Read the conv layer's output (conv, pre-activation) or the nonlinearity that "
                             "follows it (activation; the conv output where none follows).")(function)


def open_from_options(source: str, arch: str | None, epoch: int | None, mean, std, trust_code: bool,
                      device: str = "auto"):
    """:func:`kernelscope.sources.open_source` with the values of :func:`source_options`."""
    from kernelscope.sources import open_source

    return open_source(source, arch=arch, epoch=epoch, mean=mean, std=std, trust_code=trust_code, device=device)


def scale_options(function):
    """``--workers``, ``--checkpoint-every``, ``--resume``: the options of a data-set pass at scale.

    The same command runs in one process or under ``torchrun --standalone --nproc_per_node=N -m
    kernelscope ...`` (each rank reads its share; rank 0 writes ``--out``); see docs/scale.md.
    """
    function = click.option("--resume", is_flag=True,
                            help="Continue from the state saved in --out by --checkpoint-every (the same "
                                 "command, options and number of processes).")(function)
    function = click.option("--checkpoint-every", type=click.IntRange(0, None), default=0, show_default=True,
                            help="Save the pass's state into --out every N batches (0: never).")(function)
    function = click.option("--workers", type=click.IntRange(0, 256), default=0, show_default=True,
                            help="Processes that decode an image folder (--images DIR); 0: in this process.")(function)
    return function


class Scale:
    """A command's place in a sharded run: the rank context, the checkpoint, and who writes.

    ``Scale.start(device, out_dir, every, resume)`` joins the process group when launched by
    ``torchrun``; :meth:`for_pass` gives the checkpoint of a pass with its fingerprint;
    :meth:`close` removes the checkpoints once the results are written, and leaves the group.
    """

    def __init__(self, context, out_dir: str, every: int, resume: bool):
        self.context, self.out, self.every, self.resume = context, Path(out_dir), every, resume

    @classmethod
    def start(cls, device: str, out_dir: str, every: int, resume: bool) -> Scale:
        from kernelscope.errors import KernelscopeError
        from kernelscope.train.distributed import setup

        folder = Path(out_dir) / "checkpoint"
        if resume and not folder.is_dir():
            raise KernelscopeError(f"--resume: no saved state in {folder} (run with --checkpoint-every N first)")
        return cls(setup(device), out_dir, every, resume)

    @property
    def device(self) -> str:
        """This rank's device for ``open_source`` (``cuda:<local rank>`` on a GPU)."""
        return str(self.context.device)

    @property
    def is_main(self) -> bool:
        return self.context.is_main

    def checkpoint(self, **fingerprint: Any):
        """The :class:`~kernelscope.analysis.passes.Checkpoint` of this command (None without
        --checkpoint-every or --resume)."""
        from kernelscope.analysis.passes import Checkpoint

        if not self.every and not self.resume:
            return None
        return Checkpoint(self.out / "checkpoint", self.every, self.resume, fingerprint)

    def close(self, checkpoint=None) -> None:
        """After rank 0 wrote the results: remove the checkpoints, leave the process group."""
        from kernelscope.train.distributed import barrier, teardown

        barrier(self.context)
        if checkpoint is not None and self.is_main:
            checkpoint.clear()
        teardown(self.context)

    def echo(self, text: str) -> None:
        """Print on rank 0 only."""
        if self.is_main:
            click.echo(text)


def open_images(src, spec: str):
    """``(images, raw, description)`` of an image set: a named set or ``.npy``/``.npz`` as arrays
    (``raw``: the [0, 1] images), a folder read lazily (``raw`` None) through
    ``Source.image_folder``."""
    from kernelscope.analysis.passes import Images

    if Path(spec).is_dir():
        folder = src.image_folder(spec)
        return Images(folder=folder, normalise=src.normalise, description=str(spec)), None, \
            f"{spec} ({len(folder)} files)"
    inputs, raw, description = src.images(spec)
    return Images(inputs, raw, description=description), raw, description
