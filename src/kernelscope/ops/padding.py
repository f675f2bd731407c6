"""Padding the last two axes of an array: zeros, a constant, reflect, replicate, circular.

The modes, on the row ``a b c d`` padded by 2 on each side::

    zeros       0 0 | a b c d | 0 0
    constant    v v | a b c d | v v      (v = pad_value)
    reflect     c b | a b c d | c b      (mirror without repeating the edge, as PyTorch)
    replicate   a a | a b c d | d d      (repeat the edge)
    circular    c d | a b c d | a b      (wrap around, periodic)

``reflect`` can add at most ``size - 1`` pixels on a side (PyTorch's rule); a larger
amount is an error that says so. ``circular`` repeats the input periodically, so
any amount is allowed.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from kernelscope.errors import KernelscopeError, suggest
from kernelscope.ops.shapes import Padding, resolve_padding

__all__ = ["pad2d", "PADDING_MODES"]

PADDING_MODES = ("zeros", "constant", "reflect", "replicate", "circular")
_NUMPY_MODE = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def check_padding_mode(padding_mode: object) -> str:
    """Return ``padding_mode`` if it is a known mode, else raise a helpful error."""
    if not isinstance(padding_mode, str) or padding_mode not in PADDING_MODES:
        raise KernelscopeError("padding_mode: " + suggest(str(padding_mode), PADDING_MODES,
                                                          what="padding mode"))
    return padding_mode


def pad2d(x: np.ndarray, padding: Padding, padding_mode: str = "zeros", pad_value: float = 0.0, *,
          kernel_shape: Sequence[int] | None = None, stride: int | Sequence[int] = 1,
          dilation: int | Sequence[int] = 1) -> np.ndarray:
    """Pad the last two axes of ``x``.

    Parameters
    ----------
    x : ndarray of shape (..., H, W)
        Any number of leading axes (``(H, W)``, ``(N, C, H, W)``, ...).
    padding : int or (ph, pw) or (top, bottom, left, right) or {"valid", "same", "full"}
        The amounts. The names need ``kernel_shape`` (and use ``stride``, ``dilation``),
        see :func:`~kernelscope.ops.shapes.resolve_padding`.
    padding_mode : {"zeros", "constant", "reflect", "replicate", "circular"}
        How the new pixels are filled (see the module docstring).
    pad_value : float
        The fill value of ``"constant"`` (ignored by the other modes). An integer
        array padded with a non-integer value becomes float64.
    kernel_shape : (kh, kw), optional
        Only for the named paddings.
    stride, dilation : int or (int, int)
        Only for the named paddings.

    Returns
    -------
    ndarray of shape (..., H + top + bottom, W + left + right)

    Examples
    --------
    >>> row = np.array([[1, 2, 3, 4]])
    >>> pad2d(row, (0, 0, 2, 2), "reflect")
    array([[3, 2, 1, 2, 3, 4, 3, 2]])
    >>> pad2d(row, (0, 0, 2, 2), "replicate")
    array([[1, 1, 1, 2, 3, 4, 4, 4]])
    >>> pad2d(row, (0, 0, 2, 2), "circular")
    array([[3, 4, 1, 2, 3, 4, 1, 2]])
    >>> pad2d(row, (0, 0, 1, 1), "constant", pad_value=9)
    array([[9, 1, 2, 3, 4, 9]])
    >>> pad2d(np.ones((2, 2)), "same", kernel_shape=(2, 2))   # extra row/column at bottom/right
    array([[1., 1., 0.],
           [1., 1., 0.],
           [0., 0., 0.]])
    """
    x = np.asarray(x)
    if x.ndim < 2:
        raise KernelscopeError(f"x must have at least 2 dimensions (..., H, W); got shape {x.shape}")
    mode = check_padding_mode(padding_mode)
    if isinstance(padding, str):
        if kernel_shape is None:
            raise KernelscopeError(
                f"padding={padding!r} needs kernel_shape=(kh, kw); or give the amounts as numbers")
        pads = resolve_padding(padding, x.shape[-2:], kernel_shape[-2:], stride=stride,
                               dilation=dilation)
    else:
        pads = resolve_padding(padding, x.shape[-2:], (1, 1))
    return _pad(x, pads, mode, pad_value)


def _pad(x: np.ndarray, pads: tuple[int, int, int, int], mode: str, pad_value: float) -> np.ndarray:
    """Pad with already-validated ``(top, bottom, left, right)`` amounts."""
    top, bottom, left, right = pads
    if pads == (0, 0, 0, 0):
        return x
    h, w = x.shape[-2:]
    if mode == "reflect":
        for amount, size, side, axis in ((top, h, "top", "height"), (bottom, h, "bottom", "height"),
                                         (left, w, "left", "width"), (right, w, "right", "width")):
            if amount >= size:
                raise KernelscopeError(
                    f"reflect padding of {amount} on the {side} is larger than the input allows: "
                    f"reflect adds at most {axis} - 1 = {size - 1} pixels per side; "
                    f"use 'replicate', 'circular' or less padding")
    if mode in ("zeros", "constant"):
        value = 0 if mode == "zeros" else pad_value
        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise KernelscopeError(f"pad_value must be a real number; got {value!r}")
        dtype = x.dtype
        if np.issubdtype(dtype, np.integer) and not float(value).is_integer():
            dtype = np.dtype(np.float64)
        if not np.isfinite(value):
            raise KernelscopeError(f"pad_value must be finite; got {value!r}")
        out = np.full(x.shape[:-2] + (h + top + bottom, w + left + right), value, dtype=dtype)
        out[..., top:top + h, left:left + w] = x
        return out
    widths = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return np.pad(x, widths, mode=_NUMPY_MODE[mode])
