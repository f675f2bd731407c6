"""Shift-and-add: the output is a sum of ``kh * kw`` shifted copies of the input.

For every kernel tap ``(u, v)``, the input pixels that tap meets (a strided view,
see :func:`~kernelscope.ops._im2col.tap_windows`) are weighted by the tap and
added to the output. With one input channel per group (depthwise layers) the
weight is one number per channel and each step is an element-wise multiply-add,
which is what makes this strategy fast where im2col's matrix products degenerate;
otherwise each tap is a ``1 x 1`` convolution, a small matrix product. The work
goes image by image so that the running sum stays in the CPU cache. Exact for
integers (int64).

Float inputs with one input channel per group and stride 1 take a faster route
(:func:`_one_channel_axpy`): the input is laid out channel by channel with all
images of the batch in one flat row, so that every tap of every output channel is
a single fused BLAS ``axpy`` (``acc += w * x[offset:]``) over the whole batch,
computing junk entries where a window would cross a row or image border; those
are cut off at the end.
"""

from __future__ import annotations

import numpy as np

from kernelscope.ops._im2col import tap_windows
from kernelscope.ops._threads import engine_threads, run_parallel

__all__ = ["correlate_padded", "PLANE_BYTES"]

#: largest size of the per-tap weight planes of the depthwise fast path
PLANE_BYTES = 16 * 2**20


def _one_channel_axpy(xp: np.ndarray, kernel: np.ndarray, dilation: tuple[int, int], groups: int,
                      dtype: np.dtype) -> np.ndarray:
    """Stride 1, one input channel per group, float32/float64: one BLAS axpy per tap and output channel."""
    from scipy.linalg import blas

    axpy = blas.saxpy if dtype == np.float32 else blas.daxpy
    n, c, hp, wp = xp.shape
    o, _, kh, kw = kernel.shape
    dh, dw = dilation
    og = o // groups
    h_out, w_out = hp - dh * (kh - 1), wp - dw * (kw - 1)
    flat = np.ascontiguousarray(xp.transpose(1, 0, 2, 3)).reshape(c, n * hp * wp)  # (C, N*Hp*Wp)
    span = n * hp * wp - ((kh - 1) * dh * wp + (kw - 1) * dw)  # entries up to the last real output
    offsets = [u * dh * wp + v * dw for u in range(kh) for v in range(kw)]
    weights = kernel.reshape(o, kh * kw).astype(dtype)  # (O, taps)
    res = np.empty((o, n * hp * wp), dtype=dtype)  # (O, N*Hp*Wp); only [:span] is written and read

    def work(worker: int, start: int, stop: int) -> None:
        for f in range(start, stop):
            src, acc = flat[f // og], res[f, :span]  # (N*Hp*Wp,), (span,)
            np.multiply(src[offsets[0]:offsets[0] + span], weights[f, 0], out=acc)
            for t in range(1, kh * kw):
                axpy(src[offsets[t]:offsets[t] + span], acc, n=span, a=weights[f, t])  # in place

    run_parallel(work, o, -(-o // engine_threads()))
    picked = res.reshape(o, n, hp, wp)[:, :, :h_out, :w_out]  # (O, N, H_out, W_out)
    return np.ascontiguousarray(picked.transpose(1, 0, 2, 3))  # (N, O, H_out, W_out)


def correlate_padded(xp: np.ndarray, kernel: np.ndarray, stride: tuple[int, int],
                     dilation: tuple[int, int], groups: int, dtype: np.dtype) -> np.ndarray:
    """Cross-correlate an already padded batch ``(N, C, Hp, Wp)`` -> ``(N, O, H_out, W_out)``."""
    xp = xp.astype(dtype, copy=False)
    n, c, hp, wp = xp.shape
    o, cg, kh, kw = kernel.shape
    if cg == 1 and stride == (1, 1) and dtype in (np.float32, np.float64):
        return _one_channel_axpy(xp, kernel, dilation, groups, dtype)
    (sh, sw), (dh, dw) = stride, dilation
    h_out = (hp - dh * (kh - 1) - 1) // sh + 1
    w_out = (wp - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    windows, pitch = tap_windows(xp, (kh, kw), stride, dilation)  # (N, C, kh, kw, L)
    length = windows.shape[-1]
    windows = windows.reshape(n, groups, cg, kh, kw, length)  # (N, G, Cg, kh, kw, L)
    kg = kernel.astype(dtype).reshape(groups, og, cg, kh, kw)  # (G, Og, Cg, kh, kw)
    out = np.empty((n, o, h_out, w_out), dtype=dtype)  # (N, O, H_out, W_out)
    planes = None
    if cg == 1 and kh * kw * o * length * np.dtype(dtype).itemsize <= PLANE_BYTES:
        # each tap's weights spread over a full (G, Og, L) plane: NumPy multiplies two
        # contiguous arrays several times faster than it broadcasts a per-channel weight
        planes = np.empty((kh, kw, groups, og, length), dtype=dtype)
        planes[...] = kg[:, :, 0].transpose(2, 3, 0, 1)[..., None]
    buffers: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def work(worker: int, start: int, stop: int) -> None:
        if worker not in buffers:
            buffers[worker] = (np.empty((groups, og, h_out * pitch), dtype=dtype),  # one image's sum
                               np.empty((groups, og, length), dtype=dtype))
        acc, tmp = buffers[worker]
        run = acc[:, :, :length]  # junk columns beyond `length` are never read
        for b in range(start, stop):
            for t, (u, v) in enumerate((u, v) for u in range(kh) for v in range(kw)):
                taps = windows[b, :, :, u, v]  # (G, Cg, L)
                target = run if t == 0 else tmp
                if planes is not None:
                    np.multiply(taps, planes[u, v], out=target)  # (G, Og, L)
                elif cg == 1:
                    np.multiply(taps, kg[:, :, 0, u, v, None], out=target)
                else:
                    np.matmul(kg[:, :, :, u, v], taps, out=target)  # (G, Og, Cg) @ (G, Cg, L)
                if t:
                    np.add(run, tmp, out=run)
            out[b] = acc.reshape(o, h_out, pitch)[:, :, :w_out]

    run_parallel(work, n, -(-n // engine_threads()))
    return out
