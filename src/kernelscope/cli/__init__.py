"""The ``kernelscope`` command: a thin layer over the library.

Each sub-command lives in its own module and is imported only when it runs (so
``kernelscope explain`` never imports torch). Register a command by adding one
line to ``COMMANDS``: ``"name": ("module", "attribute", "one-line help")``.

Errors: usage errors exit 2 with ``Error: ...`` and a hint (click's own);
:class:`~kernelscope.errors.KernelscopeError` becomes a one-line ``Error: ...``
with exit status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from kernelscope import __version__
from kernelscope.errors import KernelscopeError

__all__ = ["main", "cli", "COMMANDS", "LibraryError"]

# name -> (module, attribute, short help). The short help is here so that
# `kernelscope --help` lists every command without importing any of them.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("kernelscope.cli.train", "train_command", "Train a zoo model, recording kernels and feature maps into a run directory."),
    "runs": ("kernelscope.cli.runs", "runs_group", "Inspect run directories: manifest summary and metrics per epoch."),
    "report": ("kernelscope.cli.report", "report", "Write a run's self-contained HTML report."),
    "demo": ("kernelscope.cli.demo", "demo", "Run the whole story on bundled data and write the report."),
    "explain": ("kernelscope.cli.explain", "explain_command", "Show every output pixel of a small convolution, step by step."),
    "conventions": ("kernelscope.cli.conventions", "conventions_command", "Which libraries' 'convolution' is cross-correlation, which true convolution."),
    "maps": ("kernelscope.cli.maps", "command", "Feature maps of every channel for an image, and across epochs."),
    "patches": ("kernelscope.cli.patches", "command", "Top-k dataset patches per channel, cropped by the receptive field."),
    "rf": ("kernelscope.cli.rf", "command", "Theoretical and effective receptive fields, and a locality check."),
    "dissect": ("kernelscope.cli.dissect", "command", "Network Dissection: channels that detect eyes, mouths or your concepts."),
    "shift": ("kernelscope.cli.shift", "command", "Which channels go quiet or fire more on out-of-distribution images."),
    "kernels": ("kernelscope.cli.kernels", "kernels_group", "The classical filter bank: list kernels, show one as numbers and image."),
    "filter": ("kernelscope.cli.filter", "filter_command", "Filter an image with classical kernels: each kernel beside its feature map."),
    "images": ("kernelscope.cli.images", "images_command", "List the real sample images bundled with the installed packages."),
    "parts": ("kernelscope.cli.parts", "command", "Part detectors by occlusion: channels that respond to eyes, nose, mouth."),
    "atlas": ("kernelscope.cli.atlas", "atlas_command", "How close a layer's kernels are to classical filters, against null controls."),
    "serve": ("kernelscope.cli.serve", "serve_command", "The interactive explorer: the operation explained cell by cell, and runs, in a local web page."),
}


class LibraryError(click.ClickException):
    """A library error shown as ``Error: message`` with exit status 2."""

    exit_code = 2


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, attribute, _ = COMMANDS[name]
        module = importlib.import_module(module_name)
        return getattr(module, attribute)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KernelscopeError as error:
            raise LibraryError(str(error)) from None


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kernelscope")
def cli() -> None:
    """See and measure what the convolution kernels of a CNN learn."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``kernelscope`` console script."""
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="kernelscope")
