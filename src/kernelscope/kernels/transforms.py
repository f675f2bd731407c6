"""Rotations and flips of kernels: the dihedral group of the square (8 elements).

All functions act on the last two axes, so a whole bank ``(O, C, kh, kw)`` is
transformed in one call. Rotations are counter-clockwise on screen, as ``np.rot90``.
"""

from __future__ import annotations

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["rotate90", "flip", "dihedral_transforms", "DIHEDRAL_NAMES"]

DIHEDRAL_NAMES = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose",
                  "anti_transpose")


def _as_kernel(kernel: np.ndarray) -> np.ndarray:
    kernel = np.asarray(kernel)
    if kernel.ndim < 2:
        raise KernelscopeError(f"kernel must have at least 2 dimensions (..., kh, kw), got shape {kernel.shape}")
    return kernel


def rotate90(kernel: np.ndarray, k: int = 1) -> np.ndarray:
    """Rotate by ``k`` quarter turns counter-clockwise on screen (over the last two axes).

    Examples
    --------
    >>> rotate90(np.array([[1, 2], [3, 4]]))
    array([[2, 4],
           [1, 3]])
    """
    return np.rot90(_as_kernel(kernel), k, axes=(-2, -1)).copy()


def flip(kernel: np.ndarray, axis: str = "lr") -> np.ndarray:
    """Mirror left-right (``"lr"``), up-down (``"ud"``) or both (``"both"``, = rotation by 180).

    ``flip(k, "both")`` turns a correlation kernel into the equivalent convolution kernel.

    Examples
    --------
    >>> flip(np.array([[1, 2], [3, 4]]), "ud")
    array([[3, 4],
           [1, 2]])
    """
    kernel = _as_kernel(kernel)
    axes = {"lr": (-1,), "ud": (-2,), "both": (-2, -1)}
    if axis not in axes:
        raise KernelscopeError(f"axis must be one of 'lr', 'ud', 'both', got {axis!r}")
    return np.flip(kernel, axis=axes[axis]).copy()


def dihedral_transforms(kernel: np.ndarray) -> dict[str, np.ndarray]:
    """The 8 rotations and reflections of ``kernel``, keyed by name.

    Parameters
    ----------
    kernel : ndarray of shape (..., kh, kw)

    Returns
    -------
    transforms : dict of str to ndarray
        Keys ``identity, rot90, rot180, rot270`` (counter-clockwise), ``flip_lr``,
        ``flip_ud``, ``transpose`` (mirror about the main diagonal) and
        ``anti_transpose`` (about the anti-diagonal). Non-square kernels swap
        ``kh`` and ``kw`` under the odd rotations and the two transposes.

    Examples
    --------
    >>> t = dihedral_transforms(np.array([[1, 2], [3, 4]]))
    >>> list(t) == list(DIHEDRAL_NAMES)
    True
    >>> t["anti_transpose"]
    array([[4, 2],
           [3, 1]])
    """
    kernel = _as_kernel(kernel)
    transpose = np.swapaxes(kernel, -1, -2)
    return {
        "identity": kernel.copy(),
        "rot90": rotate90(kernel, 1),
        "rot180": rotate90(kernel, 2),
        "rot270": rotate90(kernel, 3),
        "flip_lr": flip(kernel, "lr"),
        "flip_ud": flip(kernel, "ud"),
        "transpose": transpose.copy(),
        "anti_transpose": rotate90(transpose, 2),
    }
