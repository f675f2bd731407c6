"""Gabor kernels: a Gaussian envelope times a cosine grating.

``g(x, y) = exp(-(x'**2 / sigma_x**2 + y'**2 / sigma_y**2) / 2) / (2 pi sigma_x sigma_y)
* cos(2 pi f x' + phase)`` with ``x' = x cos(theta) + y sin(theta)`` and
``y' = -x sin(theta) + y cos(theta)``.

Conventions: image coordinates (``x`` right, ``y`` **down**), so ``theta`` is measured
from +x towards +y, clockwise on screen. ``theta`` is the direction of the grating's
wave vector: ``theta = 0`` gives vertical stripes, which respond to vertical edges and
bars (like ``sobel_x``). These are exactly scikit-image's conventions: with
``sigma_x = sigma_y = sigma`` and the default size, ``gabor_kernel(frequency=f,
theta=t, phase=p)`` equals ``skimage.filters.gabor_kernel(f, t, sigma_x=sigma,
sigma_y=sigma, offset=p).real`` (pinned in tests). Under ``np.rot90`` (counter-clockwise
on screen) ``rot90(gabor(theta)) == gabor(theta - pi/2)``.

Phase: ``0`` is the even (cosine, symmetric, bar-detecting) kernel; ``-pi/2`` the odd
(sine, antisymmetric, edge-detecting) kernel, positive on the +x' side, so that the odd
kernel at ``theta = 0`` responds positively to intensity increasing to the right, like
``sobel_x``.
"""

from __future__ import annotations

import math

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.kernels._checks import finite_float, odd_size, positive_float, size_from_radius

__all__ = ["gabor_kernel", "bandwidth_sigma", "EVEN", "ODD"]

EVEN = 0.0  # phase of the even (cosine) Gabor
ODD = -math.pi / 2  # phase of the odd (sine) Gabor: cos(a - pi/2) = sin(a)


def bandwidth_sigma(frequency: float, bandwidth: float = 1.0) -> float:
    """The envelope sigma that gives a half-magnitude bandwidth of ``bandwidth`` octaves.

    The same rule as scikit-image's default (``bandwidth=1``): ``sigma ~ 0.56 / frequency``.

    Examples
    --------
    >>> round(bandwidth_sigma(0.25), 4)
    2.2487
    """
    b = bandwidth
    return 1.0 / math.pi * math.sqrt(math.log(2) / 2.0) * (2.0**b + 1) / (2.0**b - 1) / frequency


def gabor_kernel(*, frequency: float | None = None, wavelength: float | None = None,
                 theta: float = 0.0, phase: float = 0.0, sigma: float | None = None,
                 aspect: float = 1.0, size: int | None = None, zero_mean: bool = False,
                 parity: str | None = None) -> np.ndarray:
    """A real Gabor kernel (see the module docstring for the formula and conventions).

    Parameters
    ----------
    frequency : float in (0, 0.5], optional
        Cycles per pixel of the grating. Give exactly one of ``frequency`` and ``wavelength``.
    wavelength : float >= 2, optional
        Pixels per cycle (``1 / frequency``).
    theta : float
        Direction of the wave vector in radians, from +x towards +y (clockwise on screen).
    phase : float
        Phase offset in radians: 0 even (cosine), ``-pi/2`` odd (sine).
    sigma : float > 0, optional
        Envelope standard deviation across the stripes (along the wave vector). Default:
        one octave of bandwidth, ``~0.56 / frequency`` (scikit-image's default).
    aspect : float > 0
        ``sigma / sigma_along_stripes`` (OpenCV's ``gamma``): below 1 the envelope is
        elongated along the stripes.
    size : int, odd, optional
        Side length of the square kernel. Default: the smallest odd square that holds 3
        standard deviations of the envelope in every direction of the rotated frame
        (scikit-image's ``n_stds=3``; the same size when ``aspect == 1``).
    zero_mean : bool
        Subtract the mean so that flat regions give zero (an even Gabor otherwise has a
        small response to the mean brightness).
    parity : {"even", "odd"}, optional
        Shorthand for ``phase=0`` (even, cosine) or ``phase=-pi/2`` (odd, sine); give
        either ``parity`` or a non-zero ``phase``, not both.

    Returns
    -------
    kernel : ndarray of shape (size, size), float64

    Examples
    --------
    >>> k = gabor_kernel(frequency=0.25, theta=0.0, sigma=1.0, size=5)
    >>> k.shape
    (5, 5)
    >>> bool(np.allclose(k, k[:, ::-1]))  # even: symmetric about the vertical axis
    True
    >>> odd = gabor_kernel(wavelength=4, phase=-np.pi / 2, sigma=1.0, size=5)
    >>> bool(odd[2, 3] > 0 > odd[2, 1])  # positive to the right of the centre
    True
    >>> bool(np.allclose(odd, gabor_kernel(wavelength=4, parity="odd", sigma=1.0, size=5)))
    True
    """
    if (frequency is None) == (wavelength is None):
        raise KernelscopeError(
            f"give exactly one of frequency and wavelength, got frequency={frequency!r}, "
            f"wavelength={wavelength!r}"
        )
    if parity is not None:
        if parity not in ("even", "odd"):
            raise KernelscopeError(f"parity must be 'even' or 'odd', got {parity!r}")
        if phase != 0.0:
            raise KernelscopeError(f"give parity or phase, not both (got parity={parity!r}, phase={phase!r})")
        phase = EVEN if parity == "even" else ODD
    if wavelength is not None:
        wavelength = positive_float("wavelength", wavelength, maximum=1000.0)
        if wavelength < 2.0:
            raise KernelscopeError(
                f"wavelength must be >= 2 pixels (shorter gratings alias), got {wavelength!r}"
            )
        frequency = 1.0 / wavelength
    frequency = positive_float("frequency", frequency, maximum=0.5)
    theta = finite_float("theta", theta)
    phase = finite_float("phase", phase)
    aspect = positive_float("aspect", aspect, maximum=100.0)
    sigma_x = bandwidth_sigma(frequency) if sigma is None else positive_float("sigma", sigma, maximum=200.0)
    sigma_y = sigma_x / aspect
    if size is None:
        ct, st = abs(math.cos(theta)), abs(math.sin(theta))
        x0 = math.ceil(max(3 * sigma_x * ct, 3 * sigma_y * st, 1))
        y0 = math.ceil(max(3 * sigma_y * ct, 3 * sigma_x * st, 1))
        size = size_from_radius(max(x0, y0))
    else:
        size = odd_size("size", size)
    r = np.arange(size) - size // 2  # (size,) offsets from the centre
    y, x = np.meshgrid(r, r, indexing="ij")  # (size, size): y down the rows, x along columns
    xr = x * math.cos(theta) + y * math.sin(theta)  # along the wave vector
    yr = -x * math.sin(theta) + y * math.cos(theta)  # along the stripes
    envelope = np.exp(-0.5 * (xr**2 / sigma_x**2 + yr**2 / sigma_y**2)) / (2 * np.pi * sigma_x * sigma_y)
    kernel = envelope * np.cos(2 * np.pi * frequency * xr + phase)  # (size, size)
    if zero_mean:
        kernel = kernel - kernel.mean()
    return kernel
