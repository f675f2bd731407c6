"""``kernelscope kernels list`` and ``kernelscope kernels show NAME``: the classical bank."""

from __future__ import annotations

from pathlib import Path

import click

from kernelscope._io import dumps_json
from kernelscope.errors import KernelscopeError

__all__ = ["kernels_group", "check_figure_path", "params_from_options"]

FIGURE_FORMATS = ("png", "pdf", "svg", "jpg", "jpeg")


def check_figure_path(out: str | None) -> Path | None:
    """Validate ``--out`` before any work: a known figure format, a directory that can exist."""
    if out is None:
        return None
    path = Path(out)
    suffix = path.suffix.lstrip(".").lower()
    if suffix not in FIGURE_FORMATS:
        raise KernelscopeError(
            f"--out: unsupported figure format {path.suffix or '(none)'!r} in {out!r} "
            f"(use {', '.join('.' + f for f in FIGURE_FORMATS)})"
        )
    if path.exists() and path.is_dir():
        raise KernelscopeError(f"--out: {out!r} is a directory; give a file name like fig.png")
    for parent in path.parents:  # the first existing ancestor must be a directory
        if parent.exists():
            if not parent.is_dir():
                raise KernelscopeError(f"--out: {str(parent)!r} is a file, not a directory")
            break
    return path


def params_from_options(options: tuple[str, ...]) -> dict[str, object]:
    """``("sigma=2", "theta=45deg")`` -> ``{"sigma": 2, "theta": 0.785...}``."""
    from kernelscope.kernels.registry import parse_value

    params: dict[str, object] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise KernelscopeError(f"--param must be KEY=VALUE (like sigma=2 or theta=45deg), got {option!r}")
        params[key.strip()] = parse_value(value)
    return params


@click.group("kernels")
def kernels_group() -> None:
    """The classical filter bank: list the kernels, show one (numbers and image)."""


@kernels_group.command("list")
@click.option("--family", default=None,
              type=click.Choice(["edge", "smoothing", "laplacian", "centre-surround", "gabor", "other"]),
              help="Only this family.")
@click.option("--json", "as_json", is_flag=True, help="Print the bank as JSON.")
def list_command(family: str | None, as_json: bool) -> None:
    """List the named kernels: family, default shape, parameters and what each detects."""
    from kernelscope.kernels import kernel_info, kernel_names

    infos = [kernel_info(name) for name in kernel_names(family)]
    if as_json:
        click.echo(dumps_json([info.to_dict() for info in infos]))
        return
    width = max(len(info.name) for info in infos)
    click.echo(f"{'name':<{width}}  {'family':<15}  {'shape':<7}  description")
    for info in infos:
        shape = f"{info.shape[0]}x{info.shape[1]}"
        click.echo(f"{info.name:<{width}}  {info.family:<15}  {shape:<7}  {info.description}")
        if info.params:
            params = ", ".join(f"{k}={v}" for k, v in info.params.items())
            click.echo(f"{'':<{width}}  {'':<15}  {'':<7}  params: {params}")
    click.echo(f"{len(infos)} kernels; fixed-size kernels take no parameters. "
               "Show one: kernelscope kernels show NAME [--param KEY=VALUE]")


@kernels_group.command("show")
@click.argument("name")
@click.option("--param", "-p", "params", multiple=True, metavar="KEY=VALUE",
              help="A kernel parameter (repeatable): sigma=2, size=7, theta=45deg, wavelength=6 ...")
@click.option("--out", default=None, metavar="FIG.png", help="Also draw the kernel and its frequency response.")
@click.option("--json", "as_json", is_flag=True, help="Print the kernel as JSON.")
def show_command(name: str, params: tuple[str, ...], out: str | None, as_json: bool) -> None:
    """Print a kernel's numbers as in a textbook (NAME may be a spec: gabor:theta=45deg)."""
    from kernelscope.kernels import format_kernel, get_kernel, kernel_info, parse_kernel_spec

    path = check_figure_path(out)
    bank_name, spec_params = parse_kernel_spec(name)
    spec_params.update(params_from_options(params))
    kernel = get_kernel(bank_name, **spec_params)
    info = kernel_info(bank_name)
    if as_json:
        click.echo(dumps_json({**info.to_dict(), "params": {**info.params, **spec_params},
                               "kernel": kernel.tolist(), "sum": float(kernel.sum())}))
    else:
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec_params.items())
        click.echo(f"{bank_name}{f' ({shown})' if shown else ''}: {info.description}")
        click.echo(f"family {info.family}, shape {kernel.shape[0]}x{kernel.shape[1]}, sum {kernel.sum():.6g}, "
                   "applied by cross-correlation (x right, y down)")
        click.echo(format_kernel(kernel))
    if path is not None:
        from kernelscope.report.figures.common import save_figure
        from kernelscope.report.figures.kernels import draw_kernel_card

        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in spec_params.items())
        title = f"{bank_name} ({shown})" if shown else bank_name
        save_figure(draw_kernel_card(kernel, title, description=info.description), path)
        click.echo(f"wrote {path}", err=as_json)
