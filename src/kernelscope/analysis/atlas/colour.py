"""Colour of RGB kernels: how much of a kernel's energy lies off the luminance axis.

A luminance edge weights R, G and B alike; a colour-opponent kernel (red against
green, blue against yellow) does not. With ``l = (1, 1, 1) / sqrt(3)`` the luminance
direction in channel space, the off-luminance fraction of a kernel ``k`` of shape
``(3, kh, kw)`` is ``1 - sum_p (l . k[:, p])^2 / sum k^2``: 0 for a pure luminance
kernel, 1 for a kernel whose channel weights sum to zero at every pixel, 2/3 on
average for random kernels. Equal weights are used rather than the perceptual
(0.299, 0.587, 0.114) because networks see per-channel normalised inputs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["off_luminance_fraction"]


def off_luminance_fraction(kernels: np.ndarray) -> np.ndarray:
    """Fraction of each RGB kernel's energy off the luminance axis (NaN unless C == 3).

    Parameters
    ----------
    kernels : ndarray of shape (N, C, kh, kw)

    Returns
    -------
    ndarray of shape (N,)

    Examples
    --------
    >>> grey = np.ones((1, 3, 2, 2)); opponent = np.stack([np.ones((2, 2)), -np.ones((2, 2)), np.zeros((2, 2))])[None]
    >>> off_luminance_fraction(np.concatenate([grey, opponent])).round(6).tolist()
    [0.0, 1.0]
    """
    kernels = np.asarray(kernels, dtype=float)
    n, c = kernels.shape[:2]
    if c != 3:
        return np.full(n, np.nan)
    luminance = kernels.sum(axis=1) / np.sqrt(3.0)  # (N, kh, kw)
    total = np.sum(kernels**2, axis=(1, 2, 3))
    on = np.sum(luminance**2, axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, 1.0 - on / np.where(total > 0, total, 1.0), np.nan)
