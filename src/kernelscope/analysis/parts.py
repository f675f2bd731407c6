"""Part detectors: which channels respond to the eyes, the nose, the mouth, measured by occlusion.

The protocol (in the spirit of Zeiler & Fergus's occlusion experiments):

1. For every image, cover a part (the eyes, say) with a fill value and record,
   for every channel of a layer, the spatial maximum of its map; do the same with
   the intact image and with ``n_controls`` *control* occlusions: the same mask
   shape shifted to random places of the same image where it does not overlap
   the part (equal area, elsewhere on the face).
2. Per channel, the relative drop of the summed spatial maxima,
   ``part_drop = 1 - sum_i a_part[i] / sum_i a_intact[i]`` and the same for the
   controls (averaged over placements), and their difference
   ``selectivity = part_drop - control_drop``, with a percentile bootstrap
   interval over images.
3. A channel is a *part detector* when ``selectivity > margin`` (default 0.15)
   and the interval excludes zero. Channels whose mean intact maximum is below
   ``activity_floor`` (1%) of the layer's most active channel are marked
   inactive (ratios of near-zero numbers mean nothing).

The network's output is measured on the same variants: the probability of the
target class (face) intact, with the part occluded and with the controls.

All variants of a batch of images (intact, each part, each control placement)
go through the network in one forward pass.

Part locations come from ONet's five landmarks (:func:`landmark_part_masks`,
:func:`onet_part_masks`), or from any boolean masks the caller supplies (Haar
cascades, hand-drawn): a dict ``part -> (N, H, W) bool``.

:func:`part_contrast` puts the answer to "does a face network learn an eye
detector?" side by side: the pretrained ONet, a small network trained on the easy
face/non-face task, the same network trained on a task that needs eyes (faces
vs. the same faces with the eyes inpainted away), and its random initialisation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope.errors import KernelscopeError, suggest

if TYPE_CHECKING:  # torch is imported by the functions that run models
    from torch import nn

__all__ = [
    "PART_NAMES",
    "landmark_part_masks",
    "onet_part_masks",
    "control_offsets",
    "occlude",
    "PartSelectivity",
    "part_selectivity",
    "part_selectivity_layers",
    "part_maps",
    "detector_panels",
    "build_face_net",
    "face_task_data",
    "train_face_net",
    "part_contrast",
]

#: Parts that can be drawn from ONet's five landmarks.
PART_NAMES = ("eyes", "left_eye", "right_eye", "nose", "mouth")

#: Default radii as fractions of the image side: 4 px at ONet's 48x48 (2.1 px at 25x25).
DEFAULT_RADIUS = 4 / 48


# ----------------------------------------------------------------------------- masks


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


def _check_masks(masks: Mapping[str, np.ndarray], n: int, hw: tuple[int, int],
                 parts: Sequence[str] | None) -> dict[str, np.ndarray]:
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
        ``dy`` and right by ``dx`` (same shape, same area).

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
    m = mask.astype(np.float64)
    bad = _shift_overlap(m, m) > 0.5  # the shifted occluder would cover part of the part
    if allowed is not None:
        outside = (~np.asarray(allowed, dtype=bool)).astype(np.float64)
        bad |= _shift_overlap(outside, m) > 0.5  # ... or leave the allowed region
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


def _shift_overlap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``out[dy + H - 1, dx + W - 1] = sum_{y, x} a[y, x] * b[y - dy, x - dx]`` for all shifts, by FFT.

    ``a`` and ``b`` are (H, W); the result is (2H - 1, 2W - 1) (a full cross-correlation).
    """
    h, w = a.shape
    shape = (2 * h, 2 * w)  # zero padding: no circular wrap-around
    full = np.fft.irfft2(np.fft.rfft2(a, shape) * np.conj(np.fft.rfft2(b, shape)), shape)  # full[dy mod 2H, ...]
    return np.roll(full, (h - 1, w - 1), axis=(0, 1))[:2 * h - 1, :2 * w - 1]


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``mask`` moved by ``(dy, dx)`` without wrapping (pixels that leave are dropped)."""
    h, w = mask.shape
    out = np.zeros_like(mask)
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _fill_values(images: np.ndarray, fill: str | float) -> np.ndarray:
    """(N, C, 1, 1) fill per image and channel, or (N, C, H, W) for "blur"."""
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
    values = _fill_values(images, fill)
    return np.where(np.asarray(masks, dtype=bool)[:, None], values, images)


# ----------------------------------------------------------------------------- the protocol


@dataclass
class PartSelectivity:
    """Occlusion part selectivity of every channel of one layer.

    Attributes
    ----------
    layer : str
    parts : list of str
    channels : int
    intact : ndarray of shape (N, C)
        Spatial maximum of each channel's map on the intact images.
    occluded : dict of str to ndarray of shape (N, C)
        The same with the part occluded.
    controls : dict of str to ndarray of shape (N, K, C)
        The same with each of the K control occlusions.
    output_intact, output_occluded, output_controls
        Target-class probability, ``(N,)``, ``{part: (N,)}``, ``{part: (N, K)}``;
        ``None`` when the model's output was not measured.
    settings : dict
        fill, margin, n_controls, n_boot, ci, seed, activity_floor, target.
    """

    layer: str
    parts: list[str]
    intact: np.ndarray
    occluded: dict[str, np.ndarray]
    controls: dict[str, np.ndarray]
    output_intact: np.ndarray | None = None
    output_occluded: dict[str, np.ndarray] = field(default_factory=dict)
    output_controls: dict[str, np.ndarray] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    output_stats: dict[str, dict[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.stats:
            self.stats = {part: self._channel_stats(part) for part in self.parts}
        if not self.output_stats and self.output_intact is not None:
            self.output_stats = {part: self._output_stats(part) for part in self.parts}

    @property
    def channels(self) -> int:
        return int(self.intact.shape[1])

    @property
    def n_images(self) -> int:
        return int(self.intact.shape[0])

    def _bootstrap_weights(self, salt: int) -> np.ndarray:
        rng = np.random.default_rng([int(self.settings.get("seed", 0)), salt])
        n = self.n_images
        return rng.multinomial(n, np.full(n, 1.0 / n), size=int(self.settings.get("n_boot", 1000))).astype(
            np.float64)  # (B, N)

    def _channel_stats(self, part: str) -> dict[str, np.ndarray]:
        a0 = self.intact.astype(np.float64)  # (N, C)
        ap = self.occluded[part].astype(np.float64)  # (N, C)
        ac = self.controls[part].astype(np.float64).mean(axis=1)  # (N, C)
        s0, sp, sc = a0.sum(0), ap.sum(0), ac.sum(0)  # (C,)
        mean0 = a0.mean(0)
        floor = float(self.settings.get("activity_floor", 0.01))
        active = mean0 > floor * max(float(mean0.max(initial=0.0)), 0.0)
        active &= mean0 > 0
        safe = np.where(active, s0, 1.0)
        part_drop = np.where(active, 1.0 - sp / safe, np.nan)
        control_drop = np.where(active, 1.0 - sc / safe, np.nan)
        diff = part_drop - control_drop
        w = self._bootstrap_weights(salt=self.parts.index(part))  # (B, N)
        b0, bp, bc = w @ a0, w @ ap, w @ ac  # (B, C)
        alpha = (1.0 - float(self.settings.get("ci", 0.95))) / 2
        low = np.full(self.channels, np.nan)
        high = np.full(self.channels, np.nan)
        if active.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                boot = (bc[:, active] - bp[:, active]) / b0[:, active]  # (B, C_active): diff per resample
            low[active], high[active] = np.quantile(boot, [alpha, 1 - alpha], axis=0)
        margin = float(self.settings.get("margin", 0.15))
        detector = active & (diff > margin) & (low > 0)
        return {"mean_intact": mean0, "active": active, "part_drop": part_drop, "control_drop": control_drop,
                "selectivity": diff, "ci_low": low, "ci_high": high, "detector": detector}

    def _output_stats(self, part: str) -> dict[str, float]:
        s0 = self.output_intact.astype(np.float64)  # (N,)
        sp = self.output_occluded[part].astype(np.float64)  # (N,)
        sc = self.output_controls[part].astype(np.float64).mean(axis=1)  # (N,)
        w = self._bootstrap_weights(salt=100 + self.parts.index(part))  # (B, N)
        boot = w @ (sc - sp) / self.n_images  # (B,)
        alpha = (1.0 - float(self.settings.get("ci", 0.95))) / 2
        return {"intact": float(s0.mean()), "occluded": float(sp.mean()), "control": float(sc.mean()),
                "effect": float((sc - sp).mean()), "ci_low": float(np.quantile(boot, alpha)),
                "ci_high": float(np.quantile(boot, 1 - alpha))}

    def detectors(self, part: str) -> list[int]:
        """Channels that are detectors of ``part``, most selective first."""
        st = self.stats[part]
        idx = np.flatnonzero(st["detector"])
        return [int(i) for i in idx[np.argsort(-st["selectivity"][idx], kind="stable")]]

    def ranking(self, part: str) -> list[int]:
        """Active channels ordered by selectivity for ``part``, highest first."""
        st = self.stats[part]
        idx = np.flatnonzero(st["active"])
        return [int(i) for i in idx[np.argsort(-st["selectivity"][idx], kind="stable")]]

    def best(self, part: str) -> dict[str, Any]:
        """The most selective active channel for ``part`` and its numbers."""
        ranked = self.ranking(part)
        if not ranked:
            return {"channel": None}
        c = ranked[0]
        st = self.stats[part]
        return {"channel": c, "part_drop": float(st["part_drop"][c]), "control_drop": float(st["control_drop"][c]),
                "selectivity": float(st["selectivity"][c]), "ci": [float(st["ci_low"][c]), float(st["ci_high"][c])],
                "detector": bool(st["detector"][c])}

    def table(self) -> list[dict[str, Any]]:
        """One row per (part, channel): the per-channel table written as CSV/JSON."""
        rows = []
        for part in self.parts:
            st = self.stats[part]
            for c in range(self.channels):
                rows.append({
                    "layer": self.layer, "part": part, "channel": c,
                    "mean_intact_max": float(st["mean_intact"][c]), "active": bool(st["active"][c]),
                    "part_drop": _num(st["part_drop"][c]), "control_drop": _num(st["control_drop"][c]),
                    "selectivity": _num(st["selectivity"][c]), "ci_low": _num(st["ci_low"][c]),
                    "ci_high": _num(st["ci_high"][c]), "detector": bool(st["detector"][c]),
                })
        return rows

    def summary(self) -> dict[str, Any]:
        """Per part: number of detectors, the best channel, the output effect."""
        out: dict[str, Any] = {}
        for part in self.parts:
            out[part] = {"n_detectors": len(self.detectors(part)), "detectors": self.detectors(part),
                         "best": self.best(part)}
            if part in self.output_stats:
                out[part]["output"] = self.output_stats[part]
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: settings, summary and the per-channel table."""
        return {"layer": self.layer, "parts": list(self.parts), "n_images": self.n_images,
                "channels": self.channels, "settings": dict(self.settings), "summary": self.summary(),
                "table": self.table()}


def _num(value: float) -> float | None:
    value = float(value)
    return value if np.isfinite(value) else None


def _target_probability(output: Any, target: int):
    """(N,) probability of class ``target`` from a model output (logits, or ONet's tuple)."""
    import torch

    probabilities = False
    if isinstance(output, (tuple, list)):
        output = output[-1]  # ONet: (box, landmarks, probabilities)
        probabilities = bool(output.ndim == 2 and (output >= 0).all()
                             and torch.allclose(output.sum(1), torch.ones_like(output[:, 0]), atol=1e-4))
    if output.ndim != 2:
        raise KernelscopeError(f"model output: expected (N, classes) logits, got shape {tuple(output.shape[1:])} "
                               "per image; use target=None to skip the output effect")
    if output.shape[1] == 1:
        return torch.sigmoid(output[:, 0])
    if not 0 <= target < output.shape[1]:
        raise KernelscopeError(f"target: expected a class index in [0, {output.shape[1] - 1}], got {target}")
    return output[:, target] if probabilities else torch.softmax(output, dim=1)[:, target]


def part_selectivity_layers(model: nn.Module, images: np.ndarray, masks: Mapping[str, np.ndarray], *,
                            layers: Sequence[str] | None = None, parts: Sequence[str] | None = None,
                            fill: str | float = "zero", n_controls: int = 8,
                            allowed: np.ndarray | None = None, margin: float = 0.15, n_boot: int = 1000,
                            ci: float = 0.95, activity_floor: float = 0.01, seed: int = 0,
                            target: int | None = 1, batch_size: int = 16) -> dict[str, PartSelectivity]:
    """Occlusion part selectivity of every channel of several layers (one forward per batch).

    Parameters
    ----------
    model : torch.nn.Module
        Put in eval mode; its weights are not changed.
    images : ndarray of shape (N, C, H, W)
        Model inputs, already normalised as the model expects.
    masks : dict of str to ndarray of shape (N, H, W), bool
        The parts to occlude (from :func:`onet_part_masks`, Haar cascades or the user).
    layers : sequence of str, optional
        Dotted layer names whose outputs are ``(N, C', H', W')`` maps (default: all conv layers).
    parts : sequence of str, optional
        Which masks to use (default: all of them).
    fill : "zero", "mean", "blur" or float
        The occluder's value in the model's input space (see :func:`occlude`). Keep it
        neutral: a black or white occluder draws edges whose strength depends on where it
        lands (weak over a dark eye, strong on a bright cheek), which made the easy face
        net show up to 10 spurious "eye detectors" (docs/parts.md); "blur" is the most neutral.
    n_controls : int
        Control placements per image and part (equal area, not overlapping the part).
    allowed : ndarray of shape (H, W) or (N, H, W), bool, optional
        Where control occluders may lie (default: anywhere in the image).
    margin : float
        A detector's selectivity must exceed this (0.15: 15 percentage points of the channel's maximum).
    n_boot, ci : int, float
        Bootstrap resamples over images and the interval's level.
    activity_floor : float
        Channels with mean intact maximum below this fraction of the layer's largest are inactive.
    seed : int
        Seeds the control placements and the bootstrap.
    target : int or None
        Class whose probability is the output effect (1 = "face"); ``None`` skips it.
    batch_size : int
        Images per forward pass (each brings ``1 + P * (1 + n_controls)`` variants).

    Returns
    -------
    dict of str to PartSelectivity
    """
    import torch

    from kernelscope.analysis.hooks import capture, model_device
    from kernelscope.models.layers import conv_layer_names, get_layer

    x = np.asarray(images, dtype=np.float32)
    if x.ndim != 4:
        raise KernelscopeError(f"images: expected shape (N, C, H, W), got {tuple(x.shape)}")
    n, _, h, w = x.shape
    if n < 2:
        raise KernelscopeError(f"images: need at least 2 images for a bootstrap interval, got {n}")
    if n_controls < 1:
        raise KernelscopeError(f"n_controls: expected >= 1, got {n_controls}")
    if not 0 < ci < 1:
        raise KernelscopeError(f"ci: expected a level in (0, 1), got {ci}")
    checked = _check_masks(masks, n, (h, w), parts)
    part_list = list(checked)
    if layers is None:
        layers = conv_layer_names(model)
        if not layers:
            raise KernelscopeError(f"model {type(model).__name__} has no Conv2d layer; name a layer")
    layers = [layers] if isinstance(layers, str) else list(layers)
    for name in layers:
        get_layer(model, name)  # unknown names fail here, with suggestions
    if allowed is not None:
        allowed = np.asarray(allowed, dtype=bool)
        allowed = np.broadcast_to(allowed, (n, h, w)) if allowed.shape == (h, w) else allowed
        if allowed.shape != (n, h, w):
            raise KernelscopeError(f"allowed: expected shape {(h, w)} or {(n, h, w)}, got {allowed.shape}")

    rng = np.random.default_rng(seed)
    # control masks: (N, K, H, W) per part, drawn before any forward pass
    control_masks = {}
    for part in part_list:
        cm = np.zeros((n, n_controls, h, w), dtype=bool)
        for i in range(n):
            offsets = control_offsets(checked[part][i], n_controls, rng,
                                      allowed=None if allowed is None else allowed[i])
            for k, (dy, dx) in enumerate(offsets):
                cm[i, k] = _shift(checked[part][i], int(dy), int(dx))
        control_masks[part] = cm

    fills = _fill_values(x, fill)  # (N, C, 1, 1)
    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters()), torch.float32)
    n_variants = 1 + len(part_list) * (1 + n_controls)
    maxima = {name: [] for name in layers}
    scores = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, n, batch_size):
                xb = x[start:start + batch_size]  # (b, C, H, W)
                fb = fills[start:start + batch_size]
                b = len(xb)
                variant_masks = [np.zeros((b, h, w), dtype=bool)]
                for part in part_list:
                    variant_masks.append(checked[part][start:start + b])
                    variant_masks.extend(control_masks[part][start:start + b, k] for k in range(n_controls))
                vm = np.stack(variant_masks, axis=1)  # (b, V, H, W)
                batch = np.where(vm[:, :, None], fb[:, None], xb[:, None])  # (b, V, C, H, W)
                batch = torch.from_numpy(np.ascontiguousarray(batch.reshape(b * n_variants, *xb.shape[1:])))
                batch = batch.to(device=device, dtype=dtype)  # (b * V, C, H, W)
                with capture(model, layers) as outs:
                    output = model(batch)
                for name in layers:
                    maps = outs[name]
                    if maps.ndim != 4:
                        raise KernelscopeError(
                            f"layer {name!r} ({type(get_layer(model, name)).__name__}) gives outputs of shape "
                            f"{tuple(maps.shape[1:])} per image, not spatial maps (C, H, W); choose a convolution "
                            f"or pooling layer (conv layers: {', '.join(conv_layer_names(model)) or 'none'})"
                        )
                    maxima[name].append(maps.amax(dim=(2, 3)).float().cpu().reshape(b, n_variants, -1).numpy())
                if target is not None:
                    scores.append(_target_probability(output, target).float().cpu().reshape(b, n_variants).numpy())
    finally:
        model.train(was_training)

    settings = {"fill": fill, "margin": margin, "n_controls": n_controls, "n_boot": n_boot, "ci": ci,
                "seed": seed, "activity_floor": activity_floor, "target": target,
                "control_placement": "same mask shifted, inside the image" +
                                     (" and the allowed region" if allowed is not None else "") +
                                     ", not overlapping the part"}
    results = {}
    s = np.concatenate(scores) if scores else None  # (N, V)
    for name in layers:
        m = np.concatenate(maxima[name])  # (N, V, C)
        occluded, controls, out_occ, out_ctl = {}, {}, {}, {}
        for j, part in enumerate(part_list):
            first = 1 + j * (1 + n_controls)
            occluded[part] = m[:, first]
            controls[part] = m[:, first + 1:first + 1 + n_controls]
            if s is not None:
                out_occ[part] = s[:, first]
                out_ctl[part] = s[:, first + 1:first + 1 + n_controls]
        results[name] = PartSelectivity(
            layer=name, parts=part_list, intact=m[:, 0], occluded=occluded, controls=controls,
            output_intact=None if s is None else s[:, 0], output_occluded=out_occ, output_controls=out_ctl,
            settings=dict(settings))
    return results


def part_selectivity(model: nn.Module, images: np.ndarray, masks: Mapping[str, np.ndarray], *,
                     layer: str, **options: Any) -> PartSelectivity:
    """Occlusion part selectivity of every channel of ``layer``.

    Same parameters as :func:`part_selectivity_layers` with one layer name.

    Examples
    --------
    A hand-set channel that sums the top-left quadrant is an "eye" detector when
    the eye is there; the control occlusions elsewhere leave it alone:

    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 4, bias=False), nn.Flatten(), nn.LazyLinear(2))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0)
    ...     _ = net(torch.zeros(1, 1, 12, 12))
    >>> x = np.zeros((6, 1, 12, 12), np.float32); x[:, :, 1:4, 1:4] = 1.0
    >>> eye = np.zeros((6, 12, 12), bool); eye[:, 1:4, 1:4] = True
    >>> r = part_selectivity(net, x, {"eye": eye}, layer="0", n_controls=4, target=None)
    >>> r.best("eye")["channel"], round(r.best("eye")["part_drop"], 2), r.detectors("eye")
    (0, 1.0, [0])
    """
    if not isinstance(layer, str):
        raise KernelscopeError(f"layer: expected one layer name, got {layer!r}")
    return part_selectivity_layers(model, images, masks, layers=[layer], **options)[layer]


def part_maps(model: nn.Module, images: np.ndarray, mask: np.ndarray, *, layer: str,
              channels: Sequence[int], fill: str | float = "zero") -> tuple[np.ndarray, np.ndarray]:
    """The maps of some channels on intact and part-occluded images (for figures).

    Parameters
    ----------
    model : torch.nn.Module
    images : ndarray of shape (N, C, H, W)
        Model inputs.
    mask : ndarray of shape (N, H, W), bool
        The part to occlude.
    layer : str
    channels : sequence of int
    fill : "zero", "mean", "blur" or float

    Returns
    -------
    intact, occluded : ndarray of shape (N, len(channels), H', W'), float32

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
    >>> a, b = part_maps(net, np.zeros((2, 1, 8, 8)), np.ones((2, 8, 8), bool), layer="0", channels=[1])
    >>> a.shape, b.shape
    ((2, 1, 6, 6), (2, 1, 6, 6))
    """
    from kernelscope.analysis.hooks import layer_outputs

    x = np.asarray(images, dtype=np.float32)
    both = np.concatenate([x, occlude(x, mask, fill).astype(np.float32)])  # (2N, C, H, W)
    maps = layer_outputs(model, both, layer)[layer]
    if maps.ndim != 4:
        raise KernelscopeError(
            f"layer {layer!r} gives outputs of shape {maps.shape[1:]} per image, not spatial maps (C, H, W)")
    maps = maps[:, list(channels)]
    return maps[:len(x)], maps[len(x):]


def detector_panels(model: nn.Module, result: PartSelectivity, images: np.ndarray,
                    masks: Mapping[str, np.ndarray], *, top: int = 3, n_faces: int = 3,
                    fill: str | float | None = None) -> list[dict[str, Any]]:
    """Maps of the top detectors on a few faces, intact and occluded (what the parts figure draws).

    For each part, the ``top`` most selective active channels (detectors first;
    the best-ranked channels when there is no detector) on the ``n_faces``
    images where the channel's intact maximum is largest.

    Returns
    -------
    list of dict
        ``part, channel, detector, selectivity, part_drop, control_drop, faces (k,),
        intact (k, H', W'), occluded (k, H', W')``.
    """
    fill = result.settings.get("fill", "zero") if fill is None else fill
    panels = []
    for part in result.parts:
        for channel in result.ranking(part)[:top]:
            faces = np.argsort(-result.intact[:, channel], kind="stable")[:n_faces]
            intact, occluded = part_maps(model, np.asarray(images)[faces], np.asarray(masks[part])[faces],
                                         layer=result.layer, channels=[channel], fill=fill)
            st = result.stats[part]
            panels.append({"part": part, "channel": channel, "detector": bool(st["detector"][channel]),
                           "selectivity": float(st["selectivity"][channel]),
                           "part_drop": float(st["part_drop"][channel]),
                           "control_drop": float(st["control_drop"][channel]),
                           "faces": faces, "intact": intact[:, 0], "occluded": occluded[:, 0]})
    return panels


# ----------------------------------------------------------------------------- our own face models


def build_face_net(seed: int = 0) -> nn.Module:
    """The small face network of the contrast: two conv blocks and a linear head, for 1x25x25 input.

    ::

        conv1 1->16 3x3 pad 1, ReLU, max 2  -> (N, 16, 12, 12)
        conv2 16->32 3x3 pad 1, ReLU, max 2 -> (N, 32, 6, 6)
        conv3 32->32 3x3 pad 1, ReLU        -> (N, 32, 6, 6)
        flatten, linear 1152->2

    Examples
    --------
    >>> import torch
    >>> build_face_net()(torch.zeros(3, 1, 25, 25)).shape
    torch.Size([3, 2])
    """
    import torch
    from torch import nn

    with torch.random.fork_rng():  # seeded without touching the caller's random state
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 16, 12, 12)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 32, 6, 6)
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),  # (N, 32, 6, 6)
            nn.Flatten(), nn.Linear(32 * 6 * 6, 2),  # (N, 2)
        )


def _inpaint(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Fill the masked pixels from their surroundings (OpenCV Telea): skin tone where an eye was."""
    import cv2

    out = np.empty_like(images)
    for i, (image, mask) in enumerate(zip(images, masks, strict=True)):
        img8 = np.clip(np.rint(image[0] * 255), 0, 255).astype(np.uint8)
        filled = cv2.inpaint(img8, mask.astype(np.uint8), 3, cv2.INPAINT_TELEA)
        out[i, 0] = filled.astype(np.float32) / 255.0
    return out


def _random_elsewhere(masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each mask moved once to a random place that does not overlap it (equal area)."""
    out = np.zeros_like(masks)
    for i, mask in enumerate(masks):
        dy, dx = control_offsets(mask, 1, rng)[0]
        out[i] = _shift(mask, int(dy), int(dx))
    return out


def face_task_data(task: str, *, seed: int = 0, test_fraction: float = 0.4,
                   n_patches: int = 300) -> dict[str, Any]:
    """The two face tasks of the contrast, split by face (no face is in both splits).

    ``"easy"``: faces vs. non-faces (``lfw_subset`` non-faces and patches of natural
    images). ``"eyes"``: the same, plus hard negatives that are faces with both
    eyes inpainted away (Telea inpainting inside the dilated ONet eye discs), and,
    so that "something was painted over" is no cue, faces with an equal-area
    region elsewhere inpainted stay positives. Faces are augmented with their
    mirror images.

    Returns
    -------
    dict
        ``x_train, y_train, x_test, y_test`` (float32 (N, 1, 25, 25) in [0, 1], int64),
        ``test_faces`` (the held-out intact faces), ``test_eye_masks`` (their ONet
        eye masks), ``mean``, ``std``.
    """
    from scipy.ndimage import binary_dilation

    from kernelscope.data.faces import lfw_faces, lfw_nonfaces, object_patches

    if task not in ("easy", "eyes"):
        raise KernelscopeError(f"task: expected 'easy' or 'eyes', got {task!r}")
    rng = np.random.default_rng(seed)
    faces = lfw_faces()  # (100, 1, 25, 25)
    eye_masks = onet_part_masks(faces, parts=["eyes"])["eyes"]  # (100, 25, 25)
    negatives = np.concatenate([lfw_nonfaces(), object_patches(n_patches, seed=seed)])
    order = rng.permutation(len(faces))
    n_test = int(round(test_fraction * len(faces)))
    test_idx, train_idx = order[:n_test], order[n_test:]
    neg_order = rng.permutation(len(negatives))
    n_neg_test = int(round(test_fraction * len(negatives)))
    neg_test, neg_train = negatives[neg_order[:n_neg_test]], negatives[neg_order[n_neg_test:]]

    def positives_and_hard(idx: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        f = faces[idx]
        m = eye_masks[idx]
        pos = [f, f[..., ::-1]]
        neg = []
        if task == "eyes":
            grown = np.stack([binary_dilation(mask, iterations=1) for mask in m])
            no_eyes = _inpaint(f, grown)
            elsewhere = _inpaint(f, _random_elsewhere(grown, rng))
            pos += [elsewhere, elsewhere[..., ::-1]]
            neg += [no_eyes, no_eyes[..., ::-1]]
        return pos, neg

    def assemble(pos: list[np.ndarray], neg: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        xp, xn = np.concatenate(pos), np.concatenate(neg)
        x = np.ascontiguousarray(np.concatenate([xp, xn]), dtype=np.float32)
        y = np.concatenate([np.ones(len(xp)), np.zeros(len(xn))]).astype(np.int64)
        return x, y

    pos_tr, hard_tr = positives_and_hard(train_idx)
    pos_te, hard_te = positives_and_hard(test_idx)
    x_train, y_train = assemble(pos_tr, hard_tr + [neg_train])
    x_test, y_test = assemble(pos_te, hard_te + [neg_test])
    mean, std = float(x_train.mean()), float(x_train.std())
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test,
            "test_faces": faces[test_idx], "test_eye_masks": eye_masks[test_idx], "mean": mean, "std": std}


def train_face_net(task: str, *, seed: int = 0, epochs: int = 25, data: dict[str, Any] | None = None
                   ) -> tuple[nn.Module, dict[str, Any]]:
    """Train :func:`build_face_net` on ``"easy"`` or ``"eyes"`` (see :func:`face_task_data`).

    Adam (lr 2e-3), batch 64, random shifts of up to 2 px; a few seconds on one core.
    Training runs on one intra-op thread (restored afterwards): a network this small
    gains nothing from more, and on a busy 2-core machine two OpenMP threads made it
    ~10x slower (measured: 70 s vs. 7 s wall for 25 epochs under load).

    Returns
    -------
    model : torch.nn.Module
        In eval mode; it expects images normalised as ``(x - data["mean"]) / data["std"]``.
    data : dict
        The task's data (as :func:`face_task_data`) plus ``test_accuracy`` and ``seconds``.
    """
    import torch
    import torch.nn.functional as F

    started = time.perf_counter()
    data = face_task_data(task, seed=seed) if data is None else data
    model = build_face_net(seed)
    mean, std = data["mean"], data["std"]
    x = torch.from_numpy((data["x_train"] - mean) / std)  # (N, 1, 25, 25)
    y = torch.from_numpy(data["y_train"])  # (N,)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(x), generator=generator)
            for start in range(0, len(x), 64):
                idx = order[start:start + 64]
                xb = x[idx]
                dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))  # (B, 1, 25, 25): a small random shift
                loss = F.cross_entropy(model(xb), y[idx])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy((data["x_test"] - mean) / std))
    data = dict(data)
    data["test_accuracy"] = float((logits.argmax(1).numpy() == data["y_test"]).mean())
    data["seconds"] = time.perf_counter() - started
    return model, data


def _best_over_layers(results: Mapping[str, PartSelectivity], part: str) -> dict[str, Any]:
    best: dict[str, Any] = {"layer": None, "channel": None}
    for name, result in results.items():
        candidate = result.best(part)
        if candidate["channel"] is None:
            continue
        if best["channel"] is None or candidate["selectivity"] > best["selectivity"]:
            best = {"layer": name, **candidate}
    best["n_detectors"] = {name: len(result.detectors(part)) for name, result in results.items()}
    best["per_layer"] = {name: result.best(part) for name, result in results.items()}
    first = next(iter(results.values()))
    if part in first.output_stats:
        best["output"] = first.output_stats[part]
    return best


def part_contrast(seed: int = 0, quick: bool = False, *, part: str = "eyes",
                  dissection: bool = False) -> dict[str, Any]:
    """Do face networks learn eye detectors? Four networks measured with the same protocol.

    - ``onet``: MTCNN's pretrained ONet on the 100 ``lfw_subset`` faces (48x48 RGB);
    - ``easy``: :func:`build_face_net` trained on face vs. non-face;
    - ``eyes``: the same network trained on the task that needs eyes (faces vs.
      faces with the eyes inpainted away);
    - ``random``: the same network at its random initialisation (the control).

    The small networks are measured on held-out faces. Eyes are discs at ONet's
    landmarks, filled with 0 after normalisation (the data mean; mid-grey for ONet),
    8 controls, margin 0.15, 95% bootstrap intervals.

    Parameters
    ----------
    seed : int
    quick : bool
        300 bootstrap resamples instead of 1000 (for the demo and tests).
    part : str
        "eyes", "nose" or "mouth".
    dissection : bool
        Also run Network Dissection (:func:`kernelscope.analysis.dissect.dissect`, 20 mask
        permutations) on every conv layer of every network, with the same images and masks.

    Returns
    -------
    dict
        ``models``: per network the best channel over its conv layers (layer,
        channel, part_drop, control_drop, selectivity, ci, detector), the best
        channel of each layer (``per_layer``), the number of detectors per layer,
        the output effect (face probability intact, part
        occluded, controls), for the trained ones test accuracy, and with
        ``dissection`` per layer the best IoU, its channel, the largest permutation
        p95 and the number of IoU detectors; ``settings`` and ``seconds``.
    """
    from kernelscope.data.faces import lfw_faces
    from kernelscope.models.onet import load_onet, preprocess_faces

    if part not in ("eyes", "nose", "mouth"):
        raise KernelscopeError(f"part: expected 'eyes', 'nose' or 'mouth', got {part!r}")
    started = time.perf_counter()
    n_boot = 300 if quick else 1000
    epochs = 25  # fewer (12) left the eye channels below the margin; 25 gave 4-10 detectors on seeds 0-2
    options = {"parts": [part], "n_controls": 8, "fill": "zero", "margin": 0.15, "n_boot": n_boot, "seed": seed}
    models: dict[str, Any] = {}

    def measure(model: nn.Module, inputs: np.ndarray, masks: dict[str, np.ndarray],
                layers: list[str]) -> dict[str, Any]:
        results = part_selectivity_layers(model, inputs, masks, layers=layers, **options)
        out = _best_over_layers(results, part)
        if dissection:
            from kernelscope.analysis.dissect import dissect

            out["dissection"] = {}
            for layer in layers:
                summary = dissect(model, layer, inputs, masks, n_permutations=20,
                                  seed=seed).to_dict()["summary"]["trained"][part]
                out["dissection"][layer] = {k: summary[k] for k in
                                            ("best_channel", "best_iou", "max_null_p95", "n_detectors")}
        return out

    faces = lfw_faces()  # (100, 1, 25, 25)
    onet_layers = ["conv1", "conv2", "conv3", "conv4"]
    models["onet"] = measure(load_onet(), preprocess_faces(faces), onet_part_masks(faces, 48, parts=[part]),
                             onet_layers)

    layers = ["0", "3", "6"]
    data_easy = face_task_data("easy", seed=seed)
    data_eyes = face_task_data("eyes", seed=seed)
    # the same held-out faces for all three small nets (both tasks split the faces with the same seed)
    test_faces = data_easy["test_faces"]
    masks = {"eyes": data_easy["test_eye_masks"]} if part == "eyes" else onet_part_masks(test_faces, parts=[part])
    for name, data in (("easy", data_easy), ("eyes", data_eyes)):
        model, info = train_face_net(name, seed=seed, epochs=epochs, data=data)
        test = ((info["test_faces"] - info["mean"]) / info["std"]).astype(np.float32)
        models[name] = {**measure(model, test, masks, layers), "test_accuracy": info["test_accuracy"],
                        "train_seconds": info["seconds"]}
    test = ((test_faces - data_easy["mean"]) / data_easy["std"]).astype(np.float32)
    models["random"] = measure(build_face_net(seed), test, masks, layers)
    return {"part": part, "models": models,
            "settings": {**options, "epochs": epochs, "layers_small": layers, "layers_onet": onet_layers,
                         "images": {"onet": 100, "small": int(len(test_faces))}, "dissection": dissection},
            "seconds": time.perf_counter() - started}
