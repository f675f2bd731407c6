"""Occlusion geometry: where the parts are, where the controls go, what covers them.

- Part masks from ONet's five landmarks (:func:`landmark_part_masks`, :func:`onet_part_masks`):
  a disc around each eye and the nose, a capsule (a thick segment) joining the mouth corners.
- Control occluders (:func:`control_masks`): the part's own mask moved to random places of the
  same image where it does not overlap the part (equal area, elsewhere on the face); the
  shifts come from :func:`kernelscope.data.face_masks.control_offsets`, whose overlaps are one
  full cross-correlation by the project's engine.
- The occluder's fill (:func:`occlude`): zero (the normalised data mean), each image's mean,
  a blurred copy of the image (the local luminance, no new edge) or a number.

The protocol that uses them is :mod:`kernelscope.analysis.parts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kernelscope.data.face_masks import control_offsets, shift_mask
from kernelscope.errors import KernelscopeError, suggest

__all__ = [
    "PART_NAMES",
    "DEFAULT_RADIUS",
    "landmark_part_masks",
    "onet_part_masks",
    "check_part_masks",
    "control_offsets",
    "shift_mask",
    "control_masks",
    "fill_values",
    "occlude",
]

#: Parts that can be drawn from ONet's five landmarks.
PART_NAMES = ("eyes", "left_eye", "right_eye", "nose", "mouth")

#: Default radii as fractions of the image side: 4 px at ONet's 48x48 (2.1 px at 25x25).
DEFAULT_RADIUS = 4 / 48


# ----------------------------------------------------------------------------- part masks

def _disc(size: tuple[int, int], centres: np.ndarray, radius_px: float) -> np.ndarray:
    """(N, H, W) bool: pixels whose centre lies within ``radius_px`` of the centre (x, y) in pixels."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)  # (H, W)
    dx = xx[None] - centres[:, 0, None, None]  # (N, H, W)
    dy = yy[None] - centres[:, 1, None, None]
    return dx * dx + dy * dy <= radius_px * radius_px


def _capsule(size: tuple[int, int], a: np.ndarray, b: np.ndarray, radius_px: float) -> np.ndarray:
    """(N, H, W) bool: pixels within ``radius_px`` of the segment from ``a`` to ``b`` (pixels, (N, 2))."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    p = np.stack([xx, yy], axis=-1)[None]  # (1, H, W, 2)
    ab = (b - a)[:, None, None, :]  # (N, 1, 1, 2)
    ap = p - a[:, None, None, :]  # (N, H, W, 2)
    length2 = np.maximum((ab * ab).sum(-1), 1e-12)  # (N, 1, 1)
    t = np.clip((ap * ab).sum(-1) / length2, 0.0, 1.0)  # (N, H, W)
    nearest = a[:, None, None, :] + t[..., None] * ab  # (N, H, W, 2)
    d2 = ((p - nearest) ** 2).sum(-1)
    return d2 <= radius_px * radius_px


def landmark_part_masks(landmarks: np.ndarray, size: int | tuple[int, int], *,
                        parts: Sequence[str] = ("eyes", "nose", "mouth"),
                        radius: float = DEFAULT_RADIUS) -> dict[str, np.ndarray]:
    """Boolean part masks drawn from five face landmarks.

    Each eye and the nose is a disc around its landmark; the mouth is a capsule
    (a thick segment) joining the two mouth corners; ``"eyes"`` is both eye discs.

    Parameters
    ----------
    landmarks : ndarray of shape (N, 5, 2)
        ``(x, y)`` of left eye, right eye, nose, left and right mouth corner, as
        fractions of the image width and height (ONet's output; see
        :func:`kernelscope.models.onet.onet_predict`). A fraction ``f`` maps to
        the pixel coordinate ``f * side - 0.5`` (pixel ``i`` has its centre at ``i``).
    size : int or (int, int)
        ``H`` (= ``W``) or ``(H, W)`` of the masks.
    parts : sequence of str
        Any of :data:`PART_NAMES`.
    radius : float
        Disc radius (and capsule half-width) as a fraction of the image side
        (default 4/48: 4 px on ONet's 48x48 input).

    Returns
    -------
    dict of str to ndarray of shape (N, H, W), bool

    Examples
    --------
    >>> marks = np.array([[[0.3, 0.35], [0.7, 0.35], [0.5, 0.55], [0.35, 0.75], [0.65, 0.75]]])
    >>> m = landmark_part_masks(marks, 48)
    >>> sorted(m), m["eyes"].shape, int(m["eyes"].sum()), bool(m["eyes"][0, 16, 14])
    (['eyes', 'mouth', 'nose'], (1, 48, 48), 102, True)
    """
    landmarks = np.asarray(landmarks, dtype=np.float64)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
        raise KernelscopeError(f"landmarks: expected shape (N, 5, 2), got {tuple(landmarks.shape)}")
    h, w = (size, size) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if h < 1 or w < 1:
        raise KernelscopeError(f"size: expected positive sides, got {(h, w)}")
    unknown = [p for p in parts if p not in PART_NAMES]
    if unknown:
        raise KernelscopeError(suggest(unknown[0], PART_NAMES, what="part (landmark parts)"))
    px = landmarks * np.array([w, h]) - 0.5  # (N, 5, 2) in pixels
    r = radius * min(h, w)
    masks: dict[str, np.ndarray] = {}
    for part in parts:
        if part == "left_eye":
            masks[part] = _disc((h, w), px[:, 0], r)
        elif part == "right_eye":
            masks[part] = _disc((h, w), px[:, 1], r)
        elif part == "eyes":
            masks[part] = _disc((h, w), px[:, 0], r) | _disc((h, w), px[:, 1], r)
        elif part == "nose":
            masks[part] = _disc((h, w), px[:, 2], r)
        elif part == "mouth":
            masks[part] = _capsule((h, w), px[:, 3], px[:, 4], r)
    return masks


def onet_part_masks(images: np.ndarray, size: int | tuple[int, int] | None = None, *,
                    parts: Sequence[str] = ("eyes", "nose", "mouth"),
                    radius: float = DEFAULT_RADIUS) -> dict[str, np.ndarray]:
    """Part masks for face crops, from the landmarks the pretrained ONet places on them.

    Parameters
    ----------
    images : ndarray of shape (N, H, W) or (N, C, H, W)
        Face crops in [0, 1] (e.g. :func:`kernelscope.data.faces.lfw_faces`).
    size : int or (int, int), optional
        Size of the masks (default: the images' ``(H, W)``).
    parts, radius
        As in :func:`landmark_part_masks`.

    Returns
    -------
    dict of str to ndarray of shape (N, size, size), bool

    Examples
    --------
    >>> from kernelscope.data.faces import lfw_faces
    >>> m = onet_part_masks(lfw_faces()[:3], parts=["eyes"])
    >>> rows = np.nonzero(m["eyes"])[1]  # eyes lie in the upper half of the aligned crops
    >>> m["eyes"].shape, bool((rows < 13).all())
    ((3, 25, 25), True)
    """
    from kernelscope.models.onet import onet_predict

    images = np.asarray(images)
    if size is None:
        size = tuple(images.shape[-2:])
    landmarks = onet_predict(images)["landmarks"]  # (N, 5, 2)
    return landmark_part_masks(landmarks, size, parts=parts, radius=radius)

def check_part_masks(masks: Mapping[str, np.ndarray], n: int, hw: tuple[int, int],
                     parts: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The masks of ``parts`` (default: all) as (n, H, W) bool arrays, each checked: present, of the
    images' shape, and marking at least one pixel on every image."""
    if parts is None:
        parts = list(masks)
    if not parts:
        raise KernelscopeError("parts: expected at least one part name, got none")
    out = {}
    for part in parts:
        if part not in masks:
            raise KernelscopeError(
                f"part {part!r} has no mask (masks given: {', '.join(sorted(masks)) or 'none'}); "
                "give a mask for it or choose among those"
            )
        mask = np.asarray(masks[part])
        if mask.shape != (n, *hw):
            raise KernelscopeError(
                f"mask of part {part!r}: expected shape {(n, *hw)} to match the images, got {tuple(mask.shape)}"
            )
        mask = mask.astype(bool)
        empty = np.flatnonzero(~mask.reshape(n, -1).any(axis=1))
        if empty.size:
            raise KernelscopeError(
                f"mask of part {part!r} is empty on image {int(empty[0])} ({empty.size} empty in all); "
                "every image needs the part marked"
            )
        out[part] = mask
    return out


# ----------------------------------------------------------------------------- occlusions


def control_masks(mask: np.ndarray, n_controls: int, rng: np.random.Generator, *,
                  allowed: np.ndarray | None = None) -> np.ndarray:
    """``n_controls`` control occluders per image: each image's part mask moved elsewhere.

    Parameters
    ----------
    mask : ndarray of shape (N, H, W), bool
        The part, on every image (none empty).
    n_controls : int
    rng : numpy.random.Generator
        Drawn from image by image, in order (:func:`control_offsets`).
    allowed : ndarray of shape (N, H, W), bool, optional
        Where the controls may lie (default: anywhere in the image).

    Returns
    -------
    ndarray of shape (N, n_controls, H, W), bool
        Same area as the part, inside the image (and ``allowed``), not overlapping the part.

    Examples
    --------
    >>> m = np.zeros((2, 8, 8), bool); m[:, 1:3, 1:3] = True
    >>> c = control_masks(m, 3, np.random.default_rng(0))
    >>> c.shape, c.sum(axis=(2, 3)).tolist(), bool((c & m[:, None]).any())
    ((2, 3, 8, 8), [[4, 4, 4], [4, 4, 4]], False)
    """
    n, h, w = mask.shape
    out = np.zeros((n, n_controls, h, w), dtype=bool)
    for i in range(n):
        offsets = control_offsets(mask[i], n_controls, rng, allowed=None if allowed is None else allowed[i])
        for k, (dy, dx) in enumerate(offsets):
            out[i, k] = shift_mask(mask[i], int(dy), int(dx))
    return out


def fill_values(images: np.ndarray, fill: str | float) -> np.ndarray:
    """The occluder's values for ``images`` (N, C, H, W): (N, C, 1, 1) per image and channel, or
    (N, C, H, W) for "blur" (see :func:`occlude`)."""
    n, c = images.shape[:2]
    if isinstance(fill, str):
        if fill == "zero":
            return np.zeros((n, c, 1, 1), dtype=images.dtype)
        if fill == "mean":
            return images.mean(axis=(2, 3), keepdims=True)
        if fill == "blur":
            from scipy.ndimage import gaussian_filter

            sigma = min(images.shape[2:]) / 8  # 6 px at 48x48: wider than an eye, keeps the local luminance
            return gaussian_filter(images, sigma=(0, 0, sigma, sigma), mode="nearest").astype(images.dtype)
        raise KernelscopeError(f"fill: expected 'zero', 'mean', 'blur' or a number, got {fill!r}")
    value = float(fill)
    if not np.isfinite(value):
        raise KernelscopeError(f"fill: expected a finite number, got {fill!r}")
    return np.full((n, c, 1, 1), value, dtype=images.dtype)


def occlude(images: np.ndarray, masks: np.ndarray, fill: str | float = "zero") -> np.ndarray:
    """Images with the masked pixels replaced by ``fill``, on every channel.

    Parameters
    ----------
    images : ndarray of shape (N, C, H, W)
        Model inputs (already normalised).
    masks : ndarray of shape (N, H, W), bool
    fill : "zero", "mean", "blur" or float
        ``"zero"``: 0, which after normalisation is the data set's mean (mid-grey
        for ONet); ``"mean"``: each image's own per-channel mean; ``"blur"``: the
        image blurred by a Gaussian of sigma = side / 8 (the local luminance, no new
        edge); a number: that value.

    Returns
    -------
    ndarray of shape (N, C, H, W)

    Examples
    --------
    >>> x = np.ones((1, 1, 2, 2)); m = np.array([[[True, False], [False, False]]])
    >>> occlude(x, m)[0, 0]
    array([[0., 1.],
           [1., 1.]])
    """
    images = np.asarray(images)
    values = fill_values(images, fill)
    return np.where(np.asarray(masks, dtype=bool)[:, None], values, images)
