"""Output-shape arithmetic and the normalisation of stride, dilation and padding.

One formula decides every output size in the engine::

    H_out = floor((H + pad_top + pad_bottom - dilation * (kh - 1) - 1) / stride) + 1

and the same along the width. ``dilation * (kh - 1) + 1`` is the *effective*
kernel size: a dilated kernel touches pixels that far apart.

Padding by name:

``"valid"``
    no padding; the kernel stays inside the input.
``"full"``
    ``dilation * (k - 1)`` on every side; every overlap of kernel and input counts.
``"same"``
    the output has ``ceil(H / stride)`` rows (``H`` rows for stride 1). The total
    padding is ``max((H_out - 1) * stride + dilation * (kh - 1) + 1 - H, 0)``; the
    top gets ``total // 2`` and the bottom the rest, so an odd total (an even
    kernel) puts the extra row at the bottom and the extra column at the right.
    For stride 1 this is exactly PyTorch's ``padding="same"``; for larger strides
    it is TensorFlow's ``"SAME"`` rule (PyTorch refuses ``"same"`` with stride > 1).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

from kernelscope.errors import KernelscopeError, suggest

__all__ = ["output_shape", "resolve_padding", "as_pair", "PADDING_NAMES", "Padding"]

PADDING_NAMES = ("valid", "same", "full")

Padding = str | int | tuple[int, int] | tuple[int, int, int, int]


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def as_pair(value: int | Sequence[int], name: str, *, minimum: int = 1) -> tuple[int, int]:
    """Return ``value`` as a pair of ints (rows, columns), each at least ``minimum``.

    Parameters
    ----------
    value : int or pair of int
        One number for both axes, or ``(rows, columns)``.
    name : str
        The parameter's name, for the error message.
    minimum : int, default 1
        The smallest value allowed: 1 for sizes, strides and dilations, 0 for padding.

    Examples
    --------
    >>> as_pair(2, "stride")
    (2, 2)
    >>> as_pair((1, 3), "dilation")
    (1, 3)
    >>> as_pair(0, "padding", minimum=0)
    (0, 0)
    """
    if _is_int(value):
        pair = (int(value), int(value))
    elif (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
          and all(_is_int(v) for v in value)):
        pair = (int(value[0]), int(value[1]))
    else:
        pair = None
    if pair is None or pair[0] < minimum or pair[1] < minimum:
        kind = {0: "non-negative", 1: "positive"}.get(minimum)
        allowed = (f"a {kind} int or a pair of {kind} ints" if kind
                   else f"an int >= {minimum} or a pair of ints >= {minimum}")
        raise KernelscopeError(f"{name} must be {allowed}; got {value!r}")
    return pair


def resolve_padding(padding: Padding, input_hw: Sequence[int], kernel_hw: Sequence[int], *,
                    stride: int | Sequence[int] = 1,
                    dilation: int | Sequence[int] = 1) -> tuple[int, int, int, int]:
    """Turn any padding specification into ``(top, bottom, left, right)``.

    Parameters
    ----------
    padding : {"valid", "same", "full"} or int or (ph, pw) or (top, bottom, left, right)
        See the module docstring for the named paddings. An int pads every side,
        ``(ph, pw)`` pads top and bottom by ``ph`` and left and right by ``pw``.
    input_hw : (H, W)
        The input's height and width (used by ``"same"``).
    kernel_hw : (kh, kw)
        The kernel's height and width.
    stride, dilation : int or (int, int)
        As for :func:`~kernelscope.ops.correlate2d`.

    Returns
    -------
    (top, bottom, left, right) : tuple of int

    Examples
    --------
    >>> resolve_padding("same", (5, 5), (3, 3))
    (1, 1, 1, 1)
    >>> resolve_padding("same", (5, 5), (4, 4))    # even kernel: extra row/column at bottom/right
    (1, 2, 1, 2)
    >>> resolve_padding("full", (5, 5), (3, 3), dilation=2)
    (4, 4, 4, 4)
    >>> resolve_padding((1, 2), (5, 5), (3, 3))
    (1, 1, 2, 2)
    """
    sh, sw = as_pair(stride, "stride")
    dh, dw = as_pair(dilation, "dilation")
    kh, kw = int(kernel_hw[0]), int(kernel_hw[1])
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "full":
            return (dh * (kh - 1), dh * (kh - 1), dw * (kw - 1), dw * (kw - 1))
        if padding == "same":
            pads = []
            for size, k, s, d in ((input_hw[0], kh, sh, dh), (input_hw[1], kw, sw, dw)):
                out = -(-int(size) // s)  # ceil(size / s)
                total = max((out - 1) * s + d * (k - 1) + 1 - int(size), 0)
                pads += [total // 2, total - total // 2]
            return (pads[0], pads[1], pads[2], pads[3])
        raise KernelscopeError("padding: " + suggest(padding, PADDING_NAMES, what="padding")
                               + ", or an int, (ph, pw) or (top, bottom, left, right)")
    allowed = ("'valid', 'same', 'full', a non-negative int, (ph, pw) or "
               "(top, bottom, left, right)")
    if _is_int(padding):
        amounts: tuple[int, ...] = (int(padding),) * 4
    elif (isinstance(padding, Sequence) and len(padding) in (2, 4)
          and all(_is_int(p) for p in padding)):
        amounts = tuple(int(p) for p in padding)
        if len(amounts) == 2:
            amounts = (amounts[0], amounts[0], amounts[1], amounts[1])
    else:
        raise KernelscopeError(f"padding must be {allowed}; got {padding!r}")
    if min(amounts) < 0:
        raise KernelscopeError(f"padding must be {allowed} (no negative amounts); got {padding!r}")
    return (amounts[0], amounts[1], amounts[2], amounts[3])


def output_shape(input_shape: Sequence[int], kernel_shape: Sequence[int], *,
                 stride: int | Sequence[int] = 1, padding: Padding = "valid",
                 dilation: int | Sequence[int] = 1) -> tuple[int, int]:
    """The output height and width of a 2-D cross-correlation or convolution.

    ``H_out = floor((H + pad_top + pad_bottom - dilation * (kh - 1) - 1) / stride) + 1``,
    and the same with ``W``, ``pad_left``, ``pad_right``, ``kw`` for the width.

    Parameters
    ----------
    input_shape : sequence of int
        ``(H, W)`` or ``(N, C, H, W)``; the last two entries are used.
    kernel_shape : sequence of int
        ``(kh, kw)`` or ``(O, C/groups, kh, kw)``; the last two entries are used.
    stride, dilation : int or (int, int)
        Step between output positions; spacing between kernel taps.
    padding : str or int or tuple
        ``"valid"``, ``"same"``, ``"full"``, an int, ``(ph, pw)`` or
        ``(top, bottom, left, right)``; see :func:`resolve_padding`.

    Returns
    -------
    (H_out, W_out) : tuple of int

    Raises
    ------
    KernelscopeError
        When the (dilated) kernel does not fit in the padded input.

    Examples
    --------
    >>> output_shape((4, 4), (3, 3))
    (2, 2)
    >>> output_shape((1, 3, 32, 32), (64, 3, 3, 3), padding=1, stride=2)
    (16, 16)
    >>> output_shape((28, 28), (5, 5), padding="same", stride=2)
    (14, 14)
    >>> output_shape((10, 10), (3, 3), dilation=2, padding="full")
    (14, 14)
    """
    if len(input_shape) < 2 or len(kernel_shape) < 2:
        raise KernelscopeError(
            f"input_shape and kernel_shape need at least 2 entries; got {tuple(input_shape)!r} "
            f"and {tuple(kernel_shape)!r}")
    h, w = int(input_shape[-2]), int(input_shape[-1])
    kh, kw = int(kernel_shape[-2]), int(kernel_shape[-1])
    if min(h, w, kh, kw) < 1:
        raise KernelscopeError(
            f"input and kernel need a positive height and width; got input {h}x{w}, kernel {kh}x{kw}")
    sh, sw = as_pair(stride, "stride")
    dh, dw = as_pair(dilation, "dilation")
    top, bottom, left, right = resolve_padding(padding, (h, w), (kh, kw), stride=stride,
                                               dilation=dilation)
    hp, wp = h + top + bottom, w + left + right
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    if eh > hp or ew > wp:
        dil = f" (effective size {eh}x{ew} with dilation {(dh, dw)})" if (dh, dw) != (1, 1) else ""
        raise KernelscopeError(
            f"kernel {kh}x{kw}{dil} is larger than the padded input {hp}x{wp} "
            f"(input {h}x{w}, padding {(top, bottom, left, right)}); use a smaller kernel or more padding")
    return ((hp - eh) // sh + 1, (wp - ew) // sw + 1)
