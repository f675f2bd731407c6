"""``kernelscope explain``: every output pixel of a small cross-correlation, step by step."""

from __future__ import annotations

import click

from kernelscope._io import dumps_json
from kernelscope.errors import KernelscopeError

__all__ = ["explain_command", "parse_ints", "parse_padding"]

MATRIX_HELP = ("rows separated by ';', numbers by spaces or commas, channels by '|'; "
               "or a .npy, .csv or whitespace .txt file")


def parse_ints(text: str, name: str, *, counts: tuple[int, ...] = (1, 2)) -> int | tuple[int, ...]:
    """``"2"`` -> 2, ``"1,2"`` or ``"1 2"`` -> (1, 2); a one-line error otherwise."""
    parts = [p for p in text.replace(",", " ").split() if p]
    allowed = " or ".join(f"{k} integer{'s' if k > 1 else ''}" for k in counts)
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise KernelscopeError(f"{name} must be {allowed} (like '2' or '1,2'); got {text!r}") from None
    if len(values) not in counts:
        raise KernelscopeError(f"{name} must be {allowed} (like '2' or '1,2'); got {text!r}")
    return values[0] if len(values) == 1 else values


def parse_padding(text: str) -> str | int | tuple[int, ...]:
    """``"same"``, ``"1"``, ``"1,2"`` or ``"1,1,2,2"`` (top, bottom, left, right)."""
    stripped = text.strip()
    if stripped and not stripped[0].isdigit() and stripped[0] not in "+-":
        return stripped
    try:
        return parse_ints(stripped, "--padding", counts=(1, 2, 4))
    except KernelscopeError:
        raise KernelscopeError(
            f"--padding must be valid, same, full, an int, 'ph,pw' or 'top,bottom,left,right'; "
            f"got {text!r}") from None


@click.command("explain")
@click.option("--input", "input_", required=True, metavar="MATRIX", help="The input: " + MATRIX_HELP)
@click.option("--kernel", required=True, metavar="MATRIX",
              help="The kernel (O x C/groups x kh x kw from a .npy; inline '|' gives channels).")
@click.option("--bias", default=None, metavar="NUMBERS", help="One bias per output channel.")
@click.option("--stride", default="1", show_default=True, help="An int or 'sh,sw'.")
@click.option("--padding", default="valid", show_default=True,
              help="valid, same, full, an int, 'ph,pw' or 'top,bottom,left,right'.")
@click.option("--padding-mode", default="zeros", show_default=True,
              type=click.Choice(["zeros", "constant", "reflect", "replicate", "circular"]))
@click.option("--pad-value", default=0.0, show_default=True, type=float,
              help="Fill value for --padding-mode constant.")
@click.option("--dilation", default="1", show_default=True, help="An int or 'dh,dw'.")
@click.option("--groups", default=1, show_default=True, type=int)
@click.option("--mode", default="correlate", show_default=True,
              type=click.Choice(["correlate", "convolve"]),
              help="correlate: what CNN layers compute; convolve: flip the kernel first.")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
@click.option("--backward", is_flag=True,
              help="Explain the backward pass instead: the gradients of input, kernel and bias.")
@click.option("--grad-output", default=None, metavar="MATRIX",
              help="With --backward: the gradient arriving at the output (default all ones).")
def explain_command(input_: str, kernel: str, bias: str | None, stride: str, padding: str,
                    padding_mode: str, pad_value: float, dilation: str, groups: int, mode: str,
                    as_json: bool, backward: bool, grad_output: str | None) -> None:
    """Show, for every output pixel, the window, the products and their sum.

    \b
    Example:
      kernelscope explain --input "9 8 7 6; 5 4 3 2; 1 2 3 4; 5 6 7 8" \\
                          --kernel "1 2 3; 4 5 6; 7 8 9"
    """
    from kernelscope.ops.matrices import parse_matrix

    x = parse_matrix(input_, "--input")
    k = parse_matrix(kernel, "--kernel")
    b = None if bias is None else parse_matrix(bias, "--bias").reshape(-1)
    options = dict(stride=parse_ints(stride, "--stride"), padding=parse_padding(padding),
                   padding_mode=padding_mode, dilation=parse_ints(dilation, "--dilation"),
                   mode=mode)
    if grad_output is not None and not backward:
        raise KernelscopeError("--grad-output needs --backward")
    if backward and groups != 1:
        raise KernelscopeError(f"--groups {groups} is not supported with --backward; use groups 1")
    if backward:
        if b is not None:
            raise KernelscopeError("--bias does not change any gradient; leave it out with --backward")
        _explain_backward(x, k, grad_output, dict(options, pad_value=pad_value), as_json)
        return
    from kernelscope.ops.explain import explain, format_explanation

    trace = explain(x, k, b, pad_value=pad_value, groups=groups, **options)
    click.echo(dumps_json(trace.to_dict()) if as_json else format_explanation(trace))


def _explain_backward(x, k, grad_output, options, as_json) -> None:
    from kernelscope.ops.explain_backward import explain_backward, format_backward
    from kernelscope.ops.matrices import parse_matrix

    grad = None if grad_output is None else parse_matrix(grad_output, "--grad-output")
    trace = explain_backward(x, k, grad, **options)
    click.echo(dumps_json(trace.to_dict()) if as_json else format_backward(trace))
