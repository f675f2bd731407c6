"""Smoothing kernels: identity, box (mean), binomial and Gaussian.

Each kernel is a separable outer product of a 1-D profile with itself, built in the
open, and sums to 1 (a constant image passes through unchanged).
"""

from __future__ import annotations

import math

import numpy as np

from kernelscope.kernels._checks import odd_size, positive_float, size_from_radius

__all__ = ["identity_kernel", "box_kernel", "binomial_vector", "gaussian_vector", "gaussian_kernel",
           "gaussian_default_size"]


def identity_kernel(size: int = 3) -> np.ndarray:
    """The kernel that leaves an image unchanged: a 1 at the centre.

    Parameters
    ----------
    size : int, odd
        Side length.

    Returns
    -------
    kernel : ndarray of shape (size, size), float64

    Examples
    --------
    >>> identity_kernel(3)
    array([[0., 0., 0.],
           [0., 1., 0.],
           [0., 0., 0.]])
    """
    size = odd_size("size", size)
    kernel = np.zeros((size, size))
    kernel[size // 2, size // 2] = 1.0
    return kernel


def box_kernel(size: int = 3) -> np.ndarray:
    """The mean over a ``size x size`` window: ``ones((size, size)) / size**2``.

    Examples
    --------
    >>> box_kernel(3) * 9
    array([[1., 1., 1.],
           [1., 1., 1.],
           [1., 1., 1.]])
    """
    size = odd_size("size", size)
    row = np.full(size, 1.0 / size)  # (size,) the 1-D mean
    return np.outer(row, row)  # (size, size)


def binomial_vector(size: int) -> np.ndarray:
    """Row ``size - 1`` of Pascal's triangle, unnormalised: the discrete Gaussian of Sobel.

    Examples
    --------
    >>> binomial_vector(3)
    array([1., 2., 1.])
    >>> binomial_vector(5)
    array([1., 4., 6., 4., 1.])
    """
    if size < 1:
        raise ValueError("size must be >= 1")
    return np.array([math.comb(size - 1, k) for k in range(size)], dtype=np.float64)


def gaussian_default_size(sigma: float) -> int:
    """The size SciPy and scikit-image use: radius ``int(4 * sigma + 0.5)`` (``truncate=4``).

    Examples
    --------
    >>> gaussian_default_size(1.0)
    9
    """
    return size_from_radius(4.0 * sigma + 0.5)


def gaussian_vector(sigma: float, size: int | None = None) -> np.ndarray:
    """Sampled 1-D Gaussian ``exp(-x**2 / (2 sigma**2))`` on ``x = -r..r``, normalised to sum 1.

    Examples
    --------
    >>> gaussian_vector(1.0, 3).round(4)
    array([0.2741, 0.4519, 0.2741])
    """
    sigma = positive_float("sigma", sigma, maximum=200.0)
    size = gaussian_default_size(sigma) if size is None else odd_size("size", size)
    x = np.arange(size) - size // 2  # (size,) pixel offsets from the centre
    g = np.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def gaussian_kernel(sigma: float = 1.0, size: int | None = None) -> np.ndarray:
    """Isotropic 2-D Gaussian, the outer product of two sampled 1-D Gaussians, summing to 1.

    Parameters
    ----------
    sigma : float > 0
        Standard deviation in pixels.
    size : int, odd, optional
        Side length. Default ``2 * int(4 * sigma + 0.5) + 1``: the truncation of
        ``scipy.ndimage.gaussian_filter`` and ``skimage.filters.gaussian``, so that
        filtering with this kernel and ``padding_mode="replicate"`` equals
        ``skimage.filters.gaussian(image, sigma)`` (whose default mode is ``'nearest'``).

    Returns
    -------
    kernel : ndarray of shape (size, size), float64

    Notes
    -----
    The Gaussian is sampled at pixel centres, not integrated over pixels; for small
    sigma (< 0.5) sampling makes it close to the identity.

    Examples
    --------
    >>> k = gaussian_kernel(1.0, size=3)
    >>> k.round(3)
    array([[0.075, 0.124, 0.075],
           [0.124, 0.204, 0.124],
           [0.075, 0.124, 0.075]])
    >>> float(k.sum())
    1.0
    """
    g = gaussian_vector(sigma, size)  # (size,)
    return np.outer(g, g)  # (size, size)
