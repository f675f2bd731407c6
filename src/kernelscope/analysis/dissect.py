"""Network Dissection (Bau et al., 2017): which channels are detectors of a concept (eyes, mouth)?

Protocol, per channel ``c`` of a layer and concept ``k``:

1. threshold ``t_c``: the top 0.5% of the channel's activations over the whole dataset
   (the 0.995 quantile over all images and spatial positions, at the layer's resolution);
2. each activation map is upsampled to the mask size (bilinear, ``align_corners=False``)
   and thresholded: ``A_i = up(a_i) > t_c``;
3. ``IoU_{c,k} = sum_i |A_i & M_i| / sum_i |A_i | M_i|`` pooled over the dataset;
   a channel is a detector of ``k`` when ``IoU > 0.04``.

With each IoU come three references:

- chance IoU for the concept's coverage: the IoU of a map that fires on the same fraction
  ``a`` of pixels independently of the mask (coverage ``m``): ``a m / (a + m - a m)``;
- a permutation null: the IoU with the masks shuffled across images (``n_permutations``
  random permutations; mean and 95th percentile) -- what the IoU is for a channel that
  fires where masks usually are, not on the concept in this image;
- the same scores for the network at initialisation (recorded epoch 0, or a
  re-initialised copy).

One streaming pass over the data (a forward pass stopped at the layer): it
counts the activations and upsampled values above a floor far below the threshold (the top
5% of the first batch), in 1024 bins of equal mass, for all pixels and for the pixels inside
each mask -- under the true pairing and under each permutation. The threshold and the counts
above it are read from those at the end, linearly inside the threshold's bin. If the
threshold ends below the floor, it is read from a full histogram (4096 bins whose range grows
by merging) and an exact second pass counts at it. Memory holds histograms and counts,
never the activations, and the permutations are computed, not stored (:class:`Permutations`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._progress import progress
from kernelscope.analysis.hooks import _as_nchw, _to_tensor, forward_until
from kernelscope.errors import KernelscopeError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["StreamingHistogram", "Permutations", "channel_thresholds", "dissect_layer", "DissectResult",
           "dissect", "chance_iou", "DETECTOR_IOU", "TOP_FRACTION"]

DETECTOR_IOU = 0.04
TOP_FRACTION = 0.005


class StreamingHistogram:
    """Per-channel histograms whose range grows as data arrive (bins merge pairwise).

    Bin ``b`` of channel ``c`` covers ``[lo_c + b w_c, lo_c + (b + 1) w_c)``. When a value falls
    outside, the bin width is multiplied by a power of two and ``lo_c`` moved down by whole new
    bins, so old bins nest exactly inside new ones: no count is ever split or guessed.

    Examples
    --------
    >>> h = StreamingHistogram(1, n_bins=8)
    >>> h.add(np.array([[0.0, 1.0, 2.0, 3.0]]))
    >>> h.add(np.array([[10.0]]))        # the bins widen 4x (merging) to hold 10
    >>> int(h.counts.sum()), h.counts[0].tolist()
    (5, [2, 2, 0, 0, 0, 0, 1, 0])
    >>> t = h.upper_quantile(0.2)[0]     # one value in five above it
    >>> bool(3.0 < t < 10.0)
    True
    """

    def __init__(self, channels: int, n_bins: int = 4096):
        self.n_bins = n_bins
        self.counts = np.zeros((channels, n_bins), dtype=np.int64)
        self.lo = np.full(channels, np.nan)
        self.width = np.full(channels, np.nan)
        self.vmax = np.full(channels, -np.inf)  # exact largest value seen

    def _grow(self, channel: int, low: float, high: float) -> None:
        lo, width, n = self.lo[channel], self.width[channel], self.n_bins
        low, high = min(low, lo), max(high, lo + (n - 1) * width)  # the new range keeps the old one
        factor = 1
        while True:
            factor *= 2
            new_width = width * factor
            shift = int(np.ceil(max(lo - low, 0.0) / new_width))  # whole new bins added below
            new_lo = lo - shift * new_width
            if new_lo <= low and high < new_lo + n * new_width:
                break
        old_edges = lo + np.arange(n) * width
        new_index = np.floor((old_edges - new_lo) / new_width + 1e-9).astype(np.int64)
        merged = np.zeros(n, dtype=np.int64)
        np.add.at(merged, np.clip(new_index, 0, n - 1), self.counts[channel])
        self.counts[channel], self.lo[channel], self.width[channel] = merged, new_lo, new_width

    def add(self, values: np.ndarray) -> None:
        """Add ``values`` of shape (C, M) (one row per channel)."""
        values = np.asarray(values, dtype=np.float64)
        low, high = values.min(axis=1), values.max(axis=1)
        self.vmax = np.maximum(self.vmax, high)
        for channel in np.nonzero(np.isnan(self.lo))[0]:  # first data: the range of this batch
            span = max(high[channel] - low[channel], 1e-6 * max(abs(high[channel]), 1.0), 1e-12)
            self.lo[channel] = low[channel]
            self.width[channel] = span * 1.0001 / self.n_bins
        top = self.lo + self.n_bins * self.width
        for channel in np.nonzero((low < self.lo) | (high >= top))[0]:
            self._grow(int(channel), float(low[channel]), float(high[channel]))
        index = np.floor((values - self.lo[:, None]) / self.width[:, None]).astype(np.int64)
        np.clip(index, 0, self.n_bins - 1, out=index)
        index += (np.arange(values.shape[0]) * self.n_bins)[:, None]
        self.counts += np.bincount(index.ravel(), minlength=self.counts.size).reshape(self.counts.shape)

    def upper_quantile(self, fraction: float) -> np.ndarray:
        """Per channel, the value with ``fraction`` of the counts above it (linear inside a bin)."""
        totals = self.counts.sum(axis=1)
        above = np.cumsum(self.counts[:, ::-1], axis=1)[:, ::-1]  # counts in bins >= b
        out = np.empty(self.counts.shape[0])
        for channel in range(self.counts.shape[0]):
            target = fraction * totals[channel]
            # the highest bin b whose "above" count reaches the target
            b = int(np.nonzero(above[channel] >= target)[0].max()) if target > 0 else self.n_bins - 1
            in_bin = self.counts[channel, b]
            above_bin = above[channel, b] - in_bin
            share = (target - above_bin) / in_bin if in_bin else 0.0  # part of the bin above t
            edge = self.lo[channel] + (b + 1 - share) * self.width[channel]
            out[channel] = min(edge, self.vmax[channel])
        return out


def channel_thresholds(model: nn.Module, layer: str, images: Any, *, top_fraction: float = TOP_FRACTION,
                       batch_size: int = 64, n_bins: int = 4096, total: int | None = None) -> np.ndarray:
    """Per-channel threshold ``t_c``: the top ``top_fraction`` of the layer's activations over ``images``."""
    hist = None
    bar = progress(desc=f"dissect {layer}: thresholds", total=total, unit="img")
    try:
        for x in _batches(images, batch_size):
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


class Permutations:
    """``count`` seeded random permutations of ``range(n)``, evaluated on demand in O(1) memory.

    Each is a 4-round Feistel network on ``2 * half`` bits with cycle walking (a bijection of
    ``range(n)``), so pairing image ``i`` with the mask of image ``perm(i)`` needs no array of
    length ``n`` per permutation: memory does not grow with the dataset.

    Examples
    --------
    >>> perms = Permutations(10, 2, seed=0)
    >>> rows = perms.rows(0, 10)                       # row 0 is the identity
    >>> rows[0].tolist(), [sorted(r.tolist()) == list(range(10)) for r in rows[1:]]
    ([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [True, True])
    """

    _MASK32 = np.uint64(0xFFFFFFFF)

    def __init__(self, n: int, count: int, seed: int = 0):
        self.n, self.count = int(n), int(count)
        self.half = max(1, (max(1, (self.n - 1).bit_length()) + 1) // 2)
        self.keys = np.random.default_rng(seed).integers(0, 2**32, size=(self.count, 4), dtype=np.uint64)

    def _feistel(self, x: np.ndarray, keys: np.ndarray) -> np.ndarray:
        half = np.uint64(self.half)
        low = np.uint64((1 << self.half) - 1)
        left, right = x >> half, x & low
        for key in keys:
            f = ((right * np.uint64(0x9E3779B1)) & self._MASK32) ^ key  # < 2^64: no overflow
            f = ((f ^ (f >> np.uint64(15))) * np.uint64(0x85EBCA6B)) & self._MASK32
            f ^= f >> np.uint64(13)
            left, right = right, left ^ (f & low)
        return (left << half) | right

    def apply(self, which: int, indices: np.ndarray) -> np.ndarray:
        """``perm_which(indices)``; every index must lie in ``range(n)``."""
        indices = np.asarray(indices)
        if indices.size and (indices.min() < 0 or indices.max() >= self.n):
            raise KernelscopeError(f"permutation indices must lie in 0..{self.n - 1}")
        y = self._feistel(indices.astype(np.uint64), self.keys[which])
        outside = y >= self.n
        while outside.any():  # cycle walking: stay inside range(n)
            y[outside] = self._feistel(y[outside], self.keys[which])
            outside = y >= self.n
        return y.astype(np.int64)

    def rows(self, start: int, length: int) -> np.ndarray:
        """(1 + count, length): the identity, then each permutation, of ``start .. start + length - 1``."""
        index = np.arange(start, start + length)
        return np.stack([index] + [self.apply(k, index) for k in range(self.count)])


class _Tail:
    """Counts of the values above a per-channel floor, in bins of equal mass (set from a first batch).

    Row 0 of ``up`` counts every upsampled pixel above the floor; the other rows count only the
    pixels inside a (paired) mask. ``raw`` counts the layer's own activations, for the quantile.
    Bin ``j`` of channel ``c`` is ``[edges[c, j], edges[c, j + 1])``; the last bin ends at the
    largest value seen. Equal-mass bins put the resolution where the values are.
    """

    def __init__(self, first: np.ndarray, rows: int, fraction: float, n_bins: int):
        channels = first.shape[0]
        self.floor = np.quantile(first, 1.0 - fraction, axis=1)  # (C,)
        self.edges = np.empty((channels, n_bins))
        for c in range(channels):
            above = first[c][first[c] > self.floor[c]]
            self.edges[c] = np.quantile(above, np.linspace(0, 1, n_bins, endpoint=False)) if above.size \
                else np.full(n_bins, self.floor[c])
            self.edges[c, 0] = self.floor[c]
        self.top = np.full(channels, -np.inf)  # largest value seen (upper edge of the last bin)
        self.raw = np.zeros((channels, n_bins), dtype=np.int64)
        self.up = np.zeros((rows, channels, n_bins), dtype=np.int64)
        self.total = np.zeros(channels, dtype=np.int64)  # every raw value, above the floor or not

    def _bins(self, values: np.ndarray, channel: np.ndarray) -> np.ndarray:
        bins = np.empty(values.shape, dtype=np.int64)
        for c in np.unique(channel):
            chosen = channel == c
            bins[chosen] = np.searchsorted(self.edges[c], values[chosen], side="right") - 1
        np.clip(bins, 0, self.edges.shape[1] - 1, out=bins)
        return bins

    def add_raw(self, raw: np.ndarray) -> None:
        """``raw`` (C, M): the layer's activations of a batch."""
        self.total += raw.shape[1]
        self.top = np.maximum(self.top, raw.max(axis=1))
        channel, index = np.nonzero(raw > self.floor[:, None])
        values = raw[channel, index]
        n_bins = self.edges.shape[1]
        self.raw += np.bincount(channel * n_bins + self._bins(values, channel),
                                minlength=self.raw.size).reshape(self.raw.shape)

    def add_up(self, values: np.ndarray, channel: np.ndarray, rows: list[tuple[int, np.ndarray]]) -> None:
        """Upsampled values above the floor with their channel; ``rows``: (row, selected entries)."""
        if values.size == 0:
            return
        n_bins = self.edges.shape[1]
        key = channel * n_bins + self._bins(values, channel)  # (E,)
        per_row = self.raw.size
        keys = np.concatenate([row * per_row + key[entries] for row, entries in rows])
        flat = self.up.reshape(-1)
        flat += np.bincount(keys, minlength=flat.size)

    def threshold(self, fraction: float) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Per channel: ``t`` with ``fraction`` of all raw values above it, its bin and the share of the
        bin above it; None when some ``t`` lies below the floor (the tail does not reach it)."""
        target = fraction * self.total  # (C,)
        from_top = np.cumsum(self.raw[:, ::-1], axis=1)[:, ::-1]  # counts in bins >= j
        if np.any(from_top[:, 0] < target):
            return None
        channels, n_bins = self.raw.shape
        t, bins, share = np.empty(channels), np.empty(channels, dtype=np.int64), np.empty(channels)
        for c in range(channels):
            j = int(np.nonzero(from_top[c] >= target[c])[0].max()) if target[c] > 0 else n_bins - 1
            lower = self.edges[c, j]
            upper = self.edges[c, j + 1] if j + 1 < n_bins else max(self.top[c], lower)
            inside = self.raw[c, j]
            part = (target[c] - (from_top[c, j] - inside)) / inside if inside else 0.0
            t[c], bins[c], share[c] = upper - part * (upper - lower), j, part
        return t, bins, share

    def above(self, bins: np.ndarray, share: np.ndarray) -> np.ndarray:
        """(rows, C) upsampled counts above each channel's threshold (linear inside its bin)."""
        from_top = np.cumsum(self.up[..., ::-1], axis=-1)[..., ::-1]
        channels = np.arange(self.raw.shape[0])
        n_bins = self.raw.shape[1]
        beyond = np.where(bins + 1 < n_bins, from_top[:, channels, np.minimum(bins + 1, n_bins - 1)], 0)
        return beyond + share * self.up[:, channels, bins]


def dissect_layer(model: nn.Module, layer: str, images: Any, masks: dict[str, Any], *,
                  top_fraction: float = TOP_FRACTION, n_permutations: int = 20, seed: int = 0,
                  batch_size: int = 64, n_bins: int = 4096, tail_bins: int = 1024,
                  tail_fraction: float = 0.05) -> dict[str, Any]:
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

    Parameters
    ----------
    images : ndarray (N, C, H, W) or iterable of batches
        Model inputs, in the same order as the masks. A stream is consumed once, or twice in
        the rare fallback (give a re-iterable).
    masks : dict of str to array (N, Hm, Wm) bool
        Concept masks, indexable by an index array (``masks[k][idx]``).

    Returns
    -------
    dict
        ``threshold`` (C,), ``fire_fraction`` (C,), ``passes`` (1 or 2) and per concept: ``iou``,
        ``chance``, ``null_mean``, ``null_p95`` (C,) and ``coverage``.
    """
    import torch.nn.functional as F

    if not masks:
        raise KernelscopeError("masks: no concept given; give at least one (N, H, W) mask array")
    concepts = list(masks)
    n_images = len(masks[concepts[0]])
    mask_size = tuple(masks[concepts[0]].shape[1:])
    pixels = mask_size[0] * mask_size[1]
    perms = Permutations(n_images, n_permutations, seed)
    n_orders = 1 + n_permutations  # row 0: the true pairing
    mask_total = np.zeros((len(concepts), n_orders))
    hist: StreamingHistogram | None = None
    tail: _Tail | None = None
    seen = 0
    bar = progress(desc=f"dissect {layer}", total=n_images, unit="img")
    try:
        for x in _batches(images, batch_size):
            b = x.shape[0]
            if seen + b > n_images:
                raise KernelscopeError(f"masks: there are more images than the {n_images} masks")
            acts = forward_until(model, layer, _to_tensor(x, model)).float().cpu()  # (B, C, h, w)
            if acts.dim() != 4:
                raise KernelscopeError(f"layer {layer!r} output has shape {tuple(acts.shape)}, not (N, C, H, W)")
            channels = acts.shape[1]
            raw = acts.permute(1, 0, 2, 3).reshape(channels, -1).numpy()  # (C, B*h*w)
            if hist is None:
                hist = StreamingHistogram(channels, n_bins)  # for the rare fallback only
                tail = _Tail(raw, 1 + len(concepts) * n_orders, tail_fraction, tail_bins)
            hist.add(raw)
            tail.add_raw(raw)
            up = F.interpolate(acts, size=mask_size, mode="bilinear", align_corners=False)
            up = up.reshape(b, channels, pixels).numpy()  # (B, C, P)
            eb, ec, ep = np.nonzero(up > tail.floor[None, :, None].astype(np.float32))  # the tail, (E,) each
            orders = perms.rows(seen, b)  # (1 + P, B)
            rows = [(0, np.arange(eb.size))]
            for k, concept in enumerate(concepts):
                paired = np.asarray(masks[concept][orders.ravel()], dtype=bool).reshape(n_orders, b, pixels)
                mask_total[k] += paired.sum(axis=(1, 2))
                order_index, entry = np.nonzero(paired[:, eb, ep])  # tail entries inside each paired mask
                for r in range(n_orders):
                    rows.append((1 + k * n_orders + r, entry[order_index == r]))
            tail.add_up(up[eb, ec, ep].astype(np.float64), ec, rows)
            seen += b
            bar.update(b)
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
        fired, intersect = _counting_pass(model, layer, images, masks, thresholds, perms, batch_size)
    else:
        passes = 1
        thresholds, bins, share = found
        counts = tail.above(bins, share)  # (1 + K * orders, C)
        fired = counts[0]
        intersect = counts[1:].reshape(len(concepts), n_orders, -1)
    total_pixels = float(n_images * pixels)
    out: dict[str, Any] = {"threshold": thresholds, "fire_fraction": fired / total_pixels, "concepts": {},
                           "passes": passes}
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


def _counting_pass(model, layer, images, masks, thresholds, perms, batch_size):
    """Exact counts of fired pixels and intersections at known thresholds (a second pass)."""
    import torch
    import torch.nn.functional as F

    concepts = list(masks)
    mask_size = tuple(masks[concepts[0]].shape[1:])
    pixels = mask_size[0] * mask_size[1]
    n_orders = 1 + perms.count
    channels = thresholds.shape[0]
    fired = np.zeros(channels)
    intersect = np.zeros((len(concepts), n_orders, channels))
    t = torch.as_tensor(thresholds, dtype=torch.float32)[None, :, None, None]
    seen = 0
    bar = progress(desc=f"dissect {layer}: exact pass", total=perms.n, unit="img")
    try:
        for x in _batches(images, batch_size):
            b = x.shape[0]
            acts = forward_until(model, layer, _to_tensor(x, model)).float().cpu()  # (B, C, h, w)
            up = F.interpolate(acts, size=mask_size, mode="bilinear", align_corners=False)  # (B, C, Hm, Wm)
            fire = (up > t).reshape(b, channels, pixels).to(torch.float32)  # (B, C, P)
            fired += fire.sum(dim=(0, 2)).double().numpy()
            fire_t = fire.permute(1, 0, 2).reshape(channels, b * pixels)  # (C, B*P)
            orders = perms.rows(seen, b)  # (1 + P, B)
            for k, concept in enumerate(concepts):
                m = np.asarray(masks[concept][orders.ravel()], dtype=np.float32).reshape(n_orders, b * pixels)
                intersect[k] += (torch.from_numpy(m) @ fire_t.T).double().numpy()  # (1 + P, C)
            seen += b
            bar.update(b)
    finally:
        bar.close()
    return fired, intersect


@dataclass
class DissectResult:
    """Network Dissection of one layer, trained network and its initialisation control."""

    layer: str
    concepts: list[str]
    trained: dict[str, Any]
    init: dict[str, Any] | None
    n_images: int
    n_permutations: int
    iou_threshold: float = DETECTOR_IOU
    top_fraction: float = TOP_FRACTION
    mask_counts: dict[str, Any] | None = None

    def detectors(self, which: str = "trained") -> dict[str, list[int]]:
        """Channels with IoU above ``iou_threshold``, per concept."""
        table = self.trained if which == "trained" else self.init
        if table is None:
            return {}
        return {k: np.nonzero(table["concepts"][k]["iou"] > self.iou_threshold)[0].tolist() for k in self.concepts}

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
                        "coverage": v["coverage"], "max_null_p95": float(np.max(v["null_p95"]))}
                    for k, v in table["concepts"].items()}

        return {
            "layer": self.layer, "n_images": self.n_images, "n_permutations": self.n_permutations,
            "protocol": {"threshold": f"top {self.top_fraction:.1%} of each channel's activations over "
                                      "the dataset", "upsampling": "bilinear to the mask size",
                         "iou": "pooled over the dataset", "detector": f"IoU > {self.iou_threshold}"},
            "summary": {"trained": summary(self.trained), "init": summary(self.init)},
            "detectors": {"trained": self.detectors("trained"), "init": self.detectors("init")},
            "mask_sources": self.mask_counts,
            "channels": self.rows(),
        }


def dissect(model: nn.Module, layer: str, images: Any, masks: dict[str, Any], *,
            init_model: nn.Module | None = None, n_permutations: int = 20, seed: int = 0,
            batch_size: int = 64, iou_threshold: float = DETECTOR_IOU, top_fraction: float = TOP_FRACTION,
            mask_counts: dict[str, Any] | None = None) -> DissectResult:
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
        The control; pass :func:`kernelscope.analysis.hooks.reinitialised` (model) when no
        recorded initial weights exist.

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
                            batch_size=batch_size, top_fraction=top_fraction)
    init = None
    if init_model is not None:
        init = dissect_layer(init_model, layer, images, masks, n_permutations=n_permutations, seed=seed,
                             batch_size=batch_size, top_fraction=top_fraction)
    first = next(iter(masks.values()))
    return DissectResult(layer, list(masks), trained, init, len(first), n_permutations, iou_threshold,
                         top_fraction, mask_counts)


def _count_and_size(images: Any) -> tuple[int | None, tuple[int, int] | None]:
    if hasattr(images, "shape") and hasattr(images, "__getitem__"):
        array = _as_nchw(images)
        if array.shape[0] == 0:
            raise KernelscopeError("the dataset has no images (0 given); give at least one image")
        return array.shape[0], tuple(array.shape[2:])
    return None, None


def _batches(images: Any, batch_size: int):
    from kernelscope.analysis.hooks import iter_batches

    return iter_batches(images, batch_size)


def _layer(model: nn.Module, layer: str, x: np.ndarray) -> np.ndarray:
    acts = forward_until(model, layer, _to_tensor(x, model))
    if acts.dim() != 4:
        raise KernelscopeError(f"layer {layer!r} output has shape {tuple(acts.shape)}, not (N, C, H, W)")
    return acts.float().cpu().numpy()
