"""Network Dissection (Bau et al., 2017): which channels are detectors of a concept (eyes, mouth)?

Protocol, per channel ``c`` of a layer and concept ``k``:

1. threshold ``t_c``: the top 0.5% of the channel's activations over the whole dataset
   (the 0.995 quantile over all images and spatial positions, at the layer's resolution);
2. each activation map is upsampled to the mask size (bilinear, ``align_corners=False``)
   and thresholded: ``A_i = up(a_i) > t_c``;
3. ``IoU_{c,k} = sum_i |A_i & M_i| / sum_i |A_i | M_i|`` pooled over the dataset;
   a channel is a detector of ``k`` when ``IoU > 0.04``; a **gated** detector also needs its
   IoU above the permutation null's 95th percentile for that channel and concept (a fixed
   0.04 can be reached by chance: every summary reports both counts).

With each IoU come three references:

- chance IoU for the concept's coverage: the IoU of a map that fires on the same fraction
  ``a`` of pixels independently of the mask (coverage ``m``): ``a m / (a + m - a m)``;
- a permutation null: the IoU with the masks shuffled across images (``n_permutations``
  random permutations; mean and 95th percentile) -- what the IoU is for a channel that
  fires where masks usually are, not on the concept in this image;
- the same scores for the network at initialisation (recorded epoch 0, or a
  re-initialised copy).

Where a conv layer is read is explicit (``at``, see :func:`kernelscope.analysis.hooks.read_point`):
``"activation"`` (default) reads the activation module that follows the conv, ``"conv"`` the
conv's own signed output. Results stay keyed by the conv layer's name and record ``at`` and
what was read.

One streaming pass over the data (a forward pass stopped at the layer): it counts the
activations and upsampled values above a floor far below the threshold (the top 5% of the
first batch), in 1024 bins of equal mass, for all pixels and for the pixels inside each mask --
under the true pairing and under each permutation. The threshold and the counts above it are
read from those at the end, linearly inside the threshold's bin. If the threshold ends below
the floor, it is read from a full histogram (4096 bins whose range grows by merging) and an
exact second pass counts at it.

Most of that work is skipped without changing a count that is read. Only the bins from the
threshold's up are read, and the raw counts so far bound the threshold's bin from below, so
values below that bin are not counted (:meth:`_Tail.level`); the upsampled values of up to
16 MiB of batches wait for the raw counts of later ones, which raise the bound. Upsampling
computes only the output pixels that can exceed it: a bilinear value is a convex combination
of its four sources, so only the cells of the output grid with a source near or above the
level are evaluated (:class:`_Bilinear`), with torch's float32 arithmetic (the values equal
``F.interpolate``'s bit for bit). Memory holds histograms and counts, those waiting batches
and the work on a bounded number of pixels at a time, never the whole dataset; the
permutations are computed, not stored (:class:`Permutations`).

This module is the protocol and the pass; the sketches it counts in (:class:`StreamingHistogram`,
:class:`_Tail`, :class:`Permutations`) are :mod:`kernelscope.analysis.sketches`, the sparse
upsampler (:class:`_Bilinear`) :mod:`kernelscope.analysis.bilinear`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._progress import progress
from kernelscope.analysis.bilinear import _Bilinear
from kernelscope.analysis.hooks import _as_nchw, _to_tensor, forward_until, iter_batches, read_point
from kernelscope.analysis.sketches import Permutations, StreamingHistogram, _Orders, _Tail
from kernelscope.errors import KernelscopeError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["channel_thresholds", "dissect_layer", "DissectResult", "dissect", "chance_iou", "DETECTOR_IOU",
           "TOP_FRACTION"]

DETECTOR_IOU = 0.04
TOP_FRACTION = 0.005
# Work sizes of the dissection pass (speed against memory; no result depends on them):
_DEFER_BYTES = 16 * 2**20  # layer outputs held while their upsampled values wait for a higher level
_GROUP = 256  # images whose raw values are counted together
_CHUNK_CELLS = 2**14  # candidate cells gathered before they are evaluated (40 bytes each)
_SCREEN_SLOTS = 2**16  # output pixels screened at once (4 bytes each, a few times over)
_PIECE = 2**13  # upsampled values computed exactly and counted at once (~100 bytes each)
_MASK_BLOCK = 64  # images whose paired masks are gathered at once


def channel_thresholds(model: nn.Module, layer: str, images: Any, *, top_fraction: float = TOP_FRACTION,
                       batch_size: int = 64, n_bins: int = 4096, total: int | None = None,
                       at: str = "activation") -> np.ndarray:
    """Per-channel threshold ``t_c``: the top ``top_fraction`` of the layer's activations over ``images``
    (read where ``at`` says: :func:`kernelscope.analysis.hooks.read_point`)."""
    layer, _ = read_point(model, layer, at)
    hist = None
    bar = progress(desc=f"dissect {layer}: thresholds", total=total, unit="img")
    try:
        for x in iter_batches(images, batch_size):
            acts = _layer(model, layer, x)  # (B, C, h, w)
            values = acts.transpose(1, 0, 2, 3).reshape(acts.shape[1], -1)  # (C, B*h*w)
            if hist is None:
                hist = StreamingHistogram(acts.shape[1], n_bins)
            hist.add(values)
            bar.update(x.shape[0])
    finally:
        bar.close()
    if hist is None:
        raise KernelscopeError("the dataset has no images (0 given); give at least one image")
    return hist.upper_quantile(top_fraction)


def chance_iou(fire_fraction: np.ndarray, coverage: float) -> np.ndarray:
    """IoU of a map firing on ``fire_fraction`` of pixels independently of a mask of ``coverage``.

    Examples
    --------
    >>> float(chance_iou(np.array([0.5]), 0.5)[0])
    0.3333333333333333
    """
    a = np.asarray(fire_fraction, dtype=np.float64)
    denominator = a + coverage - a * coverage
    return np.divide(a * coverage, denominator, out=np.zeros_like(a), where=denominator > 0)


def dissect_layer(model: nn.Module, layer: str, images: Any, masks: dict[str, Any], *,
                  top_fraction: float = TOP_FRACTION, n_permutations: int = 20, seed: int = 0,
                  batch_size: int = 64, n_bins: int = 4096, tail_bins: int = 1024,
                  tail_fraction: float = 0.05, at: str = "activation") -> dict[str, Any]:
    """IoU of every channel of ``layer`` with every concept, in one streaming pass (see below).

    One forward pass (stopped at the layer) per image. The first batch fixes, per channel, a
    floor (its ``1 - tail_fraction`` quantile, far below the top-``top_fraction`` threshold) and
    ``tail_bins`` bins of equal mass above it. Every batch then adds, in those bins, its raw
    activations above the floor (for the threshold) and its upsampled values above the floor:
    all of them, and those inside each concept's mask under the true pairing and under each
    permutation. At the end the threshold ``t_c`` is read from the raw counts and the counts
    above it from the upsampled ones, both linearly inside ``t_c``'s bin. Should ``t_c`` fall
    below the floor (a first batch unlike the rest), it is read from a full histogram of the
    activations instead and an exact second pass counts at it.

    Values in bins that cannot hold the threshold (known from the raw counts so far) are left
    out, and the upsampled values of a batch are counted once later batches have raised that
    bound (see the module's notes): the counts that are read, and so every result, are those of
    counting everything above the floor.

    Parameters
    ----------
    images : ndarray (N, C, H, W) or iterable of batches
        Model inputs, in the same order as the masks. A stream is consumed once, or twice in
        the rare fallback (give a re-iterable).
    masks : dict of str to array (N, Hm, Wm) bool
        Concept masks, indexable by an index array (``masks[k][idx]``).
    at : "activation" or "conv"
        Read a conv layer after the activation that follows it (default) or its own signed
        output (:func:`kernelscope.analysis.hooks.read_point`; other layers are read as they are).

    Returns
    -------
    dict
        ``threshold`` (C,), ``fire_fraction`` (C,), ``passes`` (1 or 2), ``at`` and ``read`` (what
        was read for ``layer``) and per concept: ``iou``, ``chance``, ``null_mean``, ``null_p95``
        (C,) and ``coverage``.
    """
    if not masks:
        raise KernelscopeError("masks: no concept given; give at least one (N, H, W) mask array")
    hook, read = read_point(model, layer, at)  # the module whose output is dissected
    concepts = list(masks)
    n_images = len(masks[concepts[0]])
    mask_size = tuple(masks[concepts[0]].shape[1:])
    pixels = mask_size[0] * mask_size[1]
    perms = Permutations(n_images, n_permutations, seed)
    pairing = _Pairing(masks, perms)
    n_orders = 1 + n_permutations  # row 0: the true pairing
    mask_total = np.zeros((len(concepts), n_orders))  # the same under every pairing: a permutation moves masks
    hist: StreamingHistogram | None = None
    tail: _Tail | None = None
    upsample: _Bilinear | None = None
    pending: list[np.ndarray] = []  # layer outputs (B, C, h, w) whose upsampled values wait
    uncounted: list[np.ndarray] = []  # those whose raw values wait
    held = seen = counted = raw_counted = 0  # bytes in ``pending``; images seen, and counted (upsampled, raw)

    def count_raw() -> None:
        """Count the raw values of the batches not counted yet, above the level the counts so far allow."""
        nonlocal needed, raw_counted
        if uncounted:
            level = tail.level(needed)  # bins below the needed one are never read
            for acts in uncounted:
                tail.add_raw(acts, level)
            needed = tail.needed_bin(target)  # (C,)
            images = sum(len(acts) for acts in uncounted)
            for k, concept in enumerate(concepts):
                mask_total[k] += np.count_nonzero(masks[concept][np.arange(raw_counted, raw_counted + images)])
            raw_counted += images
            uncounted.clear()

    def count_up(last: bool) -> None:
        """Count the upsampled values of the pending batches, above the level the raw counts allow.

        The candidate cells are found for as many images at a time as should give about half of
        ``_CHUNK_CELLS`` (judged from the share of raw values above the level: a source above it
        makes at most 4 candidate cells), gathered up to ``_CHUNK_CELLS``, then evaluated in
        bounded pieces: memory stays bounded, whatever the level."""
        nonlocal held, counted
        batches = list(pending)
        pending.clear()
        held = 0
        if (needed < 0).any():  # some threshold may still fall below the floor: the fallback's histogram
            for acts in batches:  # batch by batch, in order
                hist.add(acts.transpose(1, 0, 2, 3).reshape(acts.shape[1], -1))
        if last and (needed < 0).any():  # the exact second pass counts instead
            counted += sum(acts.shape[0] for acts in batches)
            return
        level = tail.level(needed)
        screen = _Bilinear.screen(level)
        hot = float(tail.share_from(needed).sum()) * upsample.in_size[0] * upsample.in_size[1]  # per image
        images = max(1, int(_CHUNK_CELLS / (2 * 4 * hot + 1)))
        parts: list[tuple[np.ndarray, ...]] = []  # candidate cells gathered: cell, channel, image, corners
        for acts, final in _groups(batches, images):
            cell, channel, image, corners = upsample.candidates(acts, screen)
            parts.append((cell, channel, image + counted, corners))
            counted += acts.shape[0]
            del acts, cell, channel, image, corners  # (a joined group and its cells: not held while counting)
            if final or sum(part[0].size for part in parts) >= _CHUNK_CELLS:
                _count_up(tail, upsample, *(np.concatenate(v) for v in zip(*parts, strict=True)), level, pairing)
                parts = []

    bar = progress(desc=f"dissect {layer}", total=n_images, unit="img")
    try:
        for x in iter_batches(images, batch_size):
            b = x.shape[0]
            if seen + b > n_images:
                raise KernelscopeError(f"masks: there are more images than the {n_images} masks")
            acts = _layer_output(model, hook, x)  # (B, C, h, w)
            if np.may_share_memory(acts, x):  # (a layer that passes its input on: the stream may reuse it)
                acts = acts.copy()
            if tail is None:
                first = acts.transpose(1, 0, 2, 3).reshape(acts.shape[1], -1)  # (C, B h w)
                hist = StreamingHistogram(acts.shape[1], n_bins)  # for the rare fallback only
                tail = _Tail(first, 1 + len(concepts) * n_orders, tail_fraction, tail_bins)
                upsample = _Bilinear(acts.shape[2:], mask_size)
                target = top_fraction * (n_images * acts.shape[2] * acts.shape[3])  # final count above t, as read
                needed = tail.needed_bin(target)
            # raw values are counted _GROUP images at a time; upsampled values wait longer (up to
            # _DEFER_BYTES of batches): by then the level has risen and fewer of them count
            pending.append(acts)
            uncounted.append(acts)
            held += acts.nbytes
            seen += b
            if sum(len(a) for a in uncounted) >= _GROUP or held >= _DEFER_BYTES:
                count_raw()
            if held >= _DEFER_BYTES:
                count_up(last=False)
            bar.update(b)
        if pending:
            count_raw()
            count_up(last=True)
    finally:
        bar.close()
    if hist is None:
        raise KernelscopeError("the dataset has no images (0 given); give at least one image")
    if seen != n_images:
        raise KernelscopeError(f"masks: there are {n_images} masks but {seen} images")
    found = tail.threshold(top_fraction)
    if found is None:  # the threshold lies below the floor: read it from the full histogram, count again
        passes = 2
        thresholds = hist.upper_quantile(top_fraction)
        fired, intersect = _counting_pass(model, hook, images, masks, thresholds, perms, batch_size)
    else:
        passes = 1
        thresholds, bins, share = found
        counts = tail.above(bins, share)  # (1 + K * orders, C)
        fired = counts[0]
        intersect = counts[1:].reshape(len(concepts), n_orders, -1)
    total_pixels = float(n_images * pixels)
    out: dict[str, Any] = {"threshold": thresholds, "fire_fraction": fired / total_pixels, "concepts": {},
                           "passes": passes, "at": at, "read": read}
    for k, concept in enumerate(concepts):
        union = fired[None] + mask_total[k][:, None] - intersect[k]  # (1 + P, C)
        iou = np.divide(intersect[k], union, out=np.zeros_like(union), where=union > 0)
        coverage = float(mask_total[k, 0] / total_pixels)
        null = iou[1:] if n_permutations else np.full((1, iou.shape[1]), np.nan)
        out["concepts"][concept] = {
            "iou": iou[0], "coverage": coverage, "chance": chance_iou(fired / total_pixels, coverage),
            "null_mean": null.mean(axis=0), "null_p95": np.quantile(null, 0.95, axis=0),
        }
    return out


def _groups(batches: list[np.ndarray], size: int) -> Iterator[tuple[np.ndarray, bool]]:
    """``batches`` (B, C, h, w) cut and joined into groups of ``size`` images (the last may be
    smaller), one at a time, each with whether it is the last."""
    group: list[np.ndarray] = []
    held = 0
    for i, acts in enumerate(batches):
        for start in range(0, len(acts), size):
            part = acts[start : start + size]
            group.append(part)
            held += len(part)
            last = i == len(batches) - 1 and start + size >= len(acts)
            if held >= size or last:
                yield (np.concatenate(group) if len(group) > 1 else group[0]), last
                group, held = [], 0


def _count_up(tail: _Tail, upsample: _Bilinear, cell: np.ndarray, channel: np.ndarray, image: np.ndarray,
              corners: np.ndarray, level: np.ndarray, pairing: _Pairing) -> None:
    """Add to ``tail.up`` the upsampled values above ``level`` (C,) in candidate cells (see
    :meth:`_Bilinear.candidates`; ``image`` indexes the dataset, in order): all of them (row 0)
    and, per concept and order, those inside the paired mask. The cells are screened
    ``_SCREEN_SLOTS`` output pixels at a time, the pixels that pass computed and counted
    ``_PIECE`` at a time."""
    level = level[channel]  # (K,)
    step = max(1, _SCREEN_SLOTS // upsample.slots)  # cells screened at once
    waiting: list[np.ndarray] = []  # pixels that passed the screen (flat indices into (K, slots))
    for start in range(0, cell.size, step):
        part = slice(start, start + step)
        waiting.append(upsample.passing(cell[part], corners[part], level[part]) + start * upsample.slots)
        if sum(w.size for w in waiting) < _PIECE and start + step < cell.size:
            continue
        passed = np.concatenate(waiting)
        waiting = []
        for piece in range(0, passed.size, _PIECE):
            k, pixel, values = upsample.exact(cell, corners, level, passed[piece : piece + _PIECE])  # (E,) each
            if values.size:
                _count_entries(tail, np.take(channel, k), np.take(image, k), pixel, values, pairing)


def _count_entries(tail: _Tail, channel: np.ndarray, image: np.ndarray, pixel: np.ndarray, values: np.ndarray,
                   pairing: _Pairing) -> None:
    """Count upsampled ``values`` (E,) of ``channel``, ``image`` (sorted), ``pixel``: all (row 0) and
    those inside the mask paired with their image, per concept and order (rows
    ``1 + concept * orders + order``)."""
    key = tail.keys(values, channel)  # (E,)
    tail.add_up(0, key)
    for c, concept in enumerate(pairing.masks):
        inside = pairing.inside(concept, image, pixel)  # (orders, E)
        which_order, which = np.divmod(np.flatnonzero(inside), values.size)
        tail.add_up(1 + c * inside.shape[0] + which_order, np.take(key, which))


class _Pairing:
    """The masks paired with each image under the true pairing and each permutation, gathered
    (``masks[index]``) for up to ``_MASK_BLOCK`` images at a time: only the images asked for."""

    def __init__(self, masks: dict[str, Any], perms: Permutations):
        self.masks, self.orders = masks, _Orders(perms)

    def inside(self, concept: str, image: np.ndarray, pixel: np.ndarray) -> np.ndarray:
        """(orders, E) bool: is ``pixel[e]`` inside the mask paired with image ``image[e]`` (dataset
        indices, sorted) under each order?"""
        masks = self.masks[concept]
        starts = np.arange(int(image[0]), int(image[-1]) + 1, _MASK_BLOCK)
        bounds = np.searchsorted(image, np.append(starts, int(image[-1]) + 1))
        inside = np.empty((1 + self.orders.perms.count, image.size), dtype=bool)
        for block, lo, hi in zip(starts, bounds[:-1], bounds[1:], strict=True):
            if hi > lo:
                rows = self.orders.rows(int(block), int(image[hi - 1]) + 1 - int(block))  # (orders, B_b)
                paired = np.take(masks, rows.ravel(), axis=0) if isinstance(masks, np.ndarray) else masks[rows.ravel()]
                paired = np.asarray(paired, dtype=bool).reshape(len(rows), -1)  # (orders, B_b * Hm * Wm)
                pixels = paired.shape[1] // rows.shape[1]
                inside[:, lo:hi] = np.take(paired, (image[lo:hi] - block) * pixels + pixel[lo:hi], axis=1)
        return inside


def _counting_pass(model, layer, images, masks, thresholds, perms, batch_size):
    """Exact counts of fired pixels and intersections at known thresholds (a second pass)."""
    concepts = list(masks)
    mask_size = tuple(masks[concepts[0]].shape[1:])
    n_orders = 1 + perms.count
    channels = thresholds.shape[0]
    fired = np.zeros(channels)
    intersect = np.zeros((len(concepts), n_orders, channels))
    level = thresholds.astype(np.float32).astype(np.float64)  # fire: up > t, compared in float32
    pairing = _Pairing(masks, perms)
    upsample = None
    seen = 0
    bar = progress(desc=f"dissect {layer}: exact pass", total=perms.n, unit="img")
    try:
        for x in iter_batches(images, batch_size):
            b = x.shape[0]
            acts = _layer_output(model, layer, x)  # (B, C, h, w)
            if upsample is None:
                upsample = _Bilinear(acts.shape[2:], mask_size)
            channel, image, pixel, _ = upsample.above(acts, level)  # the fired pixels, (E,) each
            fired += np.bincount(channel, minlength=channels)
            for k, concept in enumerate(concepts):
                inside = pairing.inside(concept, image + seen, pixel) if pixel.size else np.zeros((n_orders, 0), bool)
                order, which = np.divmod(np.flatnonzero(inside), channel.size)
                counts = np.bincount(order * channels + channel[which], minlength=n_orders * channels)
                intersect[k] += counts.reshape(n_orders, channels)  # (1 + P, C)
            seen += b
            bar.update(b)
    finally:
        bar.close()
    return fired, intersect


def _layer_output(model: nn.Module, layer: str, x: Any) -> np.ndarray:
    """The layer's output for a batch: (B, C, h, w) float32."""
    acts = forward_until(model, layer, _to_tensor(x, model))
    if acts.dim() != 4:
        raise KernelscopeError(f"layer {layer!r} output has shape {tuple(acts.shape)}, not (N, C, H, W)")
    return acts.float().cpu().numpy()


def _passes(concept: dict[str, Any], iou_threshold: float, gated: bool) -> np.ndarray:
    """(C,) bool: IoU > the fixed threshold and, when ``gated``, > the channel's null p95 (NaN never passes)."""
    iou = np.asarray(concept["iou"], dtype=float)
    ok = iou > iou_threshold
    if gated:
        ok &= iou > np.nan_to_num(np.asarray(concept["null_p95"], dtype=float), nan=np.inf)
    return ok


@dataclass
class DissectResult:
    """Network Dissection of one layer, trained network and its initialisation control.

    ``layer`` is the name the caller gave; ``at`` and ``read`` say where it was read
    (:func:`kernelscope.analysis.hooks.read_point`).
    """

    layer: str
    concepts: list[str]
    trained: dict[str, Any]
    init: dict[str, Any] | None
    n_images: int
    n_permutations: int
    iou_threshold: float = DETECTOR_IOU
    top_fraction: float = TOP_FRACTION
    mask_counts: dict[str, Any] | None = None
    at: str = "activation"
    read: str = ""

    def detectors(self, which: str = "trained", *, gated: bool = False) -> dict[str, list[int]]:
        """Channels with IoU above ``iou_threshold``, per concept.

        ``gated=True``: also above that channel's permutation-null p95 (the masks shuffled
        across images), so a fixed IoU reached by chance does not count. Without
        permutations (``n_permutations=0``) no channel passes the gate.
        """
        table = self.trained if which == "trained" else self.init
        if table is None:
            return {}
        return {k: np.nonzero(_passes(table["concepts"][k], self.iou_threshold, gated))[0].tolist()
                for k in self.concepts}

    def detector_counts(self, which: str = "trained") -> dict[str, dict[str, int]]:
        """Per concept: ``{"iou": n with IoU > 0.04, "gated": n that also clear the null's p95}``."""
        return {k: {"iou": len(v), "gated": len(self.detectors(which, gated=True)[k])}
                for k, v in self.detectors(which).items()}

    def rows(self) -> list[dict[str, Any]]:
        """One row per (concept, channel): the CSV table."""
        rows = []
        for k in self.concepts:
            t = self.trained["concepts"][k]
            i = self.init["concepts"][k] if self.init is not None else None
            for c in range(len(t["iou"])):
                rows.append({
                    "concept": k, "channel": c, "iou": float(t["iou"][c]), "chance_iou": float(t["chance"][c]),
                    "null_mean": float(t["null_mean"][c]), "null_p95": float(t["null_p95"][c]),
                    "detector": bool(t["iou"][c] > self.iou_threshold),
                    "above_null_p95": bool(t["iou"][c] > t["null_p95"][c]),
                    "detector_gated": bool(_passes(t, self.iou_threshold, True)[c]),
                    "init_iou": float(i["iou"][c]) if i is not None else None,
                    "init_null_p95": float(i["null_p95"][c]) if i is not None else None,
                })
        return rows

    def to_dict(self) -> dict[str, Any]:
        def summary(table):
            if table is None:
                return None
            return {k: {"best_channel": int(np.argmax(v["iou"])), "best_iou": float(np.max(v["iou"])),
                        "n_detectors": int((v["iou"] > self.iou_threshold).sum()),
                        "n_above_null_p95": int((v["iou"] > v["null_p95"]).sum()),
                        "n_detectors_gated": int(_passes(v, self.iou_threshold, True).sum()),
                        "coverage": v["coverage"], "max_null_p95": float(np.max(v["null_p95"]))}
                    for k, v in table["concepts"].items()}

        return {
            "layer": self.layer, "at": self.at, "read": self.read, "n_images": self.n_images,
            "n_permutations": self.n_permutations,
            "protocol": {"read": self.read, "threshold": f"top {self.top_fraction:.1%} of each channel's activations over "
                                      "the dataset", "upsampling": "bilinear to the mask size",
                         "iou": "pooled over the dataset", "detector": f"IoU > {self.iou_threshold}",
                         "detector_gated": f"IoU > {self.iou_threshold} and IoU > the channel's permutation-null "
                                           f"p95 ({self.n_permutations} permutations)"},
            "summary": {"trained": summary(self.trained), "init": summary(self.init)},
            "detectors": {"trained": self.detectors("trained"), "init": self.detectors("init")},
            "detectors_gated": {"trained": self.detectors("trained", gated=True),
                                "init": self.detectors("init", gated=True)},
            "mask_sources": self.mask_counts,
            "channels": self.rows(),
        }


def dissect(model: nn.Module, layer: str, images: Any, masks: dict[str, Any], *,
            init_model: nn.Module | None = None, n_permutations: int = 20, seed: int = 0,
            batch_size: int = 64, iou_threshold: float = DETECTOR_IOU, top_fraction: float = TOP_FRACTION,
            mask_counts: dict[str, Any] | None = None, at: str = "activation") -> DissectResult:
    """Network Dissection of ``layer`` for ``model`` and (when given) its initialisation ``init_model``.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Dotted name of a layer with output (N, C, h, w).
    images : ndarray (N, C, H, W), or a re-iterable of batches in the order of the masks
    masks : dict of str to ndarray (N, H, W)
        Concept masks of the image size (checked).
    init_model : nn.Module, optional
        The control; pass :func:`kernelscope.models.init.reinitialised` (model) when no
        recorded initial weights exist.
    at : "activation" or "conv"
        Where a conv ``layer`` is read (see :func:`dissect_layer`); the same for both models.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))   # identity: the map is the image
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0)
    >>> rng = np.random.default_rng(0)
    >>> masks = np.zeros((50, 8, 8), dtype=bool); masks[np.arange(50), rng.integers(0, 8, 50), 3] = True
    >>> x = (rng.random((50, 1, 8, 8)) + 2 * masks[:, None]).astype(np.float32)  # bright on the mask
    >>> result = dissect(net, "0", x, {"dot": masks}, n_permutations=5)
    >>> concept = result.trained["concepts"]["dot"]      # 16 of 3200 pixels fire: all on the mask
    >>> round(float(concept["iou"][0]), 2), result.detectors(), bool(concept["null_p95"][0] < 0.1)
    (0.32, {'dot': [0]}, True)
    """
    n_images, size = _count_and_size(images)
    from kernelscope.data.face_masks import check_masks

    if n_images is not None:
        masks = check_masks(masks, n_images, size)
    trained = dissect_layer(model, layer, images, masks, n_permutations=n_permutations, seed=seed,
                            batch_size=batch_size, top_fraction=top_fraction, at=at)
    init = None
    if init_model is not None:
        init = dissect_layer(init_model, layer, images, masks, n_permutations=n_permutations, seed=seed,
                             batch_size=batch_size, top_fraction=top_fraction, at=at)
    first = next(iter(masks.values()))
    return DissectResult(layer, list(masks), trained, init, len(first), n_permutations, iou_threshold,
                         top_fraction, mask_counts, at=at, read=trained["read"])


def _count_and_size(images: Any) -> tuple[int | None, tuple[int, int] | None]:
    if hasattr(images, "shape") and hasattr(images, "__getitem__"):
        array = _as_nchw(images)
        if array.shape[0] == 0:
            raise KernelscopeError("the dataset has no images (0 given); give at least one image")
        return array.shape[0], tuple(array.shape[2:])
    return None, None


def _layer(model: nn.Module, layer: str, x: np.ndarray) -> np.ndarray:
    acts = forward_until(model, layer, _to_tensor(x, model))
    if acts.dim() != 4:
        raise KernelscopeError(f"layer {layer!r} output has shape {tuple(acts.shape)}, not (N, C, H, W)")
    return acts.float().cpu().numpy()
