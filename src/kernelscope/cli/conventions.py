"""``kernelscope conventions``: which installed "convolution" flips the kernel."""

from __future__ import annotations

import click

from kernelscope._io import dumps_json

__all__ = ["conventions_command"]


@click.command("conventions")
@click.option("--json", "as_json", is_flag=True, help="Print the full evidence as JSON.")
def conventions_command(as_json: bool) -> None:
    """Send an asymmetric kernel through every installed convolution and say what it computes.

    Deep-learning layers compute cross-correlation; signal-processing
    "convolve" functions flip the kernel (true convolution). Libraries that are
    not installed are listed as skipped.
    """
    from kernelscope.analysis.conventions import format_conventions, probe_conventions

    report = probe_conventions()
    click.echo(dumps_json(report.to_dict()) if as_json else format_conventions(report))
