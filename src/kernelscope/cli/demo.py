"""``kernelscope demo --out DIR``: the whole story on the bundled real data, ending with the report."""

from __future__ import annotations

import click

__all__ = ["demo"]


@click.command("demo")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=str), default="demo-out",
              show_default=True, help="Folder for the runs, result files and report.html.")
@click.option("--quick", is_flag=True, help="A tiny version of every stage (about a minute; for tests).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds training and every control.")
def demo(out: str, quick: bool, seed: int) -> None:
    """Train on bundled MNIST and faces, run the atlas, dissection, shift and parts analyses, write the report."""
    from kernelscope.demo import run_demo

    result = run_demo(out, quick=quick, seed=seed)
    click.echo(result.summary())
    failed = [s.name for s in result.stages.values() if s.status == "failed"]
    if failed or result.report_path is None:
        # the summary above says what failed and why; exit 1 so that scripts notice
        raise SystemExit(1)
