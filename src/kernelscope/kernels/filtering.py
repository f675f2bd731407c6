"""Applying a kernel to an image through the engine (:func:`kernelscope.ops.correlate2d`).

The output has the input's size: the image is padded by ``(k - 1) // 2`` pixels
before and ``k // 2`` after (PyTorch's ``padding="same"``), filled by ``padding_mode``.

Agreement with scikit-image (all pinned in ``tests/kernels/test_kernels_skimage.py``)
---------------------------------------------------------------------------------------
scikit-image filters by **convolution** (``scipy.ndimage.convolve``, which flips the
kernel) with normalised weights and ``y`` pointing down; its ``mode="reflect"`` repeats
the edge pixel (``d c b a | a b c d``), which is ``padding_mode="symmetric"`` here (for a
3x3 kernel that is the same as ``"replicate"``). With ``image`` grey float64:

======================================  ===================================================
scikit-image                            kernelscope (``filter_image(image, ...)``)
======================================  ===================================================
``sobel_h(image)``                      ``"sobel_y", padding_mode="symmetric"`` / 4
``sobel_v(image)``                      ``"sobel_x", padding_mode="symmetric"`` / 4
``prewitt_h(image)``, ``prewitt_v``     ``"prewitt_y"`` / 3, ``"prewitt_x"`` / 3 (symmetric)
``scharr_h(image)``, ``scharr_v``       ``"scharr_y"`` / 16, ``"scharr_x"`` / 16 (symmetric)
``sobel(image)`` (magnitude)            ``edge_magnitude(image, "sobel", ...) / 4 / sqrt(2)``
``laplace(image)``                      ``-1 x "laplacian", padding_mode="symmetric"``
``gaussian(image, sigma)``              ``"gaussian", sigma=sigma, padding_mode="replicate"``
``gabor(image, f, theta, offset=p,      ``gabor_kernel(frequency=f, theta=theta, phase=p,
sigma_x=s, sigma_y=s)[0]``              sigma=s), mode="convolve", padding_mode="symmetric"``
======================================  ===================================================

So the ``_h`` filters of scikit-image ("horizontal edges") are our ``_y`` kernels with
the **same sign** (positive where intensity increases downwards), scaled so that the
smoothing weights sum to 1; its Laplacian has the opposite sign (positive centre).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from kernelscope.data.images import as_image, to_gray
from kernelscope.errors import KernelscopeError, suggest
from kernelscope.kernels.registry import kernel_names, resolve_kernel

__all__ = ["filter_image", "edge_magnitude", "FILTER_PADDING_MODES", "MAGNITUDE_FAMILIES", "magnitude_pairs"]

# The engine's modes plus "symmetric" (scipy's and scikit-image's "reflect": the edge is repeated).
FILTER_PADDING_MODES = ("zeros", "constant", "reflect", "replicate", "circular", "symmetric")
MAGNITUDE_FAMILIES = ("sobel", "sobel5", "prewitt", "scharr")


def _same_padding(kh: int, kw: int) -> tuple[int, int, int, int]:
    return (kh - 1) // 2, kh // 2, (kw - 1) // 2, kw // 2  # (top, bottom, left, right)


def _correlate(planes: np.ndarray, kernel: np.ndarray, padding_mode: str, pad_value: float,
               method: str) -> np.ndarray:
    """planes (P, H, W), kernel (kh, kw) -> (P, H, W): each plane filtered, output the input's size."""
    from kernelscope.ops import correlate2d

    padding = _same_padding(*kernel.shape)
    if padding_mode == "symmetric":
        top, bottom, left, right = padding
        planes = np.pad(planes, ((0, 0), (top, bottom), (left, right)), mode="symmetric")
        padding, padding_mode = (0, 0, 0, 0), "zeros"
    x = planes[:, None]  # (P, 1, H, W): planes as a batch of one-channel images
    out = correlate2d(x, kernel[None, None], padding=padding, padding_mode=padding_mode,
                      pad_value=pad_value, method=method)  # (P, 1, H, W)
    return out[:, 0]


def filter_image(image: np.ndarray | str | os.PathLike, kernel_or_name: np.ndarray | str, *,
                 padding_mode: str = "reflect", pad_value: float = 0.0, color: str = "luminance",
                 mode: str = "correlate", method: str = "auto", **kernel_params: Any) -> np.ndarray:
    """Filter an image with a kernel (an array, a bank name or a spec like ``"gabor:theta=45deg"``).

    Parameters
    ----------
    image : ndarray of shape (H, W) or (H, W, 3), or str or path
        An image in ``[0, 1]`` (integers are scaled by their range), a file, or
        ``"sample:NAME"`` (see :func:`kernelscope.data.images.load_image`).
    kernel_or_name : ndarray of shape (kh, kw) or str
        The kernel, or its name in the bank (:func:`~kernelscope.kernels.kernel_names`).
    padding_mode : {"reflect", "zeros", "constant", "replicate", "circular", "symmetric"}
        How pixels beyond the border are made (see :mod:`kernelscope.ops.padding`);
        ``"symmetric"`` repeats the edge pixel, as scipy's and scikit-image's ``"reflect"``.
    pad_value : float
        Fill value for ``padding_mode="constant"``.
    color : {"luminance", "per-channel"}
        Colour images: filter their luminance (BT.709), or each of R, G, B.
    mode : {"correlate", "convolve"}
        Cross-correlation (as CNN layers) or true convolution (kernel flipped both ways).
    method : str
        The engine's method (``"auto"``, ``"direct"``, ``"im2col"``, ``"fft"``, ...).
    **kernel_params
        Parameters of a named kernel (``sigma=2.0``, ``theta=np.pi / 4``, ...).

    Returns
    -------
    response : ndarray of shape (H, W), or (H, W, 3) for ``color="per-channel"`` on colour
        float64, same size as the image; signed for derivative kernels.

    Raises
    ------
    KernelscopeError
        Unknown kernel names or parameters, images smaller than the kernel, empty
        images, unknown modes.

    Examples
    --------
    >>> step = np.zeros((5, 6)); step[:, 3:] = 1.0          # dark left, bright right
    >>> filter_image(step, "sobel_x")[2]                    # a vertical edge lights up sobel_x ...
    array([0., 0., 4., 4., 0., 0.])
    >>> float(np.abs(filter_image(step, "sobel_y")).max())  # ... and not sobel_y
    0.0
    """
    if color not in ("luminance", "per-channel"):
        raise KernelscopeError(f"color must be 'luminance' or 'per-channel', got {color!r}")
    if mode not in ("correlate", "convolve"):
        raise KernelscopeError(f"mode must be 'correlate' or 'convolve', got {mode!r}")
    if not isinstance(padding_mode, str) or padding_mode not in FILTER_PADDING_MODES:
        raise KernelscopeError("padding_mode: " + suggest(str(padding_mode), FILTER_PADDING_MODES,
                                                          what="padding mode"))
    kernel, label = resolve_kernel(kernel_or_name, **kernel_params)
    image = as_image(image)
    height, width = image.shape[:2]
    kh, kw = kernel.shape
    if height < kh or width < kw:
        raise KernelscopeError(
            f"image of {height}x{width} pixels is smaller than the {kh}x{kw} kernel {label}; "
            "use a larger image or a smaller kernel"
        )
    if mode == "convolve":
        kernel = kernel[::-1, ::-1]
    if image.ndim == 3 and color == "luminance":
        image = to_gray(image)
    planes = image[None] if image.ndim == 2 else np.moveaxis(image, -1, 0)  # (P, H, W)
    out = _correlate(np.ascontiguousarray(planes), np.ascontiguousarray(kernel), padding_mode,
                     pad_value, method)  # (P, H, W)
    return out[0] if image.ndim == 2 else np.moveaxis(out, 0, -1)


def edge_magnitude(image: np.ndarray | str | os.PathLike, family: str = "sobel", **options: Any) -> np.ndarray:
    """Gradient magnitude ``sqrt(gx**2 + gy**2)`` from the ``{family}_x`` and ``{family}_y`` kernels.

    Parameters
    ----------
    image : ndarray or str or path
        As for :func:`filter_image`.
    family : {"sobel", "sobel5", "prewitt", "scharr"}
    **options
        Passed to :func:`filter_image` (``padding_mode``, ``color``, ...).

    Returns
    -------
    ndarray of shape (H, W) (or (H, W, 3) per channel), >= 0

    Examples
    --------
    >>> step = np.zeros((5, 6)); step[:, 3:] = 1.0
    >>> edge_magnitude(step)[2]
    array([0., 0., 4., 4., 0., 0.])
    """
    if family not in MAGNITUDE_FAMILIES:
        raise KernelscopeError(suggest(str(family), MAGNITUDE_FAMILIES, what="edge family"))
    gx = filter_image(image, f"{family}_x", **options)
    gy = filter_image(image, f"{family}_y", **options)
    return np.hypot(gx, gy)


def magnitude_pairs(names: list[str]) -> list[tuple[str, str, str]]:
    """``(family, x_name, y_name)`` for every x/y pair present among bank ``names``.

    Examples
    --------
    >>> magnitude_pairs(["sobel_x", "laplacian", "sobel_y", "scharr_x"])
    [('sobel', 'sobel_x', 'sobel_y')]
    """
    bank = set(kernel_names())
    pairs = []
    for name in names:
        if name.endswith("_x") and name in bank:
            stem = name[:-2]
            if f"{stem}_y" in names and (stem, name, f"{stem}_y") not in pairs:
                pairs.append((stem, name, f"{stem}_y"))
    return pairs
