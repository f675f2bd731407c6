"""The reference loop: one output pixel at a time, exactly as the textbook writes it.

This is the implementation ``explain`` mirrors and the tests trust. It is slow
(a Python loop over every output position) and meant for small inputs.

For output pixel ``(n, o, i, j)`` of a cross-correlation with group ``g = o // (O / groups)``::

    out[n, o, i, j] = sum over c < C/groups, u < kh, v < kw of
                      x_padded[n, g * C/groups + c, i * stride_h + u * dilation_h,
                               j * stride_w + v * dilation_w] * kernel[o, c, u, v]
"""

from __future__ import annotations

import numpy as np

__all__ = ["correlate_padded"]


def correlate_padded(xp: np.ndarray, kernel: np.ndarray, stride: tuple[int, int],
                     dilation: tuple[int, int], groups: int, dtype: np.dtype) -> np.ndarray:
    """Cross-correlate an already padded batch, one output position at a time.

    ``xp`` is ``(N, C, Hp, Wp)``, ``kernel`` is ``(O, C/groups, kh, kw)``; returns
    ``(N, O, H_out, W_out)`` in ``dtype`` (int64 accumulation for integers).
    """
    xp = xp.astype(dtype, copy=False)  # (N, C, Hp, Wp)
    kernel = kernel.astype(dtype, copy=False)  # (O, Cg, kh, kw)
    n, _, hp, wp = xp.shape
    o, cg, kh, kw = kernel.shape
    (sh, sw), (dh, dw) = stride, dilation
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1  # effective (dilated) kernel size
    h_out, w_out = (hp - eh) // sh + 1, (wp - ew) // sw + 1
    per_group = o // groups
    out = np.zeros((n, o, h_out, w_out), dtype=dtype)  # (N, O, H_out, W_out)
    for b in range(n):
        for f in range(o):
            g = f // per_group
            channels = xp[b, g * cg:(g + 1) * cg]  # (Cg, Hp, Wp): this filter's input channels
            for i in range(h_out):
                for j in range(w_out):
                    top, left = i * sh, j * sw
                    window = channels[:, top:top + eh:dh, left:left + ew:dw]  # (Cg, kh, kw)
                    out[b, f, i, j] = np.sum(window * kernel[f])
    return out
