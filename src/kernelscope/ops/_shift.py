"""Shift-and-add: the output is a sum of ``kh * kw`` shifted copies of the input.

For every kernel tap ``(u, v)``, the input pixels that tap meets (a strided view,
see :func:`~kernelscope.ops._im2col.tap_windows`) are weighted by the tap and
added to the output. With one input channel per group (depthwise layers) the
weight is one number per channel and each step is an element-wise multiply-add,
which is what makes this strategy fast where im2col's matrix products degenerate;
otherwise each tap is a ``1 x 1`` convolution, a small matrix product. The work
goes image by image so that the running sum stays in the CPU cache. Exact for
integers (int64).
"""

from __future__ import annotations

import numpy as np

from kernelscope.ops._im2col import tap_windows
from kernelscope.ops._threads import engine_threads, run_parallel

__all__ = ["correlate_padded", "PLANE_BYTES"]

#: largest size of the per-tap weight planes of the depthwise fast path
PLANE_BYTES = 16 * 2**20


def correlate_padded(xp: np.ndarray, kernel: np.ndarray, stride: tuple[int, int],
                     dilation: tuple[int, int], groups: int, dtype: np.dtype) -> np.ndarray:
    """Cross-correlate an already padded batch ``(N, C, Hp, Wp)`` -> ``(N, O, H_out, W_out)``."""
    xp = xp.astype(dtype, copy=False)
    n, c, hp, wp = xp.shape
    o, cg, kh, kw = kernel.shape
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
