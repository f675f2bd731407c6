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
the floor, it is read from a histogram (4096 bins over each channel's range, which the first
pass records) in a second pass, and an exact third pass counts at it.

The pass is a reducer of :func:`kernelscope.analysis.passes.run_pass`: under ``torchrun`` each
rank counts its shard in the same bins (set by the data set's first batch, which every rank
computes) and the integer counts are summed, so the result is that of one process.

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

from kernelscope._display import Displayed, Summary
from kernelscope._progress import progress
from kernelscope.analysis.bilinear import _Bilinear
from kernelscope.analysis.hooks import _as_nchw, _to_tensor, forward_until, iter_batches, read_point
from kernelscope.analysis.passes import Batch, Checkpoint, PassReport, as_images, run_pass
from kernelscope.analysis.sketches import Permutations, StreamingHistogram, _Orders, _Tail
from kernelscope.errors import KernelscopeError
from kernelscope.train.distributed import Context

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
                  tail_fraction: float = 0.05, at: str = "activation", context: Context | None = None,
                  workers: int = 0, checkpoint: Checkpoint | None = None) -> dict[str, Any]:
    """IoU of every channel of ``layer`` with every concept, in one streaming pass (see below).

    One forward pass (stopped at the layer) per image. The first batch fixes, per channel, a
    floor (its ``1 - tail_fraction`` quantile, far below the top-``top_fraction`` threshold) and
    ``tail_bins`` bins of equal mass above it. Every batch then adds, in those bins, its raw
    activations above the floor (for the threshold) and its upsampled values above the floor:
    all of them, and those inside each concept's mask under the true pairing and under each
    permutation. At the end the threshold ``t_c`` is read from the raw counts and the counts
    above it from the upsampled ones, both linearly inside ``t_c``'s bin. Should ``t_c`` fall
    below the floor (a first batch unlike the rest), it is read from a histogram of the
    activations over their range (known from the first pass) in a second pass, and an exact
    third pass counts at it.

    Values in bins that cannot hold the threshold (known from the raw counts so far) are left
    out, and the upsampled values of a batch are counted once later batches have raised that
    bound (see the module's notes): the counts that are read, and so every result, are those of
    counting everything above the floor.

    Under ``torchrun`` (``context`` from :func:`kernelscope.train.distributed.setup`) every rank
    counts its shard in the bins of the data set's first batch (each rank computes it), and the
    counts are summed: integers, so the result is that of one process
    (:func:`kernelscope.analysis.passes.run_pass`).

    Parameters
    ----------
    images : ndarray (N, C, H, W), image folder, or iterable of batches
        Model inputs, in the same order as the masks. A stream is consumed once, or three times
        in the rare fallback (give a re-iterable).
    masks : dict of str to array (N, Hm, Wm) bool
        Concept masks, indexable by an index array (``masks[k][idx]``).
    at : "activation" or "conv"
        Read a conv layer after the activation that follows it (default) or its own signed
        output (:func:`kernelscope.analysis.hooks.read_point`; other layers are read as they are).
    context, workers, checkpoint
        Sharding, folder workers, checkpoints: see :func:`kernelscope.analysis.passes.run_pass`.

    Returns
    -------
    dict
        ``threshold`` (C,), ``fire_fraction`` (C,), ``passes`` (1 or 3), ``at`` and ``read`` (what
        was read for ``layer``), ``n_images`` (used) and per concept: ``iou``, ``chance``,
        ``null_mean``, ``null_p95`` (C,) and ``coverage``.
    """
    options = dict(top_fraction=top_fraction, n_permutations=n_permutations, seed=seed, n_bins=n_bins,
                   tail_bins=tail_bins, tail_fraction=tail_fraction, at=at)
    return _dissect_models({"dissect": model}, layer, images, masks, options, context=context,
                           batch_size=batch_size, workers=workers, checkpoint=checkpoint)["dissect"]


def _dissect_models(models: dict[str, nn.Module], layer: str, images: Any, masks: dict[str, Any],
                    options: dict[str, Any], *, context: Context | None, batch_size: int, workers: int,
                    checkpoint: Checkpoint | None) -> dict[str, dict[str, Any]]:
    """:func:`dissect_layer` of several models in one read of the images."""
    reducers = {key: DissectReducer(model, layer, masks, **options) for key, model in models.items()}
    source = as_images(images)
    context = context if context is not None else Context()
    if context.rank > 0:  # the bins are set by the data set's first batch, on every rank alike
        first = source.first(batch_size, workers).inputs
        for reducer in reducers.values():
            reducer.first(first)
    report = run_pass(reducers, source, context=context, batch_size=batch_size, workers=workers,
                      checkpoint=checkpoint, name=f"dissect-{layer}", desc=f"dissect {layer}")
    return {key: reducer.finish(source, context=context, batch_size=batch_size, workers=workers, report=report)
            for key, reducer in reducers.items()}


class DissectReducer:
    """The counting pass of :func:`dissect_layer` as a reducer of :func:`~kernelscope.analysis.passes.run_pass`.

    State: the tail's bins (floor and edges, the same on every rank: set by the data set's first
    batch) and its counts, the per-channel range (for the fallback), the mask pixel counts.
    Merge: counts summed, ranges widened: integers, so merged counts equal one process's.
    :meth:`finish` reads the thresholds and IoUs (running the fallback passes if needed).
    """

    def __init__(self, model: nn.Module, layer: str, masks: dict[str, Any], *, top_fraction: float = TOP_FRACTION,
                 n_permutations: int = 20, seed: int = 0, n_bins: int = 4096, tail_bins: int = 1024,
                 tail_fraction: float = 0.05, at: str = "activation"):
        if not masks:
            raise KernelscopeError("masks: no concept given; give at least one (N, H, W) mask array")
        self.model, self.layer, self.masks, self.at = model, layer, masks, at
        self.hook, self.read = read_point(model, layer, at)  # the module whose output is dissected
        self.concepts = list(masks)
        self.n_images = len(masks[self.concepts[0]])
        self.mask_size = tuple(masks[self.concepts[0]].shape[1:])
        self.top_fraction, self.n_bins, self.tail_bins, self.tail_fraction = top_fraction, n_bins, tail_bins, tail_fraction
        self.n_permutations = n_permutations
        self.perms = Permutations(self.n_images, n_permutations, seed)
        self.pairing = _Pairing(masks, self.perms)
        self.n_orders = 1 + n_permutations  # row 0: the true pairing
        self.mask_total = np.zeros((len(self.concepts), self.n_orders))  # the same under every pairing
        self.tail: _Tail | None = None
        self.upsample: _Bilinear | None = None
        self.low = self.high = None  # (C,) the range of the activations (for the fallback's histogram)
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []  # (acts, indices) whose upsampled values wait
        self.uncounted: list[tuple[np.ndarray, np.ndarray]] = []  # those whose raw values wait
        self.held = self.seen = 0  # bytes in ``pending``; images seen

    def first(self, inputs: np.ndarray) -> None:
        """Set the bins from the data set's first batch (``inputs``); else the first batch seen sets them."""
        self._start(_layer_output(self.model, self.hook, inputs))

    def _start(self, acts: np.ndarray) -> None:
        first = acts.transpose(1, 0, 2, 3).reshape(acts.shape[1], -1)  # (C, B h w)
        self.tail = _Tail(first, 1 + len(self.concepts) * self.n_orders, self.tail_fraction, self.tail_bins)
        self.upsample = _Bilinear(acts.shape[2:], self.mask_size)
        self.target = self.top_fraction * (self.n_images * acts.shape[2] * acts.shape[3])  # final count above t
        self.needed = self.tail.needed_bin(self.target)
        self.low = np.full(acts.shape[1], np.inf)
        self.high = np.full(acts.shape[1], -np.inf)

    def update(self, batch: Batch) -> None:
        index = batch.indices
        if index.size and int(index[-1]) >= self.n_images:
            raise KernelscopeError(f"masks: there are more images than the {self.n_images} masks")
        acts = _layer_output(self.model, self.hook, batch.inputs)  # (B, C, h, w)
        if np.may_share_memory(acts, batch.inputs):  # (a layer that passes its input on: the stream may reuse it)
            acts = acts.copy()
        if self.tail is None:
            self._start(acts)
        self.low = np.minimum(self.low, acts.min(axis=(0, 2, 3)))
        self.high = np.maximum(self.high, acts.max(axis=(0, 2, 3)))
        # raw values are counted _GROUP images at a time; upsampled values wait longer (up to
        # _DEFER_BYTES of batches): by then the level has risen and fewer of them count
        self.pending.append((acts, index))
        self.uncounted.append((acts, index))
        self.held += acts.nbytes
        self.seen += len(index)
        if sum(len(i) for _, i in self.uncounted) >= _GROUP or self.held >= _DEFER_BYTES:
            self._count_raw()
        if self.held >= _DEFER_BYTES:
            self._count_up()

    def _count_raw(self) -> None:
        """Count the raw values of the batches not counted yet, above the level the counts so far allow."""
        if self.uncounted:
            level = self.tail.level(self.needed)  # bins below the needed one are never read
            for acts, index in self.uncounted:
                self.tail.add_raw(acts, level)
                for k, concept in enumerate(self.concepts):
                    self.mask_total[k] += np.count_nonzero(self.masks[concept][index])
            self.needed = self.tail.needed_bin(self.target)  # (C,)
            self.uncounted.clear()

    def _count_up(self) -> None:
        """Count the upsampled values of the pending batches, above the level the raw counts allow.

        The candidate cells are found for as many images at a time as should give about half of
        ``_CHUNK_CELLS`` (judged from the share of raw values above the level: a source above it
        makes at most 4 candidate cells), gathered up to ``_CHUNK_CELLS``, then evaluated in
        bounded pieces: memory stays bounded, whatever the level."""
        batches = list(self.pending)
        self.pending.clear()
        self.held = 0
        if not batches:
            return
        tail, upsample = self.tail, self.upsample
        level = tail.level(self.needed)
        screen = _Bilinear.screen(level)
        hot = float(tail.share_from(self.needed).sum()) * upsample.in_size[0] * upsample.in_size[1]  # per image
        images = max(1, int(_CHUNK_CELLS / (2 * 4 * hot + 1)))
        parts: list[tuple[np.ndarray, ...]] = []  # candidate cells gathered: cell, channel, image, corners
        for acts, index, final in _groups(batches, images):
            cell, channel, image, corners = upsample.candidates(acts, screen)
            parts.append((cell, channel, np.take(index, image), corners))  # global image indices
            del acts, cell, channel, image, corners  # (a joined group and its cells: not held while counting)
            if final or sum(part[0].size for part in parts) >= _CHUNK_CELLS:
                _count_up(tail, upsample, *(np.concatenate(v) for v in zip(*parts, strict=True)), level,
                          self.pairing)
                parts = []

    def flush(self) -> None:
        """Count everything that waits (before a state is read; no count that is read changes)."""
        if self.tail is not None:
            self._count_raw()
            self._count_up()

    def state(self) -> dict[str, Any]:
        self.flush()
        if self.tail is None:
            return {"seen": self.seen}
        t = self.tail
        return {"seen": self.seen, "floor": t.floor, "edges": t.edges, "top": t.top, "raw": t.raw, "up": t.up,
                "total": t.total, "in_size": list(self.upsample.in_size), "mask_total": self.mask_total,
                "low": self.low, "high": self.high, "target": self.target}

    def load(self, state: dict[str, Any]) -> None:
        self.pending.clear()
        self.uncounted.clear()
        self.held, self.seen = 0, int(state["seen"])
        if "floor" not in state:
            self.tail = None
            self.mask_total = np.zeros((len(self.concepts), self.n_orders))
            return
        tail = _Tail.__new__(_Tail)
        tail.floor, tail.edges, tail.top = (np.array(state[k], dtype=np.float64) for k in ("floor", "edges", "top"))
        tail.raw, tail.up, tail.total = (np.array(state[k], dtype=np.int64) for k in ("raw", "up", "total"))
        self.tail = tail
        self.upsample = _Bilinear(tuple(state["in_size"]), self.mask_size)
        self.mask_total = np.array(state["mask_total"], dtype=np.float64)
        self.low, self.high = np.array(state["low"]), np.array(state["high"])
        self.target = float(state["target"])
        self.needed = tail.needed_bin(self.target)

    #: State entries that :func:`~kernelscope.analysis.passes.run_pass` adds up with ``all_reduce`` before the
    #: gather (the large count arrays: one copy gathered, not one per rank).
    summed = ("raw", "up")

    def merge(self, states: list[dict[str, Any]]) -> None:
        held = [s for s in states if "floor" in s]
        seen = sum(int(s["seen"]) for s in states)
        if not held:
            self.load({"seen": seen})
            return
        for s in held[1:]:
            if not (np.array_equal(s["floor"], held[0]["floor"]) and np.array_equal(s["edges"], held[0]["edges"])):
                raise KernelscopeError("dissect: the ranks' bins differ (the first batch gave other activations "
                                       "on another rank); run on one device type")
        merged = dict(held[0], seen=seen)
        for key in ("raw", "up", "total", "mask_total"):
            merged[key] = sum(np.asarray(s[key]) for s in held if key in s)  # ("raw", "up": summed already)
        merged["top"] = np.max([s["top"] for s in held], axis=0)
        merged["low"] = np.min([s["low"] for s in held], axis=0)
        merged["high"] = np.max([s["high"] for s in held], axis=0)
        self.load(merged)

    def finish(self, images: Any, *, context: Context | None = None, batch_size: int = 64, workers: int = 0,
               report: PassReport | None = None) -> dict[str, Any]:
        """The thresholds and IoUs from the merged counts (the fallback's two passes if the threshold lies
        below the floor)."""
        self.flush()
        if self.tail is None:
            raise KernelscopeError("the dataset has no images (0 given); give at least one image")
        n_used = report.n_used if report is not None else self.seen
        given = report.n_images if report is not None else n_used
        if given != self.n_images:
            raise KernelscopeError(f"masks: there are {self.n_images} masks but {given} images")
        concepts, n_orders = self.concepts, self.n_orders
        found = self.tail.threshold(self.top_fraction)
        if found is None:  # below the floor: a histogram over the known range, then an exact count at it
            passes = 3
            hist = _RangeHistogram(self.model, self.hook, self.low, self.high, self.n_bins)
            run_pass({"hist": hist}, images, context=context, batch_size=batch_size, workers=workers,
                     name=f"dissect-{self.layer}-histogram", desc=f"dissect {self.hook}: thresholds")
            thresholds = hist.hist.upper_quantile(self.top_fraction)
            count = _CountAt(self.model, self.hook, self.masks, thresholds, self.perms)
            run_pass({"count": count}, images, context=context, batch_size=batch_size, workers=workers,
                     name=f"dissect-{self.layer}-count", desc=f"dissect {self.hook}: exact pass")
            fired, intersect = count.fired, count.intersect
        else:
            passes = 1
            thresholds, bins, share = found
            counts = self.tail.above(bins, share)  # (1 + K * orders, C)
            fired = counts[0]
            intersect = counts[1:].reshape(len(concepts), n_orders, -1)
        pixels = self.mask_size[0] * self.mask_size[1]
        total_pixels = float(n_used * pixels)
        mask_total = self.mask_total
        out: dict[str, Any] = {"threshold": thresholds, "fire_fraction": fired / total_pixels, "concepts": {},
                               "passes": passes, "at": self.at, "read": self.read, "n_images": n_used}
        if report is not None:
            out["data"] = report.to_dict()
        for k, concept in enumerate(concepts):
            union = fired[None] + mask_total[k][:, None] - intersect[k]  # (1 + P, C)
            iou = np.divide(intersect[k], union, out=np.zeros_like(union), where=union > 0)
            coverage = float(mask_total[k, 0] / total_pixels)
            null = iou[1:] if self.n_permutations else np.full((1, iou.shape[1]), np.nan)
            out["concepts"][concept] = {
                "iou": iou[0], "coverage": coverage, "chance": chance_iou(fired / total_pixels, coverage),
                "null_mean": null.mean(axis=0), "null_p95": np.quantile(null, 0.95, axis=0),
            }
        return out


class _RangeHistogram:
    """A reducer: per-channel histograms over a range known before the pass (so merging is a sum)."""

    def __init__(self, model: nn.Module, layer: str, low: np.ndarray, high: np.ndarray, n_bins: int):
        self.model, self.layer = model, layer
        self.hist = StreamingHistogram.over(low, high, n_bins)

    def update(self, batch: Batch) -> None:
        acts = _layer_output(self.model, self.layer, batch.inputs)  # (B, C, h, w)
        self.hist.add(acts.transpose(1, 0, 2, 3).reshape(acts.shape[1], -1))

    def state(self) -> dict[str, Any]:
        return {"counts": self.hist.counts, "vmax": self.hist.vmax}

    def load(self, state: dict[str, Any]) -> None:
        self.hist.counts, self.hist.vmax = np.array(state["counts"]), np.array(state["vmax"])

    def merge(self, states: list[dict[str, Any]]) -> None:
        self.load({"counts": sum(s["counts"] for s in states), "vmax": np.max([s["vmax"] for s in states], axis=0)})


class _CountAt:
    """A reducer: exact counts of fired pixels and intersections at known thresholds (the fallback)."""

    def __init__(self, model: nn.Module, layer: str, masks: dict[str, Any], thresholds: np.ndarray,
                 perms: Permutations):
        self.model, self.layer, self.masks = model, layer, masks
        self.concepts = list(masks)
        self.mask_size = tuple(masks[self.concepts[0]].shape[1:])
        self.n_orders = 1 + perms.count
        self.channels = thresholds.shape[0]
        self.fired = np.zeros(self.channels)
        self.intersect = np.zeros((len(self.concepts), self.n_orders, self.channels))
        self.level = thresholds.astype(np.float32).astype(np.float64)  # fire: up > t, compared in float32
        self.pairing = _Pairing(masks, perms)
        self.upsample: _Bilinear | None = None

    def update(self, batch: Batch) -> None:
        acts = _layer_output(self.model, self.layer, batch.inputs)  # (B, C, h, w)
        if self.upsample is None:
            self.upsample = _Bilinear(acts.shape[2:], self.mask_size)
        channel, image, pixel, _ = self.upsample.above(acts, self.level)  # the fired pixels, (E,) each
        channels, n_orders = self.channels, self.n_orders
        self.fired += np.bincount(channel, minlength=channels)
        for k, concept in enumerate(self.concepts):
            inside = (self.pairing.inside(concept, np.take(batch.indices, image), pixel) if pixel.size
                      else np.zeros((n_orders, 0), bool))
            order, which = np.divmod(np.flatnonzero(inside), channel.size)
            counts = np.bincount(order * channels + channel[which], minlength=n_orders * channels)
            self.intersect[k] += counts.reshape(n_orders, channels)  # (1 + P, C)

    def state(self) -> dict[str, Any]:
        return {"fired": self.fired, "intersect": self.intersect}

    def load(self, state: dict[str, Any]) -> None:
        self.fired, self.intersect = np.array(state["fired"]), np.array(state["intersect"])

    def merge(self, states: list[dict[str, Any]]) -> None:
        self.load({"fired": sum(s["fired"] for s in states), "intersect": sum(s["intersect"] for s in states)})


def _groups(batches: list[tuple[np.ndarray, np.ndarray]], size: int) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """``batches`` (acts (B, C, h, w), indices (B,)) cut and joined into groups of ``size`` images (the
    last may be smaller), one at a time, each with whether it is the last."""
    group: list[np.ndarray] = []
    index: list[np.ndarray] = []
    held = 0
    for i, (acts, where) in enumerate(batches):
        for start in range(0, len(acts), size):
            part = acts[start : start + size]
            group.append(part)
            index.append(where[start : start + size])
            held += len(part)
            last = i == len(batches) - 1 and start + size >= len(acts)
            if held >= size or last:
                yield ((np.concatenate(group) if len(group) > 1 else group[0]), np.concatenate(index), last)
                group, index, held = [], [], 0


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


@dataclass(repr=False)
class DissectResult(Displayed):
    """Network Dissection of one layer, trained network and its initialisation control.

    ``layer`` is the name the caller gave; ``at`` and ``read`` say where it was read
    (:func:`kernelscope.analysis.hooks.read_point`). In a notebook: per concept the detectors
    (IoU > 0.04, and gated on the permutation null) beside the initialisation control, and one
    row per concept and channel.
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
    data: dict[str, Any] | None = None  # what the pass read (images used, skipped, processes)

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

    def _display_summary(self) -> Summary:
        counts, init = self.detector_counts(), self.detector_counts("init") if self.init is not None else None
        items: list[tuple[str, Any]] = []
        for k in self.concepts:
            best = float(np.max(self.trained["concepts"][k]["iou"]))
            items.append((f"{k}: detectors (IoU > {self.iou_threshold:g}) / gated", f"{counts[k]['iou']} / "
                          f"{counts[k]['gated']}" + (f" (init {init[k]['iou']} / {init[k]['gated']})" if init else "")))
            items.append((f"{k}: best IoU", best))
        channels = len(self.trained["threshold"])
        notes = [f"{self.data['n_skipped']} unreadable image(s) skipped"] if self.data and self.data["n_skipped"] else []
        return Summary(f"dissection of {self.read or self.layer}: {channels} channels x {len(self.concepts)} "
                       f"concept(s) over {self.n_images} images, {self.n_permutations} permutations", items,
                       self.rows(), notes)

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
            **({"data": self.data} if self.data is not None else {}),
            "channels": self.rows(),
        }


def dissect(model: nn.Module, layer: str, images: Any, masks: dict[str, Any], *,
            init_model: nn.Module | None = None, n_permutations: int = 20, seed: int = 0,
            batch_size: int = 64, iou_threshold: float = DETECTOR_IOU, top_fraction: float = TOP_FRACTION,
            mask_counts: dict[str, Any] | None = None, at: str = "activation", context: Context | None = None,
            workers: int = 0, checkpoint: Checkpoint | None = None) -> DissectResult:
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
    context, workers, checkpoint
        Sharding over ``torchrun`` ranks, folder workers, checkpoints
        (:func:`kernelscope.analysis.passes.run_pass`); both models count in one read of the images.

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
    models = {"trained": model} if init_model is None else {"trained": model, "init": init_model}
    options = dict(top_fraction=top_fraction, n_permutations=n_permutations, seed=seed, at=at)
    found = _dissect_models(models, layer, images, masks, options, context=context, batch_size=batch_size,
                            workers=workers, checkpoint=checkpoint)
    trained = found["trained"]
    return DissectResult(layer, list(masks), trained, found.get("init"), trained["n_images"], n_permutations,
                         iou_threshold, top_fraction, mask_counts, at=at, read=trained["read"],
                         data=trained.get("data"))


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
