"""``kernelscope report RUN --out report.html``: one self-contained HTML file for a run."""

from __future__ import annotations

import click

__all__ = ["report"]


@click.command("report")
@click.argument("run_dir", type=click.Path(path_type=str))
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=str), default="report.html",
              show_default=True, help="The HTML file to write.")
@click.option("--only", "only", default=None, metavar="NAMES",
              help="Comma-separated sections to include (default: all): operation, training, kernels, atlas, "
                   "featuremaps, patches, receptive, dissect, shift, parts.")
@click.option("--figures", "figures", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Also write every figure as a PNG file into this folder.")
def report(run_dir: str, out: str, only: str | None, figures: str | None) -> None:
    """Write the self-contained HTML report of RUN_DIR (figures embedded, no network requests)."""
    from kernelscope.report.build import build_report

    result = build_report(run_dir, out, analyses=only, figures_dir=figures)
    for section_id, reason in result.missing().items():
        click.echo(f"note: {section_id}: {reason}", err=True)
    shown = sum(1 for status in result.status.values() if status != "unavailable")
    click.echo(f"wrote {result.path} ({shown} of {len(result.sections)} sections shown, "
               f"{result.seconds:.1f} s)")
