"""2-D cross-correlation and true convolution: validation, padding, and the choice of strategy.

What a CNN layer computes is a *cross-correlation*: the kernel slides over the
input as it is, and each output pixel is the sum of the element-wise products of
the kernel and the window under it. A *true convolution* flips the kernel on both
axes first: ``convolve2d(x, k) == correlate2d(x, flip_kernel(k))``.

Strategies (``method=``), all giving the same numbers:

``"direct"``
    the readable reference loop, one output pixel at a time (slow; small inputs).
``"im2col"``
    windows copied into columns, one BLAS matrix product per image and group.
``"shift"``
    shift-and-add over the kernel taps; fast for images with few channels and for
    integer inputs with large kernels.
``"fft"``
    a product of spectra; fast for large kernels.
``"auto"``
    ``"fft"`` for float inputs with large kernels, ``"shift"`` for images with few
    channels and integer inputs with large kernels, ``"im2col"`` otherwise (see
    :func:`choose_method`).

Integer inputs (with an integer kernel and bias) give exact int64 results: they
never go through floating point, except ``method="fft"`` when its float64 result is
provably exact after rounding (otherwise that call is routed to ``"im2col"``). A
call whose result could exceed int64 is refused rather than wrapped around.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from kernelscope.errors import KernelscopeError, suggest
from kernelscope.ops import _direct, _fft, _im2col, _shift
from kernelscope.ops.padding import _pad, check_padding_mode
from kernelscope.ops.shapes import Padding, as_pair, output_shape, resolve_padding

__all__ = ["correlate2d", "convolve2d", "flip_kernel", "choose_method", "METHODS", "as_matrix"]

METHODS = ("auto", "direct", "im2col", "shift", "fft")
_IMPLEMENTATIONS = {"direct": _direct, "im2col": _im2col, "shift": _shift, "fft": _fft}

#: float kernels with at least this many taps (kh * kw) go to the FFT under "auto";
#: with few channels per group (<= FFT_FEW_CHANNELS input x output pairs) already from
#: FFT_MIN_TAPS_FEW. Calibrated by ``benchmarks/bench_engine.py --sweep`` (docs/engine.md).
FFT_MIN_TAPS = 49
FFT_MIN_TAPS_FEW = 25
FFT_FEW_CHANNELS = 4
#: integer kernels with at least this many taps use shift-and-add (im2col would copy
#: every input pixel this many times into NumPy's slow, exact integer matmul)
SHIFT_MIN_TAPS_INT = 25
#: few channels and more column entries per image than this (taps * Hp * Wp): shift-and-add
#: (a 512x512 image with a 3x3 kernel: ~2 ms against ~15-23 ms for im2col's 9 copies)
SHIFT_MIN_COLUMN_CELLS = 2**19


def as_matrix(value: object, name: str) -> np.ndarray:
    """Convert ``value`` to a finite, non-empty, real-valued ndarray or raise a one-line error.

    Examples
    --------
    >>> as_matrix([[1, 2], [3, 4]], "x").dtype.kind
    'i'
    >>> as_matrix([[1, 2], [3]], "x")
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: x must be a rectangular array of numbers; got a ragged nested sequence (rows of different lengths)
    """
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        if "inhomogeneous" in str(error) or "sequence" in str(error):
            raise KernelscopeError(f"{name} must be a rectangular array of numbers; got a ragged "
                                   f"nested sequence (rows of different lengths)") from None
        raise KernelscopeError(f"{name} must be an array of real numbers; got {type(value).__name__}"
                               ) from None
    except RuntimeError as error:  # e.g. a torch tensor that requires grad
        raise KernelscopeError(f"{name} cannot be read as a NumPy array: {error}".splitlines()[0]
                               ) from None
    if array.dtype.kind == "O":
        bad = [v for v in array.flat if not isinstance(v, numbers.Real)]
        if bad:
            raise KernelscopeError(f"{name} must hold real numbers; got non-numeric entries "
                                   f"(e.g. {bad[0]!r})")
        array = array.astype(np.float64)
    if array.dtype.kind == "b":
        array = array.astype(np.int64)
    if array.dtype.kind not in "iuf":
        raise KernelscopeError(f"{name} must hold real numbers; got dtype {array.dtype} "
                               f"(e.g. {array.flat[0]!r})" if array.size else
                               f"{name} must hold real numbers; got dtype {array.dtype}")
    if array.size == 0:
        raise KernelscopeError(f"{name} must not be empty; got shape {array.shape}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        where = tuple(int(i) for i in np.argwhere(~np.isfinite(array))[0])
        raise KernelscopeError(f"{name} contains {array[where]} at index {where}; only finite "
                               f"numbers are allowed (no NaN or infinity)")
    if array.dtype.kind == "u":
        if array.dtype.itemsize >= 8 and array.max() > np.iinfo(np.int64).max:
            raise KernelscopeError(f"{name} has values above {np.iinfo(np.int64).max}; "
                                   f"integers must fit in int64")
        array = array.astype(np.int64)
    return array


def flip_kernel(kernel: np.ndarray) -> np.ndarray:
    """Flip a kernel on its last two axes (rotate by 180 degrees).

    ``convolve2d(x, k) == correlate2d(x, flip_kernel(k))``.

    Parameters
    ----------
    kernel : ndarray of shape (..., kh, kw)

    Returns
    -------
    ndarray of shape (..., kh, kw)
        A new array.

    Examples
    --------
    >>> flip_kernel(np.array([[1, 2], [3, 4]]))
    array([[4, 3],
           [2, 1]])
    """
    kernel = np.asarray(kernel)
    if kernel.ndim < 2:
        raise KernelscopeError(f"kernel must have at least 2 dimensions (..., kh, kw); got shape "
                               f"{kernel.shape}")
    return kernel[..., ::-1, ::-1].copy()


def choose_method(x_shape: Sequence[int], kernel_shape: Sequence[int], *, groups: int = 1,
                  integer: bool = False, stride: int | tuple[int, int] = 1) -> str:
    """The strategy ``method="auto"`` picks for these shapes.

    Rules, from the kernel-size sweep in ``benchmarks/bench_engine.py --sweep``:
    float inputs with kernels of at least ``FFT_MIN_TAPS`` taps (7x7), or of at least
    ``FFT_MIN_TAPS_FEW`` taps (5x5) with few channels per group, go to the FFT, whose
    cost hardly grows with the kernel; integer inputs with large kernels, batches of
    one-channel images or one image's channels filtered separately (stride 1: one
    fused BLAS axpy per tap), and large images with few channels go to shift-and-add
    (no copies); everything else, dense and depthwise layers on batches included,
    to im2col.

    Parameters
    ----------
    x_shape : (N, C, Hp, Wp)
        The padded input's shape.
    kernel_shape : (O, C/groups, kh, kw)
    groups : int
    integer : bool
        Integer inputs never go to the FFT under ``"auto"``.

    Examples
    --------
    >>> choose_method((256, 1, 28, 28), (32, 1, 5, 5))
    'im2col'
    >>> choose_method((64, 64, 34, 34), (64, 1, 3, 3), groups=64)
    'im2col'
    >>> choose_method((1, 3, 258, 258), (3, 1, 3, 3), groups=3)    # one RGB image, per channel
    'shift'
    >>> choose_method((1, 1, 542, 542), (1, 1, 31, 31))
    'fft'
    >>> choose_method((1, 1, 256, 256), (1, 1, 5, 5))
    'fft'
    >>> choose_method((1, 1, 256, 256), (1, 1, 5, 5), integer=True)
    'shift'
    >>> choose_method((1, 1, 512, 512), (1, 1, 3, 3))
    'shift'
    """
    o, cg, kh, kw = kernel_shape
    hp, wp = x_shape[-2:]
    taps = kh * kw
    if integer:
        return "shift" if taps >= SHIFT_MIN_TAPS_INT else "im2col"
    few_channels = cg * (o // groups) <= FFT_FEW_CHANNELS
    if (taps >= FFT_MIN_TAPS or (few_channels and taps >= FFT_MIN_TAPS_FEW)) and hp * wp >= 4 * taps:
        return "fft"
    if (cg == 1 and o // groups <= FFT_FEW_CHANNELS and as_pair(stride, "stride") == (1, 1)
            and (groups == 1 or x_shape[0] == 1)):
        return "shift"  # one-channel images, or one image's channels: one fused BLAS axpy per tap
    if groups == 1 and few_channels and taps * hp * wp > SHIFT_MIN_COLUMN_CELLS:
        return "shift"  # one large image, few channels: im2col's columns would not fit in cache
    return "im2col"


def _check_int64_range(x4: np.ndarray, k4: np.ndarray, bias: np.ndarray | None,
                       pad_value: float) -> None:
    """Refuse integer inputs whose result could overflow int64 (the bound uses Python ints)."""
    x_max = max(abs(int(x4.max())), abs(int(x4.min())), abs(int(pad_value)))
    k_sum = max(int(v) for v in np.abs(k4.astype(object)).reshape(k4.shape[0], -1).sum(axis=1))
    b_max = 0 if bias is None else max(abs(int(bias.max())), abs(int(bias.min())))
    if x_max * k_sum + b_max > np.iinfo(np.int64).max:
        raise KernelscopeError(
            f"integer inputs this large could overflow int64 (max |x| = {x_max}, largest sum of "
            f"|kernel| = {k_sum}); pass float64 arrays for a rounded result")


def _check_int(value: object, name: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or int(value) < 1:
        raise KernelscopeError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def _prepare(x: object, kernel: object, bias: object, groups: object):
    """Validate and bring everything to 4-D: (x4, k4, bias, groups, squeeze, integer)."""
    x = as_matrix(x, "x")
    kernel = as_matrix(kernel, "kernel")
    if x.ndim not in (2, 4):
        raise KernelscopeError(f"x must be 2-D (H, W) or 4-D (N, C, H, W); got {x.ndim}-D shape "
                               f"{x.shape}")
    if kernel.ndim not in (2, 4):
        raise KernelscopeError(f"kernel must be 2-D (kh, kw) or 4-D (O, C/groups, kh, kw); got "
                               f"{kernel.ndim}-D shape {kernel.shape}")
    groups = _check_int(groups, "groups")
    squeeze = x.ndim == 2 and kernel.ndim == 2
    x4 = x[None, None] if x.ndim == 2 else x  # (N, C, H, W)
    k4 = kernel[None, None] if kernel.ndim == 2 else kernel  # (O, C/groups, kh, kw)
    n, c = x4.shape[:2]
    o, cg = k4.shape[:2]
    if c % groups:
        raise KernelscopeError(f"groups={groups} must divide the input channels C={c} "
                               f"(x shape {x.shape})")
    if o % groups:
        raise KernelscopeError(f"groups={groups} must divide the output channels O={o} "
                               f"(kernel shape {kernel.shape})")
    if cg != c // groups:
        raise KernelscopeError(f"kernel shape {kernel.shape} needs C/groups = {cg} input channels "
                               f"per group, but x has C={c} channels and groups={groups} "
                               f"(C/groups = {c // groups}); kernel must be (O, {c // groups}, kh, kw)")
    if bias is not None:
        bias = as_matrix(bias, "bias")
        if bias.ndim == 0:
            bias = bias.reshape(1)
        if bias.shape != (o,):
            raise KernelscopeError(f"bias must have shape ({o},), one value per output channel; "
                                   f"got shape {bias.shape}")
    integer = (x4.dtype.kind == "i" and k4.dtype.kind == "i"
               and (bias is None or bias.dtype.kind == "i"))
    return x4, k4, bias, groups, squeeze, integer


def correlate2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None = None, *,
                stride: int | tuple[int, int] = 1, padding: Padding = "valid",
                padding_mode: str = "zeros", pad_value: float = 0.0,
                dilation: int | tuple[int, int] = 1, groups: int = 1,
                method: str = "auto") -> np.ndarray:
    """2-D cross-correlation, as a CNN layer computes it (the kernel is not flipped).

    ``out[n, o, i, j] = bias[o] + sum_{c, u, v} x_pad[n, g*C/groups + c, i*sh + u*dh, j*sw + v*dw]
    * kernel[o, c, u, v]`` with ``g = o // (O / groups)``.

    Parameters
    ----------
    x : ndarray of shape (H, W) or (N, C, H, W)
        The input (lists are accepted). Finite real numbers.
    kernel : ndarray of shape (kh, kw) or (O, C/groups, kh, kw)
    bias : ndarray of shape (O,), optional
        Added to every pixel of output channel ``o``.
    stride : int or (int, int)
        Step between output positions.
    padding : {"valid", "same", "full"} or int or (ph, pw) or (top, bottom, left, right)
        See :func:`~kernelscope.ops.shapes.resolve_padding`.
    padding_mode : {"zeros", "constant", "reflect", "replicate", "circular"}
        See :func:`~kernelscope.ops.padding.pad2d`.
    pad_value : float
        Fill value for ``padding_mode="constant"``.
    dilation : int or (int, int)
        Spacing between kernel taps.
    groups : int
        Input and output channels are split into ``groups`` independent blocks
        (``groups=C`` with ``O=C`` is a depthwise layer).
    method : {"auto", "direct", "im2col", "shift", "fft"}
        The strategy (module docstring). All give the same result up to rounding.

    Returns
    -------
    ndarray of shape (H_out, W_out) for a 2-D x and 2-D kernel, else (N, O, H_out, W_out)
        int64 when x, kernel and bias are integers (exact), else the promoted float
        type (at least float32). Sizes from :func:`~kernelscope.ops.shapes.output_shape`.

    Raises
    ------
    KernelscopeError
        For any invalid argument, with what was received and what is allowed.

    Examples
    --------
    >>> x = np.array([[9, 8, 7, 6], [5, 4, 3, 2], [1, 2, 3, 4], [5, 6, 7, 8]])
    >>> k = np.arange(1, 10).reshape(3, 3)
    >>> correlate2d(x, k)
    array([[154, 157],
           [200, 233]])
    >>> correlate2d(x, k, padding="same").shape
    (4, 4)
    >>> correlate2d(np.ones((2, 3, 8, 8)), np.ones((4, 3, 3, 3)), stride=2).shape
    (2, 4, 3, 3)
    """
    return _run(x, kernel, bias, stride=stride, padding=padding, padding_mode=padding_mode,
                pad_value=pad_value, dilation=dilation, groups=groups, method=method, flip=False)


def convolve2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray | None = None, *,
               stride: int | tuple[int, int] = 1, padding: Padding = "valid",
               padding_mode: str = "zeros", pad_value: float = 0.0,
               dilation: int | tuple[int, int] = 1, groups: int = 1,
               method: str = "auto") -> np.ndarray:
    """2-D true convolution: cross-correlation with the kernel flipped on both axes.

    ``convolve2d(x, k, ...) == correlate2d(x, flip_kernel(k), ...)``; same parameters
    and return value as :func:`correlate2d`.

    Examples
    --------
    >>> x = np.array([[9, 8, 7, 6], [5, 4, 3, 2], [1, 2, 3, 4], [5, 6, 7, 8]])
    >>> k = np.arange(1, 10).reshape(3, 3)
    >>> convolve2d(x, k)
    array([[266, 233],
           [160, 157]])
    >>> bool((convolve2d(x, k) == correlate2d(x, flip_kernel(k))).all())
    True
    """
    return _run(x, kernel, bias, stride=stride, padding=padding, padding_mode=padding_mode,
                pad_value=pad_value, dilation=dilation, groups=groups, method=method, flip=True)


def _run(x, kernel, bias, *, stride, padding, padding_mode, pad_value, dilation, groups, method,
         flip: bool) -> np.ndarray:
    if not isinstance(method, str) or method not in METHODS:
        raise KernelscopeError("method: " + suggest(str(method), METHODS, what="method"))
    mode = check_padding_mode(padding_mode)
    x4, k4, bias, groups, squeeze, integer = _prepare(x, kernel, bias, groups)
    strides = as_pair(stride, "stride")
    dilations = as_pair(dilation, "dilation")
    h, w = x4.shape[-2:]
    kh, kw = k4.shape[-2:]
    output_shape((h, w), (kh, kw), stride=strides, padding=padding, dilation=dilations)  # checks fit
    pads = resolve_padding(padding, (h, w), (kh, kw), stride=strides, dilation=dilations)
    if flip:
        k4 = k4[..., ::-1, ::-1]
    if mode == "constant" and (not isinstance(pad_value, numbers.Real) or isinstance(pad_value, bool)
                               or not np.isfinite(pad_value)):
        raise KernelscopeError(f"pad_value must be a finite real number; got {pad_value!r}")
    if integer and mode == "constant" and not float(pad_value).is_integer():
        integer = False
    if integer:
        _check_int64_range(x4, k4, bias, pad_value if mode == "constant" else 0)
    if integer:
        dtype = np.dtype(np.int64)
    else:
        dtype = np.result_type(x4.dtype, k4.dtype, *(() if bias is None else (bias.dtype,)))
        dtype = np.promote_types(dtype, np.float32)
    xp = _pad(x4, pads, mode, pad_value)  # (N, C, Hp, Wp)
    chosen = method
    if method == "auto":
        chosen = choose_method(xp.shape, k4.shape, groups=groups, integer=integer, stride=strides)
    if chosen == "fft" and integer:
        size = xp.shape[-2] * xp.shape[-1]
        if _fft.exact_for_integers(float(np.abs(xp).max()), k4, size):
            out = _fft.correlate_padded(xp, k4, strides, dilations, groups, np.dtype(np.float64))
            out = np.rint(out).astype(np.int64)
        else:
            out = _im2col.correlate_padded(xp, k4, strides, dilations, groups, dtype)
    else:
        out = _IMPLEMENTATIONS[chosen].correlate_padded(xp, k4, strides, dilations, groups, dtype)
    if bias is not None:
        out += bias.astype(dtype)[None, :, None, None]
    return out[0, 0] if squeeze else out
