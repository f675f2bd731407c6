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
"""

from __future__ import annotations

from collections.abc import Iterator
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
# Work sizes of the dissection pass (speed against memory; no result depends on them):
_DEFER_BYTES = 16 * 2**20  # layer outputs held while their upsampled values wait for a higher level
_GROUP = 256  # images whose raw values are counted together
_CHUNK_CELLS = 2**14  # candidate cells gathered before they are evaluated (40 bytes each)
_SCREEN_SLOTS = 2**16  # output pixels screened at once (4 bytes each, a few times over)
_PIECE = 2**13  # upsampled values computed exactly and counted at once (~100 bytes each)
_MASK_BLOCK = 64  # images whose paired masks are gathered at once


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

    def __init__(self, n: int, count: int, seed: int = 0):
        self.n, self.count = int(n), int(count)
        self.half = max(1, (max(1, (self.n - 1).bit_length()) + 1) // 2)
        self.keys = np.random.default_rng(seed).integers(0, 2**32, size=(self.count, 4), dtype=np.uint64)

    def _feistel(self, x: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """One pass of the network; ``keys`` (4, ...): a round key per round, broadcast against ``x``.

        The round function keeps the low 32 bits of its products: in uint32 (whenever the
        values fit) they wrap to just those."""
        dtype = np.uint32 if 2 * self.half <= 32 else np.uint64
        half, low, mask = dtype(self.half), dtype((1 << self.half) - 1), dtype(0xFFFFFFFF)
        x = x.astype(dtype)
        left, right = x >> half, x & low
        for key in keys.astype(dtype):
            f = ((right * dtype(0x9E3779B1)) & mask) ^ key  # in uint64: < 2^64, no overflow
            f = ((f ^ (f >> dtype(15))) * dtype(0x85EBCA6B)) & mask
            f ^= f >> dtype(13)
            left, right = right, left ^ (f & low)
        return ((left << half) | right).astype(np.uint64)

    def _walk(self, x: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """The network with cycle walking (re-encrypt until inside ``range(n)``); ``keys`` (4, *x.shape)."""
        y = self._feistel(x, keys)
        outside = y >= self.n
        while outside.any():
            y[outside] = self._feistel(y[outside], keys[:, outside])
            outside = y >= self.n
        return y.astype(np.int64)

    def _check(self, indices: np.ndarray) -> None:
        if indices.size and (indices.min() < 0 or indices.max() >= self.n):
            raise KernelscopeError(f"permutation indices must lie in 0..{self.n - 1}")

    def apply(self, which: int, indices: np.ndarray) -> np.ndarray:
        """``perm_which(indices)``; every index must lie in ``range(n)``."""
        indices = np.asarray(indices)
        self._check(indices)
        x = indices.astype(np.uint64)
        return self._walk(x, np.broadcast_to(self.keys[which].reshape((4,) + (1,) * x.ndim), (4, *x.shape)))

    def rows(self, start: int, length: int) -> np.ndarray:
        """(1 + count, length): the identity, then each permutation, of ``start .. start + length - 1``.

        All permutations are evaluated together (one array of shape (count, length)); the result
        is the same as stacking :meth:`apply` for each.
        """
        index = np.arange(start, start + length)
        self._check(index)
        x = np.broadcast_to(index.astype(np.uint64), (self.count, length))  # (count, length)
        keys = np.broadcast_to(self.keys.T[:, :, None], (4, self.count, length))  # (4, count, length)
        return np.concatenate([index[None], self._walk(x, keys)])


def bilinear_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear resizing along one axis (``align_corners=False``), as data: sources and weights.

    Output ``y`` is ``l0[y] * a[i0[y]] + l1[y] * a[i1[y]]``. The indices and float32 weights are
    those of ``torch.nn.functional.interpolate`` (source ``(y + 0.5) n_in / n_out - 0.5``,
    clamped at 0, its integer part and fraction).

    Returns
    -------
    i0, i1 : ndarray of shape (n_out,), int
    l0, l1 : ndarray of shape (n_out,), float32

    Examples
    --------
    >>> i0, i1, l0, l1 = bilinear_axis(2, 4)
    >>> i0.tolist(), i1.tolist(), l1.tolist()
    ([0, 0, 0, 1], [1, 1, 1, 1], [0.0, 0.25, 0.75, 0.25])
    """
    ratio = np.float32(n_in) / np.float32(n_out)
    centre = np.arange(n_out, dtype=np.float32) + np.float32(0.5)
    real = _fma(np.full(n_out, ratio), centre, np.float32(-0.5))  # torch's compiled code fuses this
    real = np.maximum(real, np.float32(0.0))
    i0 = np.minimum(np.floor(real).astype(np.int64), n_in - 1)
    l1 = np.clip(real - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = i0 + (i0 < n_in - 1)
    return i0, i1, np.float32(1.0) - l1, l1


def _fma(a: Any, b: Any, c: Any) -> np.ndarray:
    """``a * b + c`` of float32 as a fused multiply-add: the product (exact in float64) plus ``c``
    in float64, rounded to float32 (which differs from one rounding only in rare ties)."""
    return (np.asarray(a, np.float64) * np.asarray(b, np.float64) + np.asarray(c, np.float64)).astype(np.float32)


class _Bilinear:
    """Bilinear upsampling from ``in_size`` to ``out_size`` that computes only the values above a level.

    The output grid splits into cells: cell ``(a, b)`` holds the output pixels whose sources
    are rows ``a, a + 1`` and columns ``b, b + 1`` (``i0 == a`` and ``i0 == b``, see
    :func:`bilinear_axis`). Every value of a cell is a convex combination of its four sources,
    so it can exceed a level only in a cell whose largest source does (float rounding allowed
    for). Those cells are evaluated in float32 (a screen with a margin for rounding), and the
    pixels that pass are computed as torch's vectorised float32 CPU kernel does (weights as
    products of float32 factors, fused multiply-adds in its order): where torch runs that kernel
    (outputs of up to 128 rows + columns; the benchmark's layers) the values equal
    ``F.interpolate``'s bit for bit, elsewhere they may differ in the last bit.
    """

    #: relative bound on float32 rounding in a value (a few units in the last place, 2**-24 each)
    _ROUNDING = 1e-6

    def __init__(self, in_size: tuple[int, int], out_size: tuple[int, int]):
        self.in_size, self.out_size = tuple(in_size), tuple(out_size)
        (h, w), (hm, wm) = self.in_size, self.out_size
        # per source row a: its output rows (padded to R) and their weights; NaN on padding, so
        # that no padded slot passes a comparison. The same per source column b (padded to Cc).
        rv, self.row_index, ry0, ry1 = self._cells(h, hm)  # (h, R) each
        cv, self.col_index, cx0, cx1 = self._cells(w, wm)  # (w, Cc) each
        self.ry0, self.ry1 = np.where(rv, ry0, np.nan), np.where(rv, ry1, np.nan)  # float32
        self.cx0, self.cx1 = np.where(cv, cx0, np.nan), np.where(cv, cx1, np.nan)
        self.slots = rv.shape[1] * cv.shape[1]  # padded output pixels per cell
        rows, cols = np.arange(h)[:, None], np.arange(w)[None, :]
        self.has_output = (rv.any(axis=1)[:, None] & cv.any(axis=1)[None, :]).reshape(-1)  # (h * w,)
        self.step_row = np.broadcast_to(np.where(rows < h - 1, w, 0), (h, w)).reshape(-1)  # to source a + 1
        self.step_col = np.broadcast_to(np.where(cols < w - 1, 1, 0), (h, w)).reshape(-1)  # to source b + 1

    @staticmethod
    def _cells(n_in: int, n_out: int):
        """Per source index ``a``: the output indices with ``i0 == a``, padded to the largest
        cell: valid slots, indices, weights l0 and l1 (n_in, size) each."""
        i0, i1, l0, l1 = bilinear_axis(n_in, n_out)
        size = max(1, int(np.bincount(i0, minlength=n_in).max()))
        valid = np.zeros((n_in, size), dtype=bool)
        index = np.zeros((n_in, size), dtype=np.int64)
        w0, w1 = np.zeros((n_in, size), np.float32), np.zeros((n_in, size), np.float32)
        for a in range(n_in):
            members = np.nonzero(i0 == a)[0]
            valid[a, : members.size], index[a, : members.size] = True, members
            w0[a, : members.size], w1[a, : members.size] = l0[members], l1[members]
        return valid, index, w0, w1

    def dense(self, acts: np.ndarray) -> np.ndarray:
        """All of ``up(acts)``: (B, C, h, w) -> (B, C, Hm, Wm), as ``F.interpolate`` (for tests)."""
        channel, image, pixel, values = self.above(acts, np.full(acts.shape[1], -np.inf))
        out = np.full((*acts.shape[:2], self.out_size[0] * self.out_size[1]), np.nan, dtype=np.float32)
        out[image, channel, pixel] = values
        return out.reshape(*acts.shape[:2], *self.out_size)

    def above(self, acts: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Upsampled values strictly above ``level`` (C,) of ``acts`` (B, C, h, w) float32.

        Returns ``(channel, image, pixel, value)``, each (E,), in the order of the images; ``pixel``
        is the flat index into the (Hm, Wm) output.
        """
        level = np.asarray(level, dtype=np.float64)
        cell, channel, image, corners = self.candidates(acts, self.screen(level))
        level = level[channel]
        k, pixel, value = self.exact(cell, corners, level, self.passing(cell, corners, level))
        return channel[k], image[k], pixel, value

    @classmethod
    def screen(cls, level: np.ndarray) -> np.ndarray:
        """(C,) float32: an upsampled value can exceed ``level`` only where one of its sources
        exceeds this (a value exceeds its largest source ``s`` by at most ``eps |s|``)."""
        eps = cls._ROUNDING
        return _float32_below(np.where(level > 0, level / (1 + eps), level / (1 - eps)))

    def candidates(self, acts: np.ndarray, screen: np.ndarray):
        """The cells of ``acts`` (B, C, h, w) with a source above ``screen`` (C,) float32, in the
        order of the images.

        Returns ``cell`` (a * w + b), ``channel``, ``image`` (K,) each and their sources
        ``corners`` (K, 4) float32: rows a, a + 1 times columns b, b + 1.
        """
        batch, channels, h, w = acts.shape
        hot = (acts > screen[None, :, None, None]).reshape(-1)  # (B C h w,)
        # cell (a, b) has sources a, a + 1 and b, b + 1: a candidate when one of them is hot.
        # Shifting the flat array also marks some cells of the last row or column from the next map:
        # extra candidates, rejected when evaluated.
        cells = hot.copy()
        np.logical_or(hot[:-w], hot[w:], out=cells[:-w])
        np.logical_or(cells[:-1], cells[1:], out=hot[:-1])
        cells = hot.reshape(batch * channels, h * w)
        cells &= self.has_output
        flat = np.flatnonzero(cells)  # (K,)
        cell, image = np.divmod(flat, h * w)[::-1]
        image, channel = np.divmod(image, channels)
        down, right = np.take(self.step_row, cell), np.take(self.step_col, cell)
        source = acts.reshape(-1)
        corners = np.stack([np.take(source, i) for i in (flat, flat + right, flat + down, flat + down + right)], 1)
        return cell, channel, image, corners

    def passing(self, cell: np.ndarray, corners: np.ndarray, level: np.ndarray) -> np.ndarray:
        """The output pixels of cells ``cell`` (K,), sources ``corners`` (K, 4), that may exceed
        ``level`` (K,) (each cell's own): flat indices into (K, slots), sorted.

        A screen in plain float32, off from the exact value by a few ulp of the largest source:
        every pixel above the level passes, and a few below it."""
        x00, x01, x10, x11 = corners.T
        largest = np.maximum(np.maximum(np.abs(x00), np.abs(x01)), np.maximum(np.abs(x10), np.abs(x11)))
        margin = _float32_below(level - 2 * self._ROUNDING * largest.astype(np.float64))  # (K,)
        # rows a, a + 1 interpolated along the columns, then along the rows: (Cc, K), then (R, Cc, K)
        # (the cells last: long inner loops)
        row_a, col_b = np.divmod(cell, self.in_size[1])
        lx0, lx1 = np.take(self.cx0.T, col_b, axis=1), np.take(self.cx1.T, col_b, axis=1)  # (Cc, K)
        upper = x00 * lx0 + x01 * lx1
        lower = x10 * lx0 + x11 * lx1
        rough = np.take(self.ry0.T, row_a, axis=1)[:, None, :] * upper[None]
        rough += np.take(self.ry1.T, row_a, axis=1)[:, None, :] * lower[None]  # (R, Cc, K)
        above = rough > margin
        return np.flatnonzero(above.reshape(-1, cell.size).T)  # into (K, R Cc): in the order of the cells

    def exact(self, cell: np.ndarray, corners: np.ndarray, level: np.ndarray, slots: np.ndarray):
        """The upsampled values above ``level`` (K,) among ``slots`` (flat indices into (K, slots),
        from :meth:`passing`), computed as torch's float32 kernel does.

        Returns ``k`` (which cell), ``pixel`` (flat index into the (Hm, Wm) output) and ``value``
        (float32), each (E,), in the order of ``slots``.
        """
        n_rows, n_cols = self.ry0.shape[1], self.cx0.shape[1]
        k, slot = np.divmod(slots, n_rows * n_cols)
        r, c = np.divmod(slot, n_cols)
        row_a, col_b = np.divmod(np.take(cell, k), self.in_size[1])
        ly0, ly1 = (np.take(wy.reshape(-1), row_a * n_rows + r) for wy in (self.ry0, self.ry1))
        lx0, lx1 = (np.take(wx.reshape(-1), col_b * n_cols + c) for wx in (self.cx0, self.cx1))
        x00, x01, x10, x11 = (np.take(x, k) for x in corners.T)
        # corner weights in float32 (as torch), then torch's vectorised kernel:
        # x00 w00 + (x01 w01 + (x11 w11 + x10 w10)), with fused multiply-adds
        value = x10 * (ly1 * lx0)
        value = _fma(x11, ly1 * lx1, value)
        value = _fma(x01, ly0 * lx1, value)
        value = _fma(x00, ly0 * lx0, value)
        keep = np.flatnonzero(value > np.take(level, k))
        k, row_a, col_b, r, c = (np.take(v, keep) for v in (k, row_a, col_b, r, c))
        out_row = np.take(self.row_index.reshape(-1), row_a * n_rows + r)
        pixel = out_row * self.out_size[1] + np.take(self.col_index.reshape(-1), col_b * n_cols + c)
        return k, pixel, np.take(value, keep)


def _float32_below(x: np.ndarray) -> np.ndarray:
    """The largest float32 at or below each float64 ``x``."""
    y = x.astype(np.float32)
    return np.where(y > x, np.nextafter(y, np.float32(-np.inf)), y)


class _Tail:
    """Counts of the values above a per-channel floor, in bins of equal mass (set from a first batch).

    Row 0 of ``up`` counts every upsampled pixel above the floor; the other rows count only the
    pixels inside a (paired) mask. ``raw`` counts the layer's own activations, for the quantile.
    Bin ``j`` of channel ``c`` is ``[edges[c, j], edges[c, j + 1])``; the last bin ends at the
    largest value seen. Equal-mass bins put the resolution where the values are.

    Only the bins from the threshold's bin up are read at the end (:meth:`threshold`,
    :meth:`above`), and the threshold's bin is the highest whose raw counts from it up reach the
    final count above the threshold (``top_fraction`` of all values, known in advance). Counts
    only grow, so once the raw counts from bin ``j`` up reach it, the threshold's bin is ``j`` or
    higher and no bin below ``j`` will be read: :meth:`needed_bin` and :meth:`level` say, per
    channel, below which value nothing needs counting any more. Leaving those values out of
    ``raw`` and ``up`` changes no count that is read.
    """

    def __init__(self, first: np.ndarray, rows: int, fraction: float, n_bins: int):
        channels = first.shape[0]
        self.floor = np.quantile(first, 1.0 - fraction, axis=1)  # (C,)
        self.edges = np.empty((channels, n_bins))
        mass = np.linspace(0, 1, n_bins, endpoint=False)
        flat = np.flatnonzero(first > self.floor[:, None])  # sorted by channel
        above = first.reshape(-1)[flat]
        bounds = np.searchsorted(flat // first.shape[1], np.arange(channels + 1))
        for c in range(channels):
            values = np.sort(above[bounds[c] : bounds[c + 1]])
            self.edges[c] = _sorted_quantiles(values, mass) if values.size else np.full(n_bins, self.floor[c])
            self.edges[c, 0] = self.floor[c]
        self.top = np.full(channels, -np.inf)  # largest value counted (upper edge of the last bin)
        self.raw = np.zeros((channels, n_bins), dtype=np.int64)
        self.up = np.zeros((rows, channels, n_bins), dtype=np.int64)
        self.total = np.zeros(channels, dtype=np.int64)  # every raw value, above the floor or not

    def needed_bin(self, target: np.ndarray | float) -> np.ndarray:
        """(C,) the lowest bin that can still be read for a final count ``target`` above the
        threshold: the highest bin whose raw counts from it up already reach ``target``; -1
        where none does yet (then even the floor may prove too high: the fallback)."""
        below = np.cumsum(self.raw, axis=1) - self.raw  # (C, n_bins): counts in the bins below each
        from_top = self.raw.sum(axis=1, keepdims=True) - below  # non-increasing
        return (from_top >= np.broadcast_to(target, from_top.shape[:1])[:, None]).sum(axis=1) - 1

    def share_from(self, needed: np.ndarray) -> np.ndarray:
        """(C,) the share of the raw values counted so far in the bins from ``needed`` (or 0) up."""
        from_top = np.cumsum(self.raw[:, ::-1], axis=1)[:, ::-1]
        return from_top[np.arange(len(needed)), np.maximum(needed, 0)] / np.maximum(self.total, 1)

    def level(self, needed: np.ndarray) -> np.ndarray:
        """(C,) float64: count only values strictly above it (the floor, or just below the
        lower edge of the needed bin)."""
        level = self.floor.astype(np.float64)
        raised = needed > 0
        level[raised] = np.nextafter(self.edges[raised, needed[raised]], -np.inf)
        return level

    def add_raw(self, acts: np.ndarray, level: np.ndarray | None = None) -> None:
        """Count a batch of the layer's activations ``acts`` (B, C, h, w) above ``level`` (C,)
        (default: the floor)."""
        level = self.floor if level is None else level
        batch, channels = acts.shape[:2]
        per_channel = acts.reshape(batch, channels, -1)  # (B, C, h w)
        self.total += batch * per_channel.shape[2]
        # (a float32 is above a level exactly when it is above the largest float32 at or below it)
        flat = np.flatnonzero(per_channel > _float32_below(np.asarray(level, dtype=np.float64))[None, :, None])
        values, channel = np.take(per_channel, flat), flat // per_channel.shape[2] % channels
        # the largest value matters only above the last edge, and such values are above any level
        np.maximum.at(self.top, channel, values.astype(np.float64))
        self.raw += np.bincount(self.keys(values, channel), minlength=self.raw.size).reshape(self.raw.shape)

    def keys(self, values: np.ndarray, channel: np.ndarray) -> np.ndarray:
        """(E,) the bin of each of ``values`` (E,) in its channel's edges, as ``channel * n_bins + bin``
        (the bin as ``searchsorted(edges[c], value, "right") - 1``, at least 0).

        A binary search for all values at once (the last edge at or below the value), faster than
        ``searchsorted`` channel by channel."""
        v = np.asarray(values, dtype=np.float64)
        edges = self.edges.reshape(-1)
        key = channel * self.edges.shape[1]  # (E,): edge 0 of the channel, the answer if below it
        length = self.edges.shape[1]
        while length > 1:
            half = length // 2
            key += (np.take(edges, key + half) <= v) * half
            length -= half
        return key

    def add_up(self, row: np.ndarray | int, key: np.ndarray) -> None:
        """Count upsampled values, of bins ``key`` (from :meth:`keys`), in rows ``row``."""
        np.add.at(self.up.reshape(-1), row * self.raw.size + key, 1)

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
        channels = np.arange(self.raw.shape[0])
        beyond = np.stack([self.up[:, c, j + 1 :].sum(axis=1) for c, j in enumerate(bins)], axis=1)  # (rows, C)
        return beyond + share * self.up[:, channels, bins]


def _sorted_quantiles(values: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(values, q)`` (method "linear") of ``values`` already sorted: the same numbers,
    by the same arithmetic, without NumPy's selection step (0.5 ms a call for 1024 quantiles)."""
    n = values.size
    virtual = (n - 1) * q  # (Q,)
    previous = np.floor(virtual)
    following = previous + 1
    last = virtual >= n - 1  # at or past the largest value: take it
    previous[last], following[last] = -1, -1
    previous, following = previous.astype(np.intp), following.astype(np.intp)
    gamma = virtual - previous
    a, b = values[previous], values[following]
    diff = b - a
    out = a + diff * gamma
    np.subtract(b, diff * (1 - gamma), out=out, where=gamma >= 0.5)  # as NumPy's _lerp: exact at both ends
    return out


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

    Returns
    -------
    dict
        ``threshold`` (C,), ``fire_fraction`` (C,), ``passes`` (1 or 2) and per concept: ``iou``,
        ``chance``, ``null_mean``, ``null_p95`` (C,) and ``coverage``.
    """
    if not masks:
        raise KernelscopeError("masks: no concept given; give at least one (N, H, W) mask array")
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
        for x in _batches(images, batch_size):
            b = x.shape[0]
            if seen + b > n_images:
                raise KernelscopeError(f"masks: there are more images than the {n_images} masks")
            acts = _layer_output(model, layer, x)  # (B, C, h, w)
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


class _Orders:
    """:meth:`Permutations.rows` for image ranges that move forward, computed ``block`` images at a time."""

    def __init__(self, perms: Permutations, block: int = 1024):
        self.perms, self.block = perms, block
        self.start, self.cached = 0, np.zeros((1 + perms.count, 0), dtype=np.int64)

    def rows(self, start: int, length: int) -> np.ndarray:
        if not (self.start <= start and start + length <= self.start + self.cached.shape[1]):
            self.start = start
            self.cached = self.perms.rows(start, max(length, min(self.block, self.perms.n - start)))
        return self.cached[:, start - self.start : start - self.start + length]


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
        for x in _batches(images, batch_size):
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
