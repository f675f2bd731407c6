"""The operation view's computations: the engine's output, and one output cell explained.

Everything here calls the engine (:mod:`kernelscope.ops`); nothing re-implements it.
The cell explanation runs :func:`kernelscope.ops.explain` on the window that the
cell sees (cut from the engine's padded input), so a click on a 64x64 input costs
one small trace, not the trace of every output pixel.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.ops.shapes import as_pair

__all__ = ["as_numbers", "operation", "explain_cell", "explain_all", "backward"]


def as_numbers(rows: list[list[float]]) -> np.ndarray:
    """A matrix from JSON: int64 when every value is a whole number (exact arithmetic), else float64.

    Examples
    --------
    >>> as_numbers([[1.0, 2.0], [3.0, 4.0]]).dtype
    dtype('int64')
    >>> as_numbers([[0.5, 2.0]]).dtype
    dtype('float64')
    """
    array = np.asarray(rows, dtype=np.float64)  # (H, W)
    if np.all(np.isfinite(array)) and np.all(array == np.round(array)):
        return array.astype(np.int64)
    return array


def _scalar(value: float | None) -> int | float | None:
    if value is None:
        return None
    return int(value) if float(value).is_integer() else float(value)


def _padding(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def operation(x: np.ndarray, kernel: np.ndarray, *, bias: float | None = None, stride: Any = 1,
              padding: Any = "valid", padding_mode: str = "zeros", pad_value: float = 0.0,
              dilation: Any = 1, mode: str = "correlate", cell: list[int] | None = None,
              max_output: int = 128) -> dict[str, Any]:
    """The engine's output of a 2-D operation, its padded input, and optionally one cell explained.

    Parameters
    ----------
    x : ndarray of shape (H, W)
    kernel : ndarray of shape (kh, kw)
    bias : float, optional
    stride, padding, padding_mode, pad_value, dilation
        As for :func:`kernelscope.ops.correlate2d` (lists are read as tuples).
    mode : {"correlate", "convolve"}
    cell : [row, col], optional
        An output cell to explain (see :func:`explain_cell`).
    max_output : int
        Largest output height or width allowed.

    Returns
    -------
    dict
        ``output`` (H', W'), ``padded_input`` (Hp, Wp), ``padding`` (top, bottom, left,
        right), ``applied_kernel`` (flipped for convolution), ``flip_identity``,
        and ``position`` for the cell.

    Examples
    --------
    >>> x = as_numbers([[9, 8, 7, 6], [5, 4, 3, 2], [1, 2, 3, 4], [5, 6, 7, 8]])
    >>> k = as_numbers([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    >>> result = operation(x, k, cell=[0, 0])
    >>> result["output"], result["position"]["total"]
    ([[154, 157], [200, 233]], 154)
    """
    from kernelscope.ops import (
        convolve2d,
        correlate2d,
        flip_kernel,
        output_shape,
        pad2d,
        resolve_padding,
    )

    if mode not in ("correlate", "convolve"):
        raise KernelscopeError(f"mode must be 'correlate' or 'convolve'; got {mode!r}")
    strides, dilations, padding = as_pair(stride, "stride"), as_pair(dilation, "dilation"), _padding(padding)
    out_hw = output_shape(x.shape, kernel.shape, stride=strides, padding=padding, dilation=dilations)
    if max(out_hw) > max_output:
        raise KernelscopeError(f"the output would be {out_hw[0]}x{out_hw[1]}; at most {max_output}x{max_output} "
                               f"is shown: use less padding or dilation")
    pads = resolve_padding(padding, x.shape, kernel.shape, stride=strides, dilation=dilations)
    b = None if bias is None else np.asarray([_scalar(bias)])  # (1,)
    engine = convolve2d if mode == "convolve" else correlate2d
    common = dict(stride=strides, padding=pads, padding_mode=padding_mode, pad_value=pad_value,
                  dilation=dilations)
    out = engine(x, kernel, b, **common)  # (H', W')
    padded = pad2d(x, pads, padding_mode, pad_value)  # (Hp, Wp)
    applied = flip_kernel(kernel) if mode == "convolve" else kernel  # (kh, kw)
    flip_identity = None
    if mode == "convolve":
        flip_identity = bool(np.array_equal(out, correlate2d(x, flip_kernel(kernel), b, **common)))
    result: dict[str, Any] = {
        "mode": mode, "input_shape": list(x.shape), "kernel": kernel.tolist(),
        "applied_kernel": applied.tolist(), "padding": list(pads), "padded_input": padded.tolist(),
        "stride": list(strides), "dilation": list(dilations), "output": out.tolist(),
        "output_shape": list(out.shape), "flip_identity": flip_identity,
        "position": None, "position_agrees": None,
    }
    if cell is not None:
        position = explain_cell(padded, kernel, pads, cell, out_shape=out.shape, bias=b,
                                stride=strides, dilation=dilations, mode=mode)
        expected = out[cell[0], cell[1]]
        result["position"] = position
        result["position_agrees"] = bool(position["total"] == expected if out.dtype.kind == "i"
                                         else np.isclose(position["total"], expected, rtol=1e-12, atol=1e-12))
    return result


def explain_cell(padded: np.ndarray, kernel: np.ndarray, pads: tuple[int, int, int, int], cell: list[int], *,
                 out_shape: tuple[int, int], bias: np.ndarray | None, stride: tuple[int, int],
                 dilation: tuple[int, int], mode: str) -> dict[str, Any]:
    """``explain``'s record of output cell ``(row, col)``: window, products, sum, total.

    The window the cell sees is cut from the padded input and traced by
    :func:`kernelscope.ops.explain` as a one-position operation; only the cell's
    coordinates (and the input rows and columns, ``< 0`` or ``>= H`` in the padding)
    are put back.

    Parameters
    ----------
    padded : ndarray of shape (Hp, Wp)
        The padded input (``kernelscope.ops.pad2d``).
    kernel : ndarray of shape (kh, kw)
        The kernel as given (flipped by ``explain`` in convolve mode).
    pads : (top, bottom, left, right)
    cell : [row, col]
    out_shape : (H', W')

    Returns
    -------
    dict
        As ``explain(...).to_dict()["positions"][k]``.
    """
    from kernelscope.ops import explain

    row, col = int(cell[0]), int(cell[1])
    if not (0 <= row < out_shape[0] and 0 <= col < out_shape[1]):
        raise KernelscopeError(f"cell must be [row, col] inside the {out_shape[0]}x{out_shape[1]} output; "
                               f"got [{row}, {col}]")
    (sh, sw), (dh, dw) = stride, dilation
    kh, kw = kernel.shape
    top, _, left, _ = pads
    r0, c0 = row * sh, col * sw  # the window's top-left corner in padded coordinates
    window = padded[r0:r0 + dh * (kh - 1) + 1, c0:c0 + dw * (kw - 1) + 1]  # (dh*(kh-1)+1, dw*(kw-1)+1)
    trace = explain(window, kernel, bias, dilation=dilation, mode=mode)
    position = asdict(trace.positions[0])
    position["row"], position["col"] = row, col
    position["input_rows"] = [r0 + u * dh - top for u in range(kh)]
    position["input_cols"] = [c0 + v * dw - left for v in range(kw)]
    return position


def explain_all(x: np.ndarray, kernel: np.ndarray, *, bias: float | None = None, stride: Any = 1,
                padding: Any = "valid", padding_mode: str = "zeros", pad_value: float = 0.0,
                dilation: Any = 1, mode: str = "correlate") -> dict[str, Any]:
    """``kernelscope.ops.explain(...).to_dict()`` for the whole operation (small inputs only)."""
    from kernelscope.ops import explain

    b = None if bias is None else np.asarray([_scalar(bias)])
    return explain(x, kernel, b, stride=as_pair(stride, "stride"), padding=_padding(padding),
                   padding_mode=padding_mode, pad_value=pad_value, dilation=as_pair(dilation, "dilation"),
                   mode=mode).to_dict()


def backward(x: np.ndarray, kernel: np.ndarray, grad_output: np.ndarray | None = None, *, stride: Any = 1,
             padding: Any = "valid", padding_mode: str = "zeros", pad_value: float = 0.0, dilation: Any = 1,
             mode: str = "correlate") -> dict[str, Any]:
    """``kernelscope.ops.explain_backward(...).to_dict()``: gradients of kernel, bias and input.

    Raises
    ------
    KernelscopeError
        When the call is too large to explain.
    """
    from kernelscope.ops.explain_backward import explain_backward

    trace = explain_backward(x, kernel, grad_output, stride=as_pair(stride, "stride"),
                             padding=_padding(padding), padding_mode=padding_mode, pad_value=pad_value,
                             dilation=as_pair(dilation, "dilation"), mode=mode)
    return trace.to_dict()
