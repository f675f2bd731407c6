"""Streaming sketches of activations: per-channel histograms, the tail above a floor, computed permutations.

What Network Dissection (:mod:`kernelscope.analysis.dissect`) needs to find the top 0.5% of
a layer's activations over a dataset, and to count the values above that threshold under
the true image-mask pairing and under random ones, without holding the dataset:

- :class:`StreamingHistogram`: per-channel histograms whose range grows by merging bins
  pairwise (no count is ever split or guessed); the fallback that always has the threshold.
- :class:`_Tail`: counts above a per-channel floor, in bins of equal mass fixed by a first
  batch; the raw counts so far bound from below the bin that can hold the threshold, so
  values under it need no counting (:meth:`_Tail.level`).
- :func:`_sorted_quantiles`, :func:`_float32_below`: NumPy's quantiles of sorted values by
  the same arithmetic, and the float32 just at or below a float64 (for exact comparisons).
- :class:`Permutations`: seeded random permutations of ``range(n)`` evaluated on demand
  (a Feistel network with cycle walking): memory does not grow with the dataset.

Every one of them gives exactly the numbers of the straightforward computation it replaces
(tests/channels/test_channels_dissect.py compares them for equality).
"""

from __future__ import annotations

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["StreamingHistogram", "Permutations"]


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

    @classmethod
    def over(cls, low: np.ndarray, high: np.ndarray, n_bins: int = 4096) -> StreamingHistogram:
        """Histograms whose bins cover ``[low_c, high_c]`` from the start (a range known before the pass,
        e.g. all-reduced over ranks): values inside never make the bins grow, so two of them over the
        same range merge exactly by adding their counts.

        Examples
        --------
        >>> a, b = (StreamingHistogram.over(np.array([0.0]), np.array([8.0]), 4) for _ in range(2))
        >>> a.add(np.array([[0.0, 3.0]])); b.add(np.array([[8.0]]))
        >>> (a.counts + b.counts).tolist()
        [[1, 1, 0, 1]]
        """
        hist = cls(len(low), n_bins)
        low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
        span = np.maximum.reduce([high - low, 1e-6 * np.maximum(np.abs(high), 1.0), np.full(len(low), 1e-12)])
        hist.lo, hist.width = low.copy(), span * 1.0001 / n_bins  # as the first data of :meth:`add` set them
        return hist

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
