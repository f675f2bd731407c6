"""Centre-surround kernels: Laplacian of Gaussian and difference of Gaussians.

Both sum to zero (a flat region gives no response) and are rotation symmetric; they
respond to blobs whose radius is about ``sigma * sqrt(2)``.
"""

from __future__ import annotations

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.kernels._checks import odd_size, positive_float, size_from_radius
from kernelscope.kernels.smoothing import gaussian_kernel

__all__ = ["log_kernel", "dog_kernel"]


def log_kernel(sigma: float = 1.4, size: int | None = None) -> np.ndarray:
    """Laplacian of Gaussian, sampled and shifted to sum exactly to zero.

    ``LoG(x, y) = (x**2 + y**2 - 2 sigma**2) / (2 pi sigma**6) * exp(-(x**2 + y**2) / (2 sigma**2))``.

    Parameters
    ----------
    sigma : float > 0
        Scale of the Gaussian in pixels.
    size : int, odd, optional
        Side length; default ``2 * int(4 * sigma + 0.5) + 1``.

    Returns
    -------
    kernel : ndarray of shape (size, size), float64
        Negative at the centre, like :func:`~kernelscope.kernels.edges.laplacian_4`:
        a bright blob gives a negative response at its centre.

    Notes
    -----
    Sampling and truncating the continuous LoG leaves a small non-zero sum; the
    mean is subtracted so that flat regions give exactly zero.

    Examples
    --------
    >>> k = log_kernel(1.0, size=5)
    >>> bool(k[2, 2] < 0), bool(abs(k.sum()) < 1e-12)
    (True, True)
    """
    sigma = positive_float("sigma", sigma, maximum=200.0)
    size = size_from_radius(4.0 * sigma + 0.5) if size is None else odd_size("size", size, minimum=3)
    r = np.arange(size) - size // 2  # (size,) offsets from the centre
    y, x = np.meshgrid(r, r, indexing="ij")  # (size, size) each
    rr = (x**2 + y**2) / (2.0 * sigma**2)
    kernel = (rr - 1.0) / (np.pi * sigma**4) * np.exp(-rr)  # (size, size)
    return kernel - kernel.mean()


def dog_kernel(sigma: float = 1.0, ratio: float = 1.6, size: int | None = None,
               polarity: str = "on") -> np.ndarray:
    """Difference of Gaussians ``G(sigma) - G(ratio * sigma)``: a centre-surround receptive field.

    Parameters
    ----------
    sigma : float > 0
        Centre scale in pixels.
    ratio : float > 1
        Surround scale over centre scale (1.6 approximates the LoG, Marr & Hildreth).
    size : int, odd, optional
        Side length; default ``2 * int(4 * ratio * sigma + 0.5) + 1`` (covers the surround).
    polarity : {"on", "off"}
        ``"on"``: positive centre, negative surround (a bright spot on a dark background
        gives a positive response); ``"off"``: the negative of that.

    Returns
    -------
    kernel : ndarray of shape (size, size), float64
        Sums to zero: both Gaussians are normalised to 1 on the same grid.

    Examples
    --------
    >>> k = dog_kernel(1.0, size=7)
    >>> bool(k[3, 3] > 0 > k[3, 0]), bool(abs(k.sum()) < 1e-12)
    (True, True)
    >>> bool(np.allclose(dog_kernel(1.0, size=7, polarity="off"), -k))
    True
    """
    sigma = positive_float("sigma", sigma, maximum=200.0)
    ratio = positive_float("ratio", ratio, maximum=20.0)
    if ratio <= 1.0:
        raise KernelscopeError(f"ratio must be > 1 (the surround is wider than the centre), got {ratio!r}")
    if polarity not in ("on", "off"):
        raise KernelscopeError(f"polarity must be 'on' or 'off', got {polarity!r}")
    if size is None:
        size = size_from_radius(4.0 * ratio * sigma + 0.5)
    else:
        size = odd_size("size", size, minimum=3)
    kernel = gaussian_kernel(sigma, size) - gaussian_kernel(ratio * sigma, size)  # (size, size)
    kernel -= kernel.mean()  # exact zero sum despite rounding
    return kernel if polarity == "on" else -kernel
