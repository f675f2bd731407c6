"""Edge and Laplacian kernels, each built in the open from 1-D parts.

Conventions (pinned in tests)
-----------------------------
Kernels are applied by **cross-correlation** (``out[i, j] = sum k[u, v] * x[i + u, j + v]``,
what CNN layers compute). Coordinates are image coordinates: ``x`` grows to the right
(columns) and ``y`` grows **down** (rows), as in OpenCV and scikit-image. Every
first-derivative kernel responds **positively** when intensity increases in its named
direction:

* ``*_x``: intensity increasing to the right (a dark-to-bright vertical edge);
* ``*_y``: intensity increasing downwards (a dark-to-bright horizontal edge);
* ``*_d45``: increasing towards the lower right; ``*_d135``: towards the lower left
  (angles measured from +x towards +y, i.e. clockwise on screen).

A 3x3 first-derivative kernel is ``outer(smoothing, difference)``::

    sobel_x = outer([1, 2, 1], [-1, 0, 1]) =  -1  0  1
                                              -2  0  2
                                              -1  0  1

and ``*_y`` is its transpose. The diagonal variants rotate the ring of the eight
neighbours by one step (45 degrees), as compass kernels are made.

Under ``np.rot90`` (counter-clockwise on screen): ``rot90(sobel_x) == -sobel_y`` and
``rot90(sobel_y) == sobel_x``.
"""

from __future__ import annotations

import numpy as np

from kernelscope.kernels._checks import odd_size
from kernelscope.kernels.smoothing import binomial_vector, identity_kernel

__all__ = [
    "DIFFERENCE", "central_difference", "sobel_vectors", "derivative_pair", "rotate_ring",
    "sobel_kernels", "prewitt_kernels", "scharr_kernels", "roberts_kernels",
    "laplacian_4", "laplacian_8", "sharpen_kernel", "emboss_kernel",
]

DIFFERENCE = np.array([-1.0, 0.0, 1.0])  # central difference: right neighbour minus left one
SECOND_DIFFERENCE = np.array([1.0, -2.0, 1.0])  # second difference: x[i-1] - 2 x[i] + x[i+1]

# The eight neighbours of the centre of a 3x3 kernel, clockwise on screen from the top left.
_RING = [(0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0)]


def central_difference() -> np.ndarray:
    """The 1-D central difference ``[-1, 0, 1]`` (positive for increasing intensity)."""
    return DIFFERENCE.copy()


def sobel_vectors(size: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """The 1-D parts of a ``size x size`` Sobel kernel: ``(smoothing, difference)``.

    The smoothing part is the binomial ``size``-vector; the difference part is the
    binomial ``(size - 2)``-vector convolved with ``[-1, 0, 1]`` (as in OpenCV).

    Examples
    --------
    >>> sobel_vectors(3)
    (array([1., 2., 1.]), array([-1.,  0.,  1.]))
    >>> sobel_vectors(5)
    (array([1., 4., 6., 4., 1.]), array([-1., -2.,  0.,  2.,  1.]))
    """
    size = odd_size("size", size, minimum=3)
    smooth = binomial_vector(size)  # (size,)
    diff = np.convolve(binomial_vector(size - 2), DIFFERENCE)  # (size,)
    return smooth, diff


def derivative_pair(smooth: np.ndarray, diff: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(kernel_x, kernel_y)``: ``outer(smooth, diff)`` and its transpose."""
    kx = np.outer(smooth, diff)  # (k, k): smooth down the rows, differentiate along columns
    return kx, kx.T.copy()


def rotate_ring(kernel: np.ndarray, steps: int = 1) -> np.ndarray:
    """Rotate the outer ring of a 3x3 kernel by ``steps`` x 45 degrees clockwise on screen.

    Examples
    --------
    >>> sx, _ = sobel_kernels()
    >>> rotate_ring(sx).astype(int)
    array([[-2, -1,  0],
           [-1,  0,  1],
           [ 0,  1,  2]])
    """
    kernel = np.asarray(kernel, dtype=np.float64)
    if kernel.shape != (3, 3):
        raise ValueError(f"rotate_ring needs a 3x3 kernel, got shape {kernel.shape}")
    values = [kernel[p] for p in _RING]
    out = kernel.copy()
    for i, p in enumerate(_RING):
        out[p] = values[(i - steps) % 8]
    return out


def sobel_kernels(size: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Sobel ``(x, y)`` kernels of odd ``size`` (3 gives the classic, 5 and 7 OpenCV's larger ones).

    Examples
    --------
    >>> sx, sy = sobel_kernels()
    >>> sx.astype(int)
    array([[-1,  0,  1],
           [-2,  0,  2],
           [-1,  0,  1]])
    >>> bool((sy == sx.T).all())
    True
    """
    return derivative_pair(*sobel_vectors(size))


def prewitt_kernels() -> tuple[np.ndarray, np.ndarray]:
    """Prewitt ``(x, y)``: ``outer([1, 1, 1], [-1, 0, 1])`` and its transpose.

    Examples
    --------
    >>> prewitt_kernels()[0].astype(int)
    array([[-1,  0,  1],
           [-1,  0,  1],
           [-1,  0,  1]])
    """
    return derivative_pair(np.ones(3), DIFFERENCE)


def scharr_kernels() -> tuple[np.ndarray, np.ndarray]:
    """Scharr ``(x, y)``: ``outer([3, 10, 3], [-1, 0, 1])``, better rotation invariance than Sobel.

    Examples
    --------
    >>> scharr_kernels()[0].astype(int)
    array([[ -3,   0,   3],
           [-10,   0,  10],
           [ -3,   0,   3]])
    """
    return derivative_pair(np.array([3.0, 10.0, 3.0]), DIFFERENCE)


def roberts_kernels() -> tuple[np.ndarray, np.ndarray]:
    """Roberts cross ``(d45, d135)``: 2x2 differences along the two diagonals.

    ``d45`` is positive when intensity increases towards the lower right, ``d135``
    towards the lower left.

    Examples
    --------
    >>> d45, d135 = roberts_kernels()
    >>> d45.astype(int)
    array([[-1,  0],
           [ 0,  1]])
    >>> d135.astype(int)
    array([[ 0, -1],
           [ 1,  0]])
    """
    d45 = np.array([[-1.0, 0.0], [0.0, 1.0]])
    return d45, np.fliplr(d45).copy()


def laplacian_4() -> np.ndarray:
    """4-neighbour Laplacian: the second difference along x plus the one along y.

    Negative at the centre: a bright dot gives a negative response, a dark dot a
    positive one; a linear ramp gives zero.

    Examples
    --------
    >>> laplacian_4().astype(int)
    array([[ 0,  1,  0],
           [ 1, -4,  1],
           [ 0,  1,  0]])
    """
    kernel = np.zeros((3, 3))
    kernel[1, :] += SECOND_DIFFERENCE  # d2/dx2
    kernel[:, 1] += SECOND_DIFFERENCE  # d2/dy2
    return kernel


def laplacian_8() -> np.ndarray:
    """8-neighbour Laplacian: the 4-neighbour one plus its 45-degree rotation.

    Examples
    --------
    >>> laplacian_8().astype(int)
    array([[ 1,  1,  1],
           [ 1, -8,  1],
           [ 1,  1,  1]])
    """
    return laplacian_4() + rotate_ring(laplacian_4())


def sharpen_kernel() -> np.ndarray:
    """Sharpen: identity minus the 4-neighbour Laplacian (adds back the detail).

    Examples
    --------
    >>> sharpen_kernel().astype(int)
    array([[ 0, -1,  0],
           [-1,  5, -1],
           [ 0, -1,  0]])
    """
    return identity_kernel(3) - laplacian_4()


def emboss_kernel() -> np.ndarray:
    """Emboss: identity plus the diagonal Sobel (light from the upper left, relief look).

    Examples
    --------
    >>> emboss_kernel().astype(int)
    array([[-2, -1,  0],
           [-1,  1,  1],
           [ 0,  1,  2]])
    """
    return identity_kernel(3) + rotate_ring(sobel_kernels()[0])
