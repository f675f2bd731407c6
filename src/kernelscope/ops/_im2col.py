"""im2col: lay every receptive field out as a column, then one matrix product per group.

The windows of the padded input are a strided view (no copy). For a chunk of
images they are copied into a reused buffer laid out as ``(n, groups, C/groups *
kh * kw, H_out * P)``, one column per output pixel; the kernel, reshaped to
``(groups, O/groups, C/groups * kh * kw)``, multiplies it (one matrix product per
image and group) straight into the output layout ``(n, O, H_out, W_out)``. Chunks
keep the buffer near ``CHUNK_BYTES`` (cache-sized) and run on a few threads, each
with single-threaded BLAS (see :mod:`kernelscope.ops._threads`).

With stride 1 the rows of a window are contiguous runs of the flattened padded
image, so each column row is one long contiguous copy; the price is computing
``P = W_pad`` columns per output row instead of ``W_out`` (the extra
``W_pad - W_out`` are cut off at the end). With a larger stride ``P = W_out``.
Integer inputs use NumPy's exact int64 matmul.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from kernelscope.ops._threads import engine_threads, run_parallel

__all__ = ["correlate_padded", "tap_windows", "CHUNK_BYTES"]

CHUNK_BYTES = 2 * 2**20


def tap_windows(xp: np.ndarray, kernel_hw: tuple[int, int], stride: tuple[int, int],
                dilation: tuple[int, int]) -> tuple[np.ndarray, int]:
    """A read-only view ``(N, C, kh, kw, H_out * P)``: for every tap, the input pixels it meets.

    Returns the view and the row pitch ``P`` (output row ``i``, column ``j`` is entry
    ``i * P + j``; with stride 1, ``P = W_pad`` and entries ``j >= W_out`` are junk).
    """
    n, c, hp, wp = xp.shape
    kh, kw = kernel_hw
    (sh, sw), (dh, dw) = stride, dilation
    h_out = (hp - dh * (kh - 1) - 1) // sh + 1
    w_out = (wp - dw * (kw - 1) - 1) // sw + 1
    if (sh, sw) == (1, 1):
        xp = np.ascontiguousarray(xp)
        flat = xp.reshape(n, c, hp * wp)  # (N, C, Hp*Wp)
        length = (h_out - 1) * wp + w_out  # the last needed entry; the rest of the row is junk
        s0, s1, s2 = flat.strides
        view = as_strided(flat, shape=(n, c, kh, kw, length),
                          strides=(s0, s1, dh * wp * s2, dw * s2, s2), writeable=False)
        return view, wp
    windows = sliding_window_view(xp, (dh * (kh - 1) + 1, dw * (kw - 1) + 1), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dh, ::dw]  # (N, C, H_out, W_out, kh, kw)
    return windows.transpose(0, 1, 4, 5, 2, 3).reshape(n, c, kh, kw, h_out * w_out), w_out


def chunk_size(n: int, per_image_bytes: int) -> int:
    """Images per chunk: about ``CHUNK_BYTES`` of buffer, and enough chunks for every thread."""
    by_bytes = max(1, CHUNK_BYTES // max(per_image_bytes, 1))
    return int(max(1, min(n, by_bytes, -(-n // engine_threads()))))


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
    depth = cg * kh * kw  # length of one column
    windows, pitch = tap_windows(xp, (kh, kw), stride, dilation)  # (N, C, kh, kw, L)
    length = windows.shape[-1]
    cells = h_out * pitch  # columns per image, junk included
    windows = windows.reshape(n, groups, cg, kh, kw, length)  # (N, G, Cg, kh, kw, L)
    kmat = np.ascontiguousarray(kernel.reshape(groups, og, depth), dtype=dtype)  # (G, Og, depth)
    out = np.empty((n, o, h_out, w_out), dtype=dtype)  # (N, O, H_out, W_out)
    itemsize = np.dtype(dtype).itemsize
    chunk = chunk_size(n, c * kh * kw * cells * itemsize)
    buffers: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def work(worker: int, start: int, stop: int) -> None:
        if worker not in buffers:  # zeros: the junk columns stay finite
            buffers[worker] = (np.zeros(chunk * groups * depth * cells, dtype=dtype),
                               None if pitch == w_out else np.empty(chunk * o * cells, dtype=dtype))
        col_buf, res_buf = buffers[worker]
        m = stop - start
        cols = col_buf[:m * groups * depth * cells].reshape(m, groups, cg, kh, kw, cells)
        np.copyto(cols[..., :length], windows[start:stop])  # (m, G, Cg, kh, kw, L)
        cols = cols.reshape(m, groups, depth, cells)  # (m, G, depth, cells)
        if res_buf is None:  # no junk columns: straight into the output
            np.matmul(kmat, cols, out=out[start:stop].reshape(m, groups, og, cells))
            return
        prod = res_buf[:m * o * cells].reshape(m, groups, og, cells)
        np.matmul(kmat, cols, out=prod)  # (m, G, Og, cells), one product per image and group
        out[start:stop] = prod.reshape(m, o, h_out, pitch)[..., :w_out]

    run_parallel(work, n, chunk)
    return out
