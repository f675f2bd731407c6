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
