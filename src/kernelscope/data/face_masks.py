"""Eye and mouth masks for the bundled face crops, and user-supplied concept masks.

Built-in masks (:func:`face_part_masks`): each 25x25 face is upscaled 8x with
``INTER_CUBIC`` and OpenCV's Haar cascades (``cv2.data.haarcascades``, shipped by
``opencv-python-headless`` 4.x) are run on it: ``haarcascade_eye.xml`` on the top 60%,
``haarcascade_smile.xml`` on the bottom 45%. Detected boxes (at most the two largest
eyes and the largest mouth) are filled as ellipses and scaled back to 25x25. Where a
cascade finds nothing, a fallback template for the aligned ``lfw_subset`` crops is used:
eyes centred near (x 6.5, y 9) and (x 15.5, y 8.5), the mouth near (x 11.5, y 18.5).
How many masks came from each source is reported with the masks.

User masks (:func:`load_masks`): an ``.npz`` file (one array per concept), an ``.npy``
file (one concept named after the file), a folder ``DIR/<concept>/*.png`` (one image
per input image, sorted by name; nonzero = inside), or a dict of arrays.

Moving a mask (:func:`shift_mask`, :func:`control_offsets`): the shifts that put a
mask elsewhere in the image, inside it and not overlapping itself. The occlusion
protocol draws its equal-area controls with them (:mod:`kernelscope.analysis.occlusion`),
the eyes task its "something painted over elsewhere" positives
(:mod:`kernelscope.data.face_tasks`). Where a shifted mask overlaps is one full
cross-correlation, computed by the project's engine (:func:`kernelscope.ops.correlate2d`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["FaceMasks", "face_part_masks", "template_masks", "load_masks", "check_masks", "shift_mask",
           "shift_overlap", "control_offsets"]

_UPSCALE = 8
# Template (x, y, half-width, half-height) ellipses in 25-px coordinates of the aligned crops.
_EYES = ((6.5, 9.0, 2.6, 1.9), (15.5, 8.5, 2.6, 1.9))
_MOUTH = ((11.5, 18.5, 5.0, 2.0),)


@dataclass
class FaceMasks:
    """Concept masks for a set of faces, with where each mask came from."""

    masks: dict[str, np.ndarray]  # concept -> (N, H, W) bool
    source: dict[str, np.ndarray]  # concept -> (N,) str: "cascade" or "template"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # concept -> {"cascade": n, "template": m}

    def to_dict(self) -> dict[str, Any]:
        return {"counts": self.counts,
                "coverage": {c: float(m.mean()) for c, m in self.masks.items()},
                "method": "Haar cascades on 8x INTER_CUBIC upscales (eye: top 60%, smile: bottom 45%), "
                          "template fallback for the aligned crops"}


def _ellipse_mask(shape: tuple[int, int], ellipses) -> np.ndarray:
    ys, xs = np.indices(shape, dtype=np.float64)
    mask = np.zeros(shape, dtype=bool)
    for cx, cy, hx, hy in ellipses:
        mask |= ((xs - cx) / hx) ** 2 + ((ys - cy) / hy) ** 2 <= 1.0
    return mask


def template_masks(n: int, size: tuple[int, int] = (25, 25)) -> dict[str, np.ndarray]:
    """The fallback eye/mouth template for ``n`` aligned 25x25 crops (scaled to ``size``).

    Examples
    --------
    >>> masks = template_masks(2)
    >>> masks["eyes"].shape, bool(masks["eyes"][0, 9, 6]), bool(masks["mouth"][0, 18, 12])
    ((2, 25, 25), True, True)
    """
    sy, sx = size[0] / 25.0, size[1] / 25.0
    eyes = _ellipse_mask(size, [(x * sx, y * sy, a * sx, b * sy) for x, y, a, b in _EYES])
    mouth = _ellipse_mask(size, [(x * sx, y * sy, a * sx, b * sy) for x, y, a, b in _MOUTH])
    return {"eyes": np.repeat(eyes[None], n, axis=0), "mouth": np.repeat(mouth[None], n, axis=0)}


def _cascade(name: str):
    import cv2

    directory = getattr(getattr(cv2, "data", None), "haarcascades", None)
    if directory is None or not hasattr(cv2, "CascadeClassifier"):
        raise KernelscopeError(
            "OpenCV's Haar cascades are missing (opencv-python-headless 5.x ships none); install "
            "'opencv-python-headless>=4.8,<5'"
        )
    classifier = cv2.CascadeClassifier(os.path.join(directory, name))
    if classifier.empty():
        raise KernelscopeError(f"could not load the Haar cascade {name!r} from {directory}")
    return classifier


def _boxes_to_mask(boxes, size: tuple[int, int], y_offset: int) -> np.ndarray:
    ellipses = []
    for x, y, w, h in boxes:
        cx = (x + w / 2) / _UPSCALE - 0.5
        cy = (y + y_offset + h / 2) / _UPSCALE - 0.5
        ellipses.append((cx, cy, max(w / 2 / _UPSCALE, 0.75), max(h / 2 / _UPSCALE * 0.7, 0.75)))
    return _ellipse_mask(size, ellipses)


def face_part_masks(faces: np.ndarray) -> FaceMasks:
    """Eye and mouth masks for face crops, from Haar cascades with a template fallback.

    Parameters
    ----------
    faces : ndarray of shape (N, 25, 25) or (N, 1, 25, 25), values in [0, 1]

    Returns
    -------
    FaceMasks
        ``masks["eyes"]``, ``masks["mouth"]``: (N, 25, 25) bool; ``counts`` says how
        many came from the cascade and how many from the template.

    Examples
    --------
    >>> from kernelscope.data.faces import lfw_faces
    >>> result = face_part_masks(lfw_faces()[:4])
    >>> result.masks["eyes"].shape, sum(result.counts["eyes"].values())
    ((4, 25, 25), 4)
    """
    import cv2

    array = np.asarray(faces, dtype=np.float64)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[0] == 0:
        raise KernelscopeError(f"faces must have shape (N, H, W) or (N, 1, H, W) with N > 0, got {np.shape(faces)}")
    n, height, width = array.shape
    eye_cascade, smile_cascade = _cascade("haarcascade_eye.xml"), _cascade("haarcascade_smile.xml")
    template = template_masks(1, (height, width))
    eyes = np.zeros((n, height, width), dtype=bool)
    mouth = np.zeros((n, height, width), dtype=bool)
    eye_source = np.empty(n, dtype=object)
    mouth_source = np.empty(n, dtype=object)
    big_h, big_w = height * _UPSCALE, width * _UPSCALE
    top_end = int(round(big_h * 0.60))
    bottom_start = int(round(big_h * 0.55))
    for i in range(n):
        image = np.clip(array[i] * 255.0, 0, 255).astype(np.uint8)
        big = cv2.resize(image, (big_w, big_h), interpolation=cv2.INTER_CUBIC)
        found = eye_cascade.detectMultiScale(big[:top_end], scaleFactor=1.1, minNeighbors=3)
        found = sorted((tuple(int(v) for v in b) for b in found), key=lambda b: -b[2] * b[3])[:2]
        if found:
            eyes[i], eye_source[i] = _boxes_to_mask(found, (height, width), 0), "cascade"
        else:
            eyes[i], eye_source[i] = template["eyes"][0], "template"
        found = smile_cascade.detectMultiScale(big[bottom_start:], scaleFactor=1.1, minNeighbors=3)
        found = sorted((tuple(int(v) for v in b) for b in found), key=lambda b: -b[2] * b[3])[:1]
        if found:
            mouth[i], mouth_source[i] = _boxes_to_mask(found, (height, width), bottom_start), "cascade"
        else:
            mouth[i], mouth_source[i] = template["mouth"][0], "template"
    source = {"eyes": eye_source.astype(str), "mouth": mouth_source.astype(str)}
    counts = {c: {"cascade": int((s == "cascade").sum()), "template": int((s == "template").sum())}
              for c, s in source.items()}
    return FaceMasks({"eyes": eyes, "mouth": mouth}, source, counts)


def check_masks(masks: dict[str, np.ndarray], n_images: int, size: tuple[int, int]) -> dict[str, np.ndarray]:
    """Validate concept masks against ``n_images`` images of ``size``; return them as bool arrays.

    Examples
    --------
    >>> check_masks({"eyes": np.zeros((3, 4, 4))}, 2, (4, 4))
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: masks: 'eyes' has 3 masks but there are 2 images
    """
    if not masks:
        raise KernelscopeError("masks: no concept given; give at least one (N, H, W) mask array")
    checked = {}
    for concept, mask in masks.items():
        array = _numeric(mask, concept)
        if array.ndim == 4 and array.shape[1] == 1:
            array = array[:, 0]
        if array.ndim != 3:
            raise KernelscopeError(f"masks: {concept!r} must have shape (N, H, W), got {array.shape}")
        if array.shape[0] != n_images:
            raise KernelscopeError(
                f"masks: {concept!r} has {array.shape[0]} masks but there are {n_images} images"
            )
        if tuple(array.shape[1:]) != tuple(size):
            raise KernelscopeError(
                f"masks: {concept!r} masks are {array.shape[1]}x{array.shape[2]} but the images are "
                f"{size[0]}x{size[1]}; give masks of the image size"
            )
        checked[concept] = array.astype(bool)
    return checked


def load_masks(source: str | os.PathLike | dict[str, Any]) -> dict[str, np.ndarray]:
    """Read concept masks from an ``.npz``/``.npy`` file, a folder of PNG masks, or a dict of arrays.

    A folder holds one sub-folder per concept, with one image per input image
    (sorted by file name); a pixel is inside the mask when it is nonzero.
    """
    if isinstance(source, dict):
        return {str(k): _numeric(v, str(k)) for k, v in source.items()}
    path = Path(source)
    if not path.exists():
        raise KernelscopeError(f"masks: {str(path)!r} does not exist; give an .npz, .npy or a folder")
    if path.is_dir():
        from PIL import UnidentifiedImageError

        from kernelscope.data.images import open_image

        masks = {}
        for concept_dir in sorted(p for p in path.iterdir() if p.is_dir()):
            files = sorted(p for p in concept_dir.iterdir() if p.suffix.lower() in (".png", ".bmp", ".tif", ".tiff"))
            planes = []
            for f in files:
                try:
                    with open_image(f, f"masks: image file {str(f)!r}") as image:  # size checked before decoding
                        planes.append(np.asarray(image.convert("L")) > 0)
                except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as error:
                    raise KernelscopeError(f"masks: cannot read image file {str(f)!r} ({error})") from None
            if planes:
                if len({plane.shape for plane in planes}) > 1:
                    raise KernelscopeError(f"masks: the images in {str(concept_dir)!r} differ in size; "
                                           f"give one size")
                masks[concept_dir.name] = np.stack(planes)
        if not masks:
            raise KernelscopeError(
                f"masks: folder {str(path)!r} has no DIR/<concept>/*.png masks"
            )
        return masks
    from kernelscope.ops.npyfiles import load_npy, load_npz

    if path.suffix == ".npz":  # headers checked first: numbers only, at most MAX_ARRAY_BYTES, no lying sizes
        arrays = load_npz(path, f"masks file {str(path)!r}")
    elif path.suffix == ".npy":
        arrays = {path.stem: load_npy(path, f"masks file {str(path)!r}")}
    else:
        raise KernelscopeError(f"masks: {str(path)!r} is not an .npz, .npy or a folder of PNG masks")
    return {key: _numeric(array, key) for key, array in arrays.items()}


def _numeric(value: Any, concept: str) -> np.ndarray:
    """``value`` as an array when it holds numbers or booleans; else one line (object, ragged, text arrays)."""
    try:
        array = np.asarray(value)
    except ValueError:  # a ragged sequence: NumPy refuses to make it an array
        raise KernelscopeError(f"masks: {concept!r} is ragged (masks of different sizes); give numeric or "
                               f"boolean (N, H, W) masks") from None
    if array.dtype.kind not in "biuf":
        raise KernelscopeError(f"masks: {concept!r} holds {array.dtype} values (an object, ragged or text "
                               f"array); give numeric or boolean (N, H, W) masks")
    return array


# ----------------------------------------------------------------------------- moving a mask


def shift_mask(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` (H, W) moved down by ``dy`` and right by ``dx``, without wrapping (pixels that leave are dropped).

    Examples
    --------
    >>> shift_mask(np.eye(3, dtype=bool), 0, 1).astype(int)
    array([[0, 1, 0],
           [0, 0, 1],
           [0, 0, 0]])
    """
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def shift_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pixels shared by ``a`` and ``b`` moved by every shift: a full cross-correlation.

    ``out[..., dy + H - 1, dx + W - 1] = sum_{y, x} a[..., y, x] * b[y - dy, x - dx]``, which for
    boolean masks is ``(a & shift_mask(b, dy, dx)).sum()``.

    Parameters
    ----------
    a : ndarray of shape (H, W) or (K, H, W), bool or int
        One mask, or several (each correlated with ``b``).
    b : ndarray of shape (H, W), bool or int

    Returns
    -------
    ndarray of shape (2H - 1, 2W - 1) or (K, 2H - 1, 2W - 1), int64
        Exact counts: the engine's float64 FFT, rounded (its error, ~1e-12 here, is far below 0.5;
        the engine's exact integer path gives the same counts, 4x slower on 48x48 masks).

    Examples
    --------
    >>> a = np.array([[1, 1], [0, 0]], dtype=bool)
    >>> shift_overlap(a, a)  # the mask overlaps itself twice unshifted, once moved sideways
    array([[0, 0, 0],
           [1, 2, 1],
           [0, 0, 0]])
    """
    from kernelscope.ops import correlate2d

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    stack = a.reshape(-1, 1, *a.shape[-2:])  # (K, 1, H, W)
    out = correlate2d(stack, b[None, None], padding="full", method="fft")  # (K, 1, 2H - 1, 2W - 1)
    return np.rint(out[:, 0]).astype(np.int64).reshape(*a.shape[:-2], *out.shape[-2:])


def control_offsets(mask: np.ndarray, n: int, rng: np.random.Generator, *,
                    allowed: np.ndarray | None = None) -> np.ndarray:
    """Random shifts that move ``mask`` elsewhere: inside the image, not overlapping itself.

    Parameters
    ----------
    mask : ndarray of shape (H, W), bool
        The part's occluder (not empty).
    n : int
        Number of shifts to draw (distinct when at least ``n`` are possible).
    rng : numpy.random.Generator
    allowed : ndarray of shape (H, W), bool, optional
        Where the shifted occluder may lie (e.g. the face region; default: anywhere).

    Returns
    -------
    ndarray of shape (n, 2), int
        ``(dy, dx)`` per control: the control occluder is ``mask`` moved down by
        ``dy`` and right by ``dx`` (same shape, same area; :func:`shift_mask`).

    Raises
    ------
    KernelscopeError
        When no such placement exists (the image is too small for the occluder).

    Examples
    --------
    >>> m = np.zeros((6, 6), bool); m[0:2, 0:2] = True
    >>> d = control_offsets(m, 3, np.random.default_rng(0))
    >>> d.shape, bool((np.abs(d).max(axis=1) >= 2).all())
    ((3, 2), True)
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise KernelscopeError("mask: the occluder is empty; mark at least one pixel")
    # the shifted occluder would cover part of the part ... or leave the allowed region
    sources = mask[None] if allowed is None else np.stack([mask, ~np.asarray(allowed, dtype=bool)])
    bad = (shift_overlap(sources, mask) > 0).any(axis=0)  # (2H - 1, 2W - 1)
    dy = np.arange(-(h - 1), h)[:, None]  # (2H-1, 1)
    dx = np.arange(-(w - 1), w)[None, :]  # (1, 2W-1)
    inside = (rows[0] + dy >= 0) & (rows[-1] + dy < h) & (cols[0] + dx >= 0) & (cols[-1] + dx < w)
    valid = np.argwhere(inside & ~bad)  # (V, 2) indices into the (2H-1, 2W-1) grid
    if valid.size == 0:
        raise KernelscopeError(
            f"image too small for the occluder: a {int(mask.sum())}-pixel part mask in a {h}x{w} image "
            "has no placement elsewhere that does not overlap it; use larger images or a smaller radius"
        )
    pick = rng.choice(len(valid), size=n, replace=len(valid) < n)
    return (valid[pick] - np.array([h - 1, w - 1])).astype(np.int64)
