"""FFT: correlation as a product of spectra, for large kernels.

Cross-correlation with ``K`` is convolution with ``flip(K)``, and convolution is a
pointwise product in the Fourier domain. The padded input is transformed at a
fast length ``>= Hp`` (``scipy.fft.next_fast_len``); the wrap-around of the
circular convolution only touches positions outside the valid region, which is
cut out afterwards (then every ``stride``-th position is kept). Several channels
become, per frequency, a small complex matrix product over the input channels.
The cost barely depends on the kernel size, which is why it wins for large kernels.
The batch goes through in chunks, so memory stays bounded for large batches.
Rounding errors are those of floating point (about ``eps * log(size)`` relative).
"""

from __future__ import annotations

import numpy as np

from kernelscope.ops._threads import engine_threads

__all__ = ["correlate_padded", "exact_for_integers", "CHUNK_BYTES"]

#: the batch is transformed in chunks whose spectra take about this much memory
CHUNK_BYTES = 64 * 2**20


def exact_for_integers(x_abs_max: float, kernel: np.ndarray, fft_size: int) -> bool:
    """Whether float64 FFT results rounded to integers are provably exact.

    The error of an FFT convolution is bounded by about
    ``eps * log2(size) * max|x| * sum|k|``; we demand a margin of 1000x below 0.5.
    """
    l1 = float(np.abs(kernel.astype(np.float64)).reshape(kernel.shape[0], -1).sum(axis=1).max())
    bound = np.finfo(np.float64).eps * max(np.log2(max(fft_size, 2)), 1.0) * x_abs_max * l1
    return bound * 1000 < 0.5


def correlate_padded(xp: np.ndarray, kernel: np.ndarray, stride: tuple[int, int],
                     dilation: tuple[int, int], groups: int, dtype: np.dtype) -> np.ndarray:
    """Cross-correlate an already padded batch ``(N, C, Hp, Wp)`` -> ``(N, O, H_out, W_out)``.

    ``dtype`` must be a float type (integers are computed in float64 by the caller).
    """
    import scipy.fft

    workers = engine_threads()
    xp = xp.astype(dtype, copy=False)
    n, c, hp, wp = xp.shape
    o, cg, kh, kw = kernel.shape
    (sh, sw), (dh, dw) = stride, dilation
    eh, ew = dh * (kh - 1) + 1, dw * (kw - 1) + 1
    og = o // groups
    fh, fw = scipy.fft.next_fast_len(hp, real=True), scipy.fft.next_fast_len(wp, real=True)
    # the dilated kernel, flipped: correlation with K is convolution with flip(K)
    dilated = np.zeros((o, cg, eh, ew), dtype=dtype)  # (O, Cg, eh, ew)
    dilated[:, :, ::dh, ::dw] = kernel
    flipped = dilated[:, :, ::-1, ::-1]
    kf = scipy.fft.rfft2(flipped, s=(fh, fw), workers=workers)  # (O, Cg, fh, fw//2+1)
    nf = fh * (fw // 2 + 1)
    kg = kf.reshape(groups, og, cg, nf).transpose(0, 3, 2, 1)  # (G, F, Cg, Og)
    h_out, w_out = (hp - eh) // sh + 1, (wp - ew) // sw + 1
    out = np.empty((n, o, h_out, w_out), dtype=dtype)  # (N, O, H_out, W_out)
    # images per chunk: the spectra of a chunk's inputs and outputs near CHUNK_BYTES
    per_image = (c + 2 * o) * nf * 2 * np.dtype(dtype).itemsize
    chunk = int(max(1, min(n, CHUNK_BYTES // per_image)))
    for start in range(0, n, chunk):
        m = min(start + chunk, n) - start
        xf = scipy.fft.rfft2(xp[start:start + m], s=(fh, fw), workers=workers)  # (m, C, fh, F)
        if cg == 1 and og == 1:
            yf = xf * kf[None, :, 0]  # (m, O=C, fh, F)
        else:  # per group and frequency: (m, Cg) @ (Cg, Og)
            xg = xf.reshape(m, groups, cg, nf).transpose(1, 3, 0, 2)  # (G, F, m, Cg)
            yf = np.matmul(xg, kg)  # (G, F, m, Og)
            yf = yf.transpose(2, 0, 3, 1).reshape(m, o, fh, fw // 2 + 1)  # (m, O, fh, F)
        full = scipy.fft.irfft2(yf, s=(fh, fw), workers=workers)  # (m, O, fh, fw)
        out[start:start + m] = full[:, :, eh - 1:hp, ew - 1:wp][:, :, ::sh, ::sw]
    return out
