"""The backward pass of the engine, written with the engine's own forward functions.

A convolution layer computes a cross-correlation (:func:`kernelscope.ops.correlate2d`)::

    y[n, o, i, j] = b[o] + sum_{c, u, v} xp[n, c, i*s + u*d, j*s + v*d] * w[o, c, u, v]

where ``xp`` is the padded input, ``s`` the stride and ``d`` the dilation. Given
the gradient of a loss with respect to ``y`` (``gy``, same shape as ``y``), the
chain rule gives three gradients, and each is again one of the engine's operations:

``grad_bias[o] = sum_{n, i, j} gy[n, o, i, j]``
    a plain sum over the batch and the positions.

``grad_kernel[o, c, u, v] = sum_{n, i, j} gy[n, o, i, j] * xp[n, c, u*d + i*s, v*d + j*s]``
    a **cross-correlation** of the padded input with the output gradient: ``gy``
    plays the kernel, spread out by the stride (the stride becomes a dilation of
    ``gy``) and the forward's dilation becomes the stride of this correlation. The
    batch axis is summed like a channel axis.

``grad_xp[n, c, h, w] = sum_{o, u, v} gy_s[n, o, h - u*d, w - v*d] * w[o, c, u, v]``
    a **true convolution** (the kernel flipped) of the stride-dilated output
    gradient ``gy_s`` (``gy`` with ``s - 1`` zeros between entries) with the kernel,
    channels in and out swapped, padded "full": a transposed convolution. The flip
    that the forward's cross-correlation left out comes back here.

Finally the padding's adjoint maps ``grad_xp`` onto the unpadded input: zero and
constant padding just crop (the padded pixels are constants); reflect, replicate
and circular padding copied source pixels into the border, so the border's
gradient is scatter-added back onto the pixels it was copied from.

Groups are handled by the engine's ``groups`` (the input gradient) or by splitting
the channels into their groups (the kernel gradient).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.ops.padding import check_padding_mode, pad2d
from kernelscope.ops.shapes import Padding, as_pair, output_shape, resolve_padding

__all__ = ["correlate2d_backward", "convolve2d_backward", "dilate2d", "pad2d_adjoint"]


def dilate2d(x: np.ndarray, factor: int | Sequence[int]) -> np.ndarray:
    """Insert ``factor - 1`` zeros between neighbouring entries of the last two axes.

    This is what a stride does to the output gradient: output pixel ``i`` sits at
    input position ``i * stride``, and the positions in between received nothing.

    Parameters
    ----------
    x : ndarray of shape (..., H, W)
    factor : int or (int, int)

    Returns
    -------
    ndarray of shape (..., (H - 1) * fh + 1, (W - 1) * fw + 1)

    Examples
    --------
    >>> dilate2d(np.array([[1, 2], [3, 4]]), 2)
    array([[1, 0, 2],
           [0, 0, 0],
           [3, 0, 4]])
    """
    fh, fw = as_pair(factor, "factor")
    x = np.asarray(x)
    if (fh, fw) == (1, 1):
        return x
    h, w = x.shape[-2:]
    out = np.zeros(x.shape[:-2] + ((h - 1) * fh + 1, (w - 1) * fw + 1), dtype=x.dtype)
    out[..., ::fh, ::fw] = x
    return out


def pad2d_adjoint(grad_padded: np.ndarray, input_hw: Sequence[int], pads: Sequence[int],
                  padding_mode: str = "zeros") -> np.ndarray:
    """The adjoint (transpose) of :func:`~kernelscope.ops.pad2d`: padded-space gradient -> input gradient.

    For "zeros" and "constant" the border pixels are constants, so their gradient
    is dropped (a crop). For "reflect", "replicate" and "circular" every border
    pixel is a copy of an input pixel, so its gradient is added onto that pixel.
    Which pixel is found by padding an image of pixel indices with the same mode.

    Parameters
    ----------
    grad_padded : ndarray of shape (..., H + top + bottom, W + left + right)
    input_hw : (H, W)
    pads : (top, bottom, left, right)
    padding_mode : str

    Returns
    -------
    ndarray of shape (..., H, W)

    Examples
    --------
    >>> g = np.array([[1, 10, 100, 1000, 10000]])      # gradient of a row of 3 padded by 1, 1
    >>> pad2d_adjoint(g, (1, 3), (0, 0, 1, 1), "replicate")
    array([[   11,   100, 11000]])
    >>> pad2d_adjoint(g, (1, 3), (0, 0, 1, 1), "reflect")  # border 1 copies x[1], border 10000 too
    array([[   10, 10101,  1000]])
    >>> pad2d_adjoint(g, (1, 3), (0, 0, 1, 1), "zeros")
    array([[  10,  100, 1000]])
    """
    mode = check_padding_mode(padding_mode)
    top, bottom, left, right = (int(p) for p in pads)
    h, w = int(input_hw[0]), int(input_hw[1])
    grad_padded = np.asarray(grad_padded)
    if grad_padded.shape[-2:] != (h + top + bottom, w + left + right):
        raise KernelscopeError(
            f"grad_padded has height and width {grad_padded.shape[-2:]}; input {h}x{w} padded by "
            f"{(top, bottom, left, right)} is {(h + top + bottom, w + left + right)}")
    interior = grad_padded[..., top:top + h, left:left + w]  # (..., H, W)
    if mode in ("zeros", "constant") or (top, bottom, left, right) == (0, 0, 0, 0):
        return interior.copy()
    # every padded pixel holds a copy of input pixel `source`: pad an index image the same way
    source = pad2d(np.arange(h * w).reshape(h, w), (top, bottom, left, right), mode)  # (Hp, Wp)
    lead = grad_padded.shape[:-2]
    flat = grad_padded.reshape(-1, source.size)  # (B, Hp*Wp)
    index = (np.arange(flat.shape[0])[:, None] * (h * w) + source.ravel()[None, :]).ravel()
    summed = np.bincount(index, weights=flat.ravel().astype(np.float64), minlength=flat.shape[0] * h * w)
    return summed.reshape(lead + (h, w)).astype(grad_padded.dtype)  # (..., H, W)


def _as_batch(x: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Promote 2-D input and/or kernel to the 4-D layout, as the forward does."""
    if x.ndim not in (2, 4):
        raise KernelscopeError(f"x must have shape (H, W) or (N, C, H, W); got {x.shape}")
    if kernel.ndim not in (2, 4):
        raise KernelscopeError(f"kernel must have shape (kh, kw) or (O, C/groups, kh, kw); got {kernel.shape}")
    plain = x.ndim == 2 and kernel.ndim == 2
    x4 = x[None, None] if x.ndim == 2 else x  # (N, C, H, W)
    k4 = kernel[None, None] if kernel.ndim == 2 else kernel  # (O, C/groups, kh, kw)
    return x4, k4, plain


def _gradient_kernel_is_large(x4: np.ndarray, k4: np.ndarray, gy: np.ndarray, pads: Sequence[int]) -> bool:
    """Whether the kernel-gradient correlation should use the FFT under ``method="auto"``.

    There the output gradient plays the kernel: ``H' x W'`` taps (summed over the
    batch too) against only ``kh x kw`` output positions. The FFT's cost does not
    grow with the number of taps; im2col's copying does (measured in
    ``benchmarks/bench_npnet.py``: 1.7 ms by FFT against ~300 ms by im2col for a
    LeNet first layer at batch 64). All-integer inputs keep the exact path.
    """
    if x4.dtype.kind != "f" and gy.dtype.kind != "f":
        return False
    taps = gy.shape[-2] * gy.shape[-1]
    return taps >= 4 * k4.shape[-2] * k4.shape[-1] and taps >= 64


def correlate2d_backward(x: np.ndarray, kernel: np.ndarray, grad_out: np.ndarray, *, bias: bool = True,
                         stride: int | Sequence[int] = 1, padding: Padding = "valid",
                         padding_mode: str = "zeros", pad_value: float = 0.0,
                         dilation: int | Sequence[int] = 1, groups: int = 1, input_grad: bool = True,
                         kernel_grad: bool = True, method: str = "auto",
                         ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`~kernelscope.ops.correlate2d` with respect to input, kernel and bias.

    Parameters
    ----------
    x : ndarray of shape (H, W) or (N, C, H, W)
        The forward's input.
    kernel : ndarray of shape (kh, kw) or (O, C/groups, kh, kw)
        The forward's kernel.
    grad_out : ndarray of shape (H', W') or (N, O, H', W')
        The loss gradient with respect to the forward's output (same shape as the output).
    bias : bool
        Whether the forward had a bias (then ``grad_bias`` is returned, else None).
    stride, padding, padding_mode, pad_value, dilation, groups
        Exactly as given to the forward.
    input_grad, kernel_grad : bool
        Compute the input / kernel gradient (None when False).
    method : str
        The engine method for the correlations and convolutions ("auto", "im2col", "fft", "direct").

    Returns
    -------
    grad_x : ndarray of the shape of ``x``, or None
        A true convolution of the stride-dilated ``grad_out`` with the kernel, then the padding's adjoint.
    grad_kernel : ndarray of the shape of ``kernel``, or None
        A cross-correlation of the padded input with ``grad_out``.
    grad_bias : ndarray of shape (O,) (a scalar array for 2-D input), or None

    Examples
    --------
    >>> x = np.arange(16).reshape(4, 4)
    >>> k = np.array([[1, 0], [0, -1]])
    >>> gx, gk, gb = correlate2d_backward(x, k, np.ones((3, 3), dtype=int))
    >>> gk          # each kernel tap sees the sum of the 3x3 input window it slides over
    array([[45, 54],
           [81, 90]])
    >>> gx          # every input pixel collects the kernel taps that touched it
    array([[ 1,  1,  1,  0],
           [ 1,  0,  0, -1],
           [ 1,  0,  0, -1],
           [ 0, -1, -1, -1]])
    >>> gb
    array(9)
    """
    from kernelscope.ops import convolve2d, correlate2d
    from kernelscope.ops.correlate import as_matrix

    x = as_matrix(x, "x")  # finite real numbers, or a one-line error naming the argument
    kernel = as_matrix(kernel, "kernel")
    grad_out = as_matrix(grad_out, "grad_out")
    x4, k4, plain = _as_batch(x, kernel)
    n, c, h, w = x4.shape
    o, cg, kh, kw = k4.shape
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise KernelscopeError(f"groups must be a positive int; got {groups!r}")
    if c != cg * groups or o % groups:
        raise KernelscopeError(
            f"kernel of shape {kernel.shape} with groups={groups} does not fit input of shape {x.shape}: "
            f"need C = groups * kernel.shape[1] ({groups} * {cg} = {cg * groups}, got C={c}) "
            f"and O divisible by groups (O={o})")
    sh, sw = as_pair(stride, "stride")
    dh, dw = as_pair(dilation, "dilation")
    check_padding_mode(padding_mode)
    out_hw = output_shape((h, w), (kh, kw), stride=(sh, sw), padding=padding, dilation=(dh, dw))
    expected = out_hw if plain else (n, o) + out_hw
    if grad_out.shape != expected:
        raise KernelscopeError(
            f"grad_out has shape {grad_out.shape}, but the forward output for x {x.shape} and kernel "
            f"{kernel.shape} (stride {(sh, sw)}, padding {padding!r}, dilation {(dh, dw)}) has shape {expected}")
    gy = grad_out[None, None] if plain else grad_out  # (N, O, H', W')
    pads = resolve_padding(padding, (h, w), (kh, kw), stride=(sh, sw), dilation=(dh, dw))
    og = o // groups

    grad_bias = None
    if bias:
        grad_bias = gy.sum(axis=(0, 2, 3))  # (O,)
        if plain:
            grad_bias = grad_bias.reshape(())  # a 0-d array

    grad_kernel = None
    if kernel_grad:
        xp = pad2d(x4, pads, padding_mode, pad_value)  # (N, C, Hp, Wp)
        kernel_method = method
        if method == "auto" and _gradient_kernel_is_large(x4, k4, gy, pads):
            kernel_method = "fft"
        parts = []
        for g in range(groups):
            xg = xp[:, g * cg:(g + 1) * cg].swapaxes(0, 1)  # (Cg, N, Hp, Wp): batch acts as channels
            gyg = gy[:, g * og:(g + 1) * og].swapaxes(0, 1)  # (Og, N, H', W'): the gradient is the kernel
            # stride of the forward -> dilation of gy; dilation of the forward -> stride here
            corr = correlate2d(np.ascontiguousarray(xg), np.ascontiguousarray(gyg),
                               stride=(dh, dw), dilation=(sh, sw), method=kernel_method)  # (Cg, Og, >=kh, >=kw)
            parts.append(corr[:, :, :kh, :kw].swapaxes(0, 1))  # (Og, Cg, kh, kw)
        grad_kernel = np.concatenate(parts, axis=0) if groups > 1 else parts[0]  # (O, Cg, kh, kw)
        grad_kernel = np.ascontiguousarray(grad_kernel)
        grad_kernel = grad_kernel.reshape(kernel.shape)  # a 2-D kernel gets a 2-D gradient

    grad_x = None
    if input_grad:
        # channels in and out swapped within each group: (O, Cg, kh, kw) -> (C, Og, kh, kw)
        k_t = k4.reshape(groups, og, cg, kh, kw).swapaxes(1, 2).reshape(c, og, kh, kw)
        gy_s = dilate2d(gy, (sh, sw))  # (N, O, (H'-1)*sh + 1, (W'-1)*sw + 1)
        full = (dh * (kh - 1), dh * (kh - 1), dw * (kw - 1), dw * (kw - 1))
        core = convolve2d(gy_s, np.ascontiguousarray(k_t), padding=full, dilation=(dh, dw),
                          groups=groups, method=method)  # (N, C, rows reached, cols reached)
        hp, wp = h + pads[0] + pads[1], w + pads[2] + pads[3]
        grad_xp = np.zeros((n, c, hp, wp), dtype=core.dtype)  # (N, C, Hp, Wp)
        # rows/columns past the last window (when the stride does not divide evenly) get no gradient
        grad_xp[:, :, :core.shape[2], :core.shape[3]] = core
        grad_x = pad2d_adjoint(grad_xp, (h, w), pads, padding_mode)  # (N, C, H, W)
        grad_x = grad_x.reshape(x.shape)  # a 2-D input gets a 2-D gradient
    return grad_x, grad_kernel, grad_bias


def convolve2d_backward(x: np.ndarray, kernel: np.ndarray, grad_out: np.ndarray, *, bias: bool = True,
                        stride: int | Sequence[int] = 1, padding: Padding = "valid",
                        padding_mode: str = "zeros", pad_value: float = 0.0,
                        dilation: int | Sequence[int] = 1, groups: int = 1, input_grad: bool = True,
                        kernel_grad: bool = True, method: str = "auto",
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of :func:`~kernelscope.ops.convolve2d` (true convolution).

    ``convolve2d(x, k) == correlate2d(x, flip(k))``, so the input gradient is that
    of the correlation with the flipped kernel, and the kernel gradient is the
    flipped kernel gradient of that correlation. Parameters and returns as in
    :func:`correlate2d_backward`.

    Examples
    --------
    >>> x = np.arange(9).reshape(3, 3)
    >>> _, gk, _ = convolve2d_backward(x, np.zeros((2, 2), dtype=int), np.ones((2, 2), dtype=int))
    >>> gk          # the correlation's kernel gradient, flipped
    array([[24, 20],
           [12,  8]])
    """
    kernel = np.asarray(kernel)
    flipped = kernel[..., ::-1, ::-1]
    grad_x, grad_k, grad_b = correlate2d_backward(
        x, flipped, grad_out, bias=bias, stride=stride, padding=padding, padding_mode=padding_mode,
        pad_value=pad_value, dilation=dilation, groups=groups, input_grad=input_grad,
        kernel_grad=kernel_grad, method=method)
    if grad_k is not None:
        grad_k = np.ascontiguousarray(grad_k[..., ::-1, ::-1])
    return grad_x, grad_k, grad_b
