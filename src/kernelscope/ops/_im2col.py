"""im2col: lay every receptive field out as a column, then one matrix product per group.

For a chunk of images, the windows of the padded input (a strided view from
``sliding_window_view``, no copy) are copied into a reused buffer laid out as
``(n, groups, C/groups * kh * kw, H_out * W_out)``; the kernel, reshaped to
``(groups, O/groups, C/groups * kh * kw)``, multiplies it in one batched
``np.matmul`` that writes straight into the output ``(n, O, H_out, W_out)``.
Chunks keep the buffer near ``CHUNK_BYTES`` (cache- and memory-friendly).
Integer inputs use NumPy's exact int64 matmul.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["correlate_padded", "CHUNK_BYTES"]

CHUNK_BYTES = 8 * 2**20


def correlate_padded(xp: np.ndarray, kernel: np.ndarray, stride: tuple[int, int],
                     dilation: tuple[int, int], groups: int, dtype: np.dtype) -> np.ndarray:
    """Cross-correlate an already padded batch ``(N, C, Hp, Wp)`` -> ``(N, O, H_out, W_out)``."""
    xp = xp.astype(dtype, copy=False)
    n, c, hp, wp = xp.shape
    o, cg, kh, kw = kernel.shape
    (sh, sw), (dh, dw) = stride, dilation
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    h_out, w_out = (hp - eh) // sh + 1, (wp - ew) // sw + 1
    og = o // groups
    depth = cg * kh * kw  # length of one column
    # (N, C, H_out, W_out, kh, kw): a view, every window of every image
    windows = sliding_window_view(xp, (eh, ew), axis=(2, 3))[:, :, ::sh, ::sw, ::dh, ::dw]
    # (N, G, Cg, kh, kw, H_out, W_out): the order the columns are laid out in
    windows = windows.transpose(0, 1, 4, 5, 2, 3).reshape(n, groups, cg, kh, kw, h_out, w_out)
    kmat = np.ascontiguousarray(kernel.reshape(groups, og, depth), dtype=dtype)  # (G, Og, depth)
    out = np.empty((n, o, h_out, w_out), dtype=dtype)  # (N, O, H_out, W_out)
    per_image = c * kh * kw * h_out * w_out * np.dtype(dtype).itemsize
    chunk = int(max(1, min(n, CHUNK_BYTES // max(per_image, 1))))
    buffer = np.empty((chunk, groups, cg, kh, kw, h_out, w_out), dtype=dtype)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        cols = buffer[:stop - start]
        np.copyto(cols, windows[start:stop])  # (n, G, Cg, kh, kw, H_out, W_out)
        cols = cols.reshape(stop - start, groups, depth, h_out * w_out)  # (n, G, depth, HW)
        target = out[start:stop].reshape(stop - start, groups, og, h_out * w_out)  # a view
        np.matmul(kmat, cols, out=target)  # (n, G, Og, HW)
    return out
