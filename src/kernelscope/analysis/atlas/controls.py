"""Null distributions: kernels of the same shape that carry no learned structure.

A score means something only beside the score that structure-free kernels of the
same shape reach (random 3x3 kernels match a Gabor bank with a median cosine near
0.9). Five nulls, each an array ``(n, C, kh, kw)``:

``random``
    independent standard normal values (the shape of PyTorch's default init, which
    draws each weight independently).
``smooth``
    independent normal values smoothed by a Gaussian of ``smooth_sigma`` pixels (drawn
    on a larger field, then cropped, so that the field is stationary). Smoothness
    alone makes kernels look like blobs and ramps; this control shows how far.
``shuffled``
    the kernels under study with their pixel positions permuted (the same permutation
    for every channel of a kernel): same values, same colours, no spatial arrangement.
``spectral``
    random fields with the kernels' own mean power spectrum (per channel, on the
    kernel's grid, random phases): as smooth and as band-limited as the layer,
    with no particular arrangement. Where ``smooth`` asks "more than smoothness of
    one pixel?", this asks "more than this layer's frequency content?".
``init``
    the network at initialisation: the run's epoch-0 kernels, or fresh initialisations
    of the same layer (see :func:`~kernelscope.analysis.atlas.atlas_of`).
"""

from __future__ import annotations

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["NULL_KINDS", "null_kernels"]

NULL_KINDS = ("random", "smooth", "shuffled", "spectral", "init")


def null_kernels(kind: str, shape: tuple[int, int, int, int], *, n: int = 1000,
                 rng: np.random.Generator | int | None = 0, kernels: np.ndarray | None = None,
                 smooth_sigma: float = 1.0) -> np.ndarray:
    """Draw ``n`` structure-free kernels of ``shape[1:]`` for the null ``kind``.

    Parameters
    ----------
    kind : {"random", "smooth", "shuffled", "spectral"}
        ``"init"`` kernels come from the network itself and are not drawn here.
    shape : tuple of int
        ``(O, C, kh, kw)`` of the kernels under study (``O`` is ignored).
    n : int
        Number of null kernels.
    rng : Generator or int or None
        Random generator or seed.
    kernels : ndarray of shape (O, C, kh, kw), optional
        The kernels to shuffle (``kind="shuffled"``) or whose spectrum to copy (``"spectral"``).
    smooth_sigma : float
        Width of the smoothing Gaussian in pixels (``kind="smooth"``).

    Returns
    -------
    ndarray of shape (n, C, kh, kw)

    Examples
    --------
    >>> k = np.arange(18.0).reshape(2, 1, 3, 3)
    >>> s = null_kernels("shuffled", k.shape, n=4, kernels=k)
    >>> s.shape, sorted(s[0].ravel().tolist()) == list(range(9))
    ((4, 1, 3, 3), True)
    >>> null_kernels("smooth", (1, 3, 5, 5), n=2).shape
    (2, 3, 5, 5)
    """
    rng = np.random.default_rng(rng)
    _, c, kh, kw = (int(v) for v in shape)
    if n < 1:
        raise KernelscopeError(f"n must be at least 1 null kernel, got {n}")
    if kind == "random":
        return rng.standard_normal((n, c, kh, kw))
    if kind == "smooth":
        from scipy.ndimage import gaussian_filter

        if smooth_sigma <= 0:
            raise KernelscopeError(f"smooth_sigma must be > 0 pixels, got {smooth_sigma}")
        margin = int(np.ceil(3 * smooth_sigma))
        field = rng.standard_normal((n, c, kh + 2 * margin, kw + 2 * margin))
        field = gaussian_filter(field, sigma=(0, 0, smooth_sigma, smooth_sigma), mode="wrap")
        return field[:, :, margin : margin + kh, margin : margin + kw].copy()
    if kind == "shuffled":
        if kernels is None:
            raise KernelscopeError("the 'shuffled' null needs the kernels to shuffle (kernels=None)")
        kernels = np.asarray(kernels, dtype=float)
        o = kernels.shape[0]
        flat = kernels.reshape(o, c, kh * kw)
        source = np.arange(n) % o
        order = np.argsort(rng.random((n, kh * kw)), axis=1)  # one permutation per null kernel
        shuffled = np.take_along_axis(flat[source], order[:, None, :], axis=2)  # (n, C, kh*kw)
        return shuffled.reshape(n, c, kh, kw)
    if kind == "spectral":
        if kernels is None:
            raise KernelscopeError("the 'spectral' null needs the kernels whose spectrum it copies (kernels=None)")
        kernels = np.asarray(kernels, dtype=float)
        power = np.mean(np.abs(np.fft.fft2(kernels)) ** 2, axis=0)  # (C, kh, kw), symmetric in frequency
        noise = np.fft.fft2(rng.standard_normal((n, c, kh, kw)))  # white: flat expected power kh*kw
        fields = np.real(np.fft.ifft2(noise * np.sqrt(power / (kh * kw))[None]))  # (n, C, kh, kw)
        return fields
    if kind == "init":
        raise KernelscopeError("the 'init' null comes from the network: pass init_kernels= or use atlas_of()")
    from kernelscope.errors import suggest

    raise KernelscopeError(suggest(kind, NULL_KINDS, what="null"))
