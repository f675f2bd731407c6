"""Shift-and-add: the output is a sum of ``kh * kw`` shifted copies of the input.

For every kernel tap ``(u, v)``, the input shifted by ``(u * dilation, v * dilation)``
(a strided view) is weighted by that tap and added to the output. With one input
channel per group (depthwise layers) the weight is one number per channel and the
whole step is an element-wise multiply-add, which is what makes this strategy fast
where im2col's matrix products degenerate; otherwise each tap is a ``1 x 1``
convolution, a small matrix product. Exact for integers (int64).
"""

from __future__ import annotations

import numpy as np

__all__ = ["correlate_padded"]


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
    kernel = kernel.astype(dtype, copy=False)
    out = np.zeros((n, groups, og, h_out, w_out), dtype=dtype)  # (N, G, Og, H_out, W_out)
    tmp = np.empty((n, groups, og, h_out, w_out), dtype=dtype)
    xg = xp.reshape(n, groups, cg, hp, wp)  # (N, G, Cg, Hp, Wp)
    kg = kernel.reshape(groups, og, cg, kh, kw)  # (G, Og, Cg, kh, kw)
    for u in range(kh):
        for v in range(kw):
            top, left = u * dh, v * dw
            # (N, G, Cg, H_out, W_out): the input pixels that meet tap (u, v)
            shifted = xg[:, :, :, top:top + sh * (h_out - 1) + 1:sh, left:left + sw * (w_out - 1) + 1:sw]
            if cg == 1:
                weights = kg[:, :, 0, u, v][None, :, :, None, None]  # (1, G, Og, 1, 1)
                np.multiply(shifted, weights, out=tmp)  # broadcast over Og
            else:
                flat = shifted.reshape(n, groups, cg, h_out * w_out)  # (N, G, Cg, HW)
                np.matmul(kg[:, :, :, u, v], flat, out=tmp.reshape(n, groups, og, h_out * w_out))
            out += tmp
    return out.reshape(n, o, h_out, w_out)
