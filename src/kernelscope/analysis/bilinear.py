"""Bilinear upsampling as data, and a sparse upsampler that computes only the values above a level.

:func:`bilinear_axis` gives the sources and float32 weights of ``F.interpolate``'s bilinear
resizing (``align_corners=False``) along one axis. :class:`_Bilinear` uses them to upsample a
layer's maps to the mask size computing only the output pixels that can exceed a per-channel
level: a bilinear value is a convex combination of its four sources, so only the cells of the
output grid with a source near or above the level are evaluated, with torch's float32
arithmetic (the values equal ``F.interpolate``'s bit for bit where torch runs its vectorised
kernel). Network Dissection (:mod:`kernelscope.analysis.dissect`) counts with it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.analysis.sketches import _float32_below

__all__ = ["bilinear_axis"]


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
