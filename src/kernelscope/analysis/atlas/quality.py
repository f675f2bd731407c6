"""Filter quality: norm, sparsity, spatial entropy, and flags for degenerate kernels.

* **norm**: L2 norm of the whole kernel (all channels).
* **sparsity**: Hoyer's measure ``(sqrt(n) - L1 / L2) / (sqrt(n) - 1)`` over the
  kernel's ``n`` values: 0 when all values have the same magnitude, 1 for one non-zero.
* **spatial entropy**: entropy of the energy map ``e_p = sum_c k[c, p]^2 / sum k^2``
  over pixels, divided by ``log(kh * kw)``: 1 when energy is spread evenly, 0 when it
  sits on one pixel.
* **dead**: norm below ``dead_tol`` times the layer's median norm (or exactly 0).
* **flat**: the mean carries more than ``flat_tol`` of the energy (a near-constant
  kernel: only its overall level is informative, its shape is noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Quality", "kernel_quality"]


@dataclass(frozen=True)
class Quality:
    """Quality summaries of N kernels (arrays of shape (N,))."""

    norm: np.ndarray
    sparsity: np.ndarray
    entropy: np.ndarray
    dead: np.ndarray
    flat: np.ndarray

    @property
    def degenerate(self) -> np.ndarray:
        return self.dead | self.flat


def kernel_quality(kernels: np.ndarray, *, dead_tol: float = 1e-3, flat_tol: float = 0.99) -> Quality:
    """Norm, sparsity, spatial entropy and degenerate flags of each kernel.

    Parameters
    ----------
    kernels : ndarray of shape (N, C, kh, kw)
    dead_tol : float
        A kernel whose norm is below ``dead_tol`` x the median norm is dead.
    flat_tol : float
        A kernel whose mean carries more than this share of its energy (per channel) is flat.

    Returns
    -------
    Quality

    Examples
    --------
    >>> k = np.zeros((3, 1, 3, 3)); k[0, 0, 1, 1] = 1.0; k[1] = 1.0
    >>> q = kernel_quality(k)
    >>> q.sparsity.round(3).tolist(), q.entropy.round(3).tolist()[:2]
    ([1.0, 0.0, nan], [0.0, 1.0])
    >>> q.dead.tolist(), q.flat.tolist()
    ([False, False, True], [False, True, False])
    """
    kernels = np.asarray(kernels, dtype=float)
    n, c, kh, kw = kernels.shape
    flat_values = kernels.reshape(n, -1)
    size = flat_values.shape[1]
    l2 = np.linalg.norm(flat_values, axis=1)
    l1 = np.abs(flat_values).sum(axis=1)
    positive = l2 > 0
    safe = np.where(positive, l2, 1.0)
    sparsity = np.where(positive, (np.sqrt(size) - l1 / safe) / max(np.sqrt(size) - 1, 1e-12), np.nan)
    energy = np.sum(kernels**2, axis=1).reshape(n, -1)  # (N, kh*kw)
    share = energy / np.where(positive, l2**2, 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(share > 0, np.log(np.where(share > 0, share, 1.0)), 0.0)
    entropy = np.where(positive, np.abs(np.sum(share * logs, axis=1)) / np.log(kh * kw), np.nan)
    median = float(np.median(l2)) if n else 0.0
    dead = (l2 == 0) | (l2 < dead_tol * median)
    means = kernels.mean(axis=(2, 3))  # (N, C)
    dc_energy = kh * kw * np.sum(means**2, axis=1)
    flat = positive & ~dead & (dc_energy > flat_tol * np.where(positive, l2**2, 1.0))
    return Quality(norm=l2, sparsity=sparsity, entropy=entropy, dead=dead, flat=flat)
