"""How a result object shows itself: a short ``repr`` and, in Jupyter, an HTML summary with its picture.

Every result class (atlas, dissection, shift, top patches, ...) mixes in :class:`Displayed`
and provides two small methods; the mixin builds ``__repr__`` and ``_repr_html_`` from them:

- ``_display_summary()`` returns a :class:`Summary`: a title (what it is: layer, sizes),
  the key numbers as ``(label, value)`` items, optionally a table (a list of row dicts, one
  per channel or unit) and notes.
- ``_display_picture()`` (optional) returns a :class:`Picture`: the main figure as NumPy
  arrays (a stack of kernels, patches or renders), tiled into a grid and embedded as an
  inline PNG (written here with NumPy and zlib: no matplotlib, which lives in ``report``
  above the analyses).

A ``@dataclass`` writes its own ``__repr__`` over the mixin's: declare result dataclasses
with ``@dataclass(repr=False)``. All text in the HTML is escaped.

Examples
--------
>>> import numpy as np
>>> class Toy(Displayed):
...     def _display_summary(self):
...         return Summary("toy of 2 kernels", [("edge fraction", 0.5), ("layer", "conv1")])
...     def _display_picture(self):
...         return Picture(np.eye(3)[None].repeat(2, axis=0), caption="the kernels")
>>> Toy()
<Toy: toy of 2 kernels; edge fraction 0.5, layer conv1>
>>> html = Toy()._repr_html_()
>>> "<img" in html and "0.5" in html
True
"""

from __future__ import annotations

import base64
import html
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["Displayed", "Summary", "Picture", "image_grid", "png_bytes", "format_value", "kernel_tiles"]

#: Table rows shown in the HTML (the rest are counted).
HTML_ROWS = 40
#: Tiles drawn in a picture (the rest are counted in its caption).
MAX_TILES = 256


@dataclass
class Summary:
    """What a result holds, for its repr and its HTML.

    Parameters
    ----------
    title : str
        What it is, with its layer and sizes: ``"kernel atlas of conv1: 16 kernels of 1x5x5"``.
    items : list of (str, object)
        The key numbers, in the order to show them. Values may be numbers, strings, None,
        tuples (an interval), dicts or arrays (shown by shape only).
    table : list of dict, optional
        One row per unit (channel, kernel, seed, ...); columns are the union of the keys.
    notes : list of str, optional
        Caveats, shown under the table.
    brief : int
        How many of the first items the one-line ``repr`` shows (the HTML shows all): put the
        headline numbers first.
    """

    title: str
    items: list[tuple[str, Any]] = field(default_factory=list)
    table: list[dict[str, Any]] | None = None
    notes: list[str] = field(default_factory=list)
    brief: int = 4


@dataclass
class Picture:
    """The main figure of a result as arrays.

    Parameters
    ----------
    images : ndarray of shape (N, H, W) or (N, H, W, 3)
        A stack of tiles (kernels, patches, renders); one image is ``image[None]``.
    caption : str
        One line under the figure.
    signed : bool
        True: each tile is scaled by its largest absolute value, zero is mid-grey (kernels,
        weights). False: each tile is stretched from its minimum to its maximum (images).
    columns : int, optional
        Tiles per row; by default about the square root of their number.
    """

    images: np.ndarray
    caption: str = ""
    signed: bool = True
    columns: int | None = None


class Displayed:
    """Mixin: a short ``__repr__`` and a Jupyter ``_repr_html_`` from ``_display_summary`` (+ picture).

    Subclasses implement ``_display_summary() -> Summary`` and may implement
    ``_display_picture() -> Picture | None``.

    Examples
    --------
    >>> class Count(Displayed):
    ...     def _display_summary(self):
    ...         return Summary("3 detectors", [("gated", 2)], table=[{"unit": 0, "iou": 0.1}])
    >>> repr(Count())
    '<Count: 3 detectors; gated 2; table of 1 row>'
    >>> "<table" in Count()._repr_html_()
    True
    """

    def _display_summary(self) -> Summary:  # pragma: no cover - each class provides its own
        raise NotImplementedError(f"{type(self).__name__} must define _display_summary()")

    def _display_picture(self) -> Picture | None:
        return None

    def __repr__(self) -> str:
        try:
            s = self._display_summary()
        except Exception as error:  # a repr must not raise (debuggers, tracebacks and logs call it)
            return f"<{type(self).__name__} (its summary failed: {type(error).__name__}: {error})>"
        items = ", ".join(f"{k} {format_value(v)}" for k, v in s.items[:s.brief])
        more = len(s.items) - s.brief
        parts = [items + (f", ... ({more} more)" if more > 0 else "")] if s.items[:s.brief] else []
        if s.table:
            parts.append(f"table of {len(s.table)} row{'s' if len(s.table) != 1 else ''}")
        return f"<{type(self).__name__}: {s.title}" + ("; " + "; ".join(parts) if parts else "") + ">"

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        # IPython's plain-text display: the same short repr (a dict subclass would print its items)
        p.text(repr(self))

    def _repr_html_(self) -> str:
        s = self._display_summary()
        esc = html.escape
        out = ['<div class="kernelscope-result">',
               f"<strong>{esc(type(self).__name__)}</strong>: {esc(s.title)}"]
        if s.items:
            out.append('<table class="kernelscope-summary">')
            out += [f"<tr><th style=\"text-align:left\">{esc(str(k))}</th><td>{esc(format_value(v))}</td></tr>"
                    for k, v in s.items]
            out.append("</table>")
        picture = self._display_picture()
        if picture is not None:
            grid, shown = image_grid(picture.images, signed=picture.signed, columns=picture.columns)
            n = len(picture.images)
            caption = picture.caption + (f" (first {shown} of {n})" if shown < n else "")
            uri = "data:image/png;base64," + base64.b64encode(png_bytes(grid)).decode("ascii")
            out.append(f'<figure style="margin:0.5em 0"><img src="{uri}" alt="{esc(caption)}" '
                       f'style="image-rendering:pixelated"/><figcaption>{esc(caption)}</figcaption></figure>')
        if s.table:
            columns: list[str] = []
            for row in s.table:
                columns += [c for c in row if c not in columns]
            out.append('<table class="kernelscope-table"><tr>'
                       + "".join(f"<th>{esc(str(c))}</th>" for c in columns) + "</tr>")
            for row in s.table[:HTML_ROWS]:
                out.append("<tr>" + "".join(f"<td>{esc(format_value(row.get(c)))}</td>" for c in columns)
                           + "</tr>")
            out.append("</table>")
            if len(s.table) > HTML_ROWS:
                out.append(f"<p>... {len(s.table) - HTML_ROWS} more rows (see to_dict())</p>")
        out += [f"<p><em>note:</em> {esc(n)}</p>" for n in s.notes]
        out.append("</div>")
        return "\n".join(out)


def format_value(value: Any) -> str:
    """One value as short text: floats to 3 significant digits, intervals in brackets, arrays by shape.

    Examples
    --------
    >>> format_value(0.87654), format_value((0.8, 0.9)), format_value(None), format_value(float("nan"))
    ('0.877', '[0.8, 0.9]', '-', 'nan')
    >>> format_value(np.zeros((16, 3, 5, 5)))
    'array of shape (16, 3, 5, 5)'
    """
    if value is None:
        return "-"
    if isinstance(value, np.ndarray):
        return f"array of shape {tuple(value.shape)}" if value.ndim else format_value(value.item())
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return "nan" if math.isnan(value) else f"{value:.3g}"
    if isinstance(value, (tuple, list)):
        if len(value) > 6:
            return f"{len(value)} values"
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return ", ".join(f"{k} {format_value(v)}" for k, v in list(value.items())[:6]) + (
            ", ..." if len(value) > 6 else "")
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def kernel_tiles(kernels: np.ndarray) -> np.ndarray:
    """Conv kernels ``(O, C, kh, kw)`` as picture tiles: RGB when ``C == 3``, else one grey profile each.

    With ``C`` other than 1 or 3, each kernel is drawn by its input channel of largest weight norm.

    Examples
    --------
    >>> kernel_tiles(np.zeros((8, 3, 5, 5))).shape, kernel_tiles(np.zeros((8, 1, 5, 5))).shape
    ((8, 5, 5, 3), (8, 5, 5))
    """
    k = np.asarray(kernels, dtype=np.float64)
    if k.ndim != 4:
        raise KernelscopeError(f"kernels must be (O, C, kh, kw); got shape {k.shape}")
    if k.shape[1] == 3:
        return k.transpose(0, 2, 3, 1)  # (O, kh, kw, 3)
    strongest = np.argmax(np.square(k).sum(axis=(2, 3)), axis=1)  # (O,)
    return k[np.arange(k.shape[0]), strongest]  # (O, kh, kw)


def image_grid(images: np.ndarray | Sequence[np.ndarray], *, signed: bool = True,
               columns: int | None = None, min_tile: int = 32, max_width: int = 800) -> tuple[np.ndarray, int]:
    """Tile a stack of images into one uint8 picture, each tile scaled on its own and enlarged.

    Parameters
    ----------
    images : array of shape (N, H, W) or (N, H, W, 3)
        NaN is drawn as zero; one image is ``image[None]``.
    signed : bool
        Zero at mid-grey, scaled by the largest absolute value (kernels); else min-max (images).
    columns : int, optional
    min_tile : int
        Tiles are enlarged by a whole factor (nearest neighbour) to at least this many pixels.
    max_width : int
        ...but the grid stays about this wide.

    Returns
    -------
    grid : ndarray of shape (H', W') or (H', W', 3), dtype uint8
    shown : int
        How many tiles are drawn (at most :data:`MAX_TILES`).

    Examples
    --------
    >>> grid, shown = image_grid(np.stack([np.eye(3), -np.eye(3)]))
    >>> grid.dtype, shown, grid.shape[0] >= 32
    (dtype('uint8'), 2, True)
    """
    a = np.asarray(images, dtype=np.float64)
    if a.ndim not in (3, 4) or (a.ndim == 4 and a.shape[-1] != 3) or a.size == 0:
        raise KernelscopeError(f"images must be a stack (N, H, W) or (N, H, W, 3); got shape {a.shape}")
    a = np.nan_to_num(a[:MAX_TILES], nan=0.0, posinf=0.0, neginf=0.0)
    n, h, w = a.shape[:3]
    axes = tuple(range(1, a.ndim))
    if signed:
        scale = np.abs(a).max(axis=axes, keepdims=True)
        a = 0.5 + 0.5 * a / np.where(scale > 0, scale, 1.0)
    else:
        lo, hi = a.min(axis=axes, keepdims=True), a.max(axis=axes, keepdims=True)
        a = (a - lo) / np.where(hi > lo, hi - lo, 1.0)
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    cols = min(cols, n)
    factor = max(1, math.ceil(min_tile / max(h, w)))
    factor = max(1, min(factor, (max_width // cols - 1) // max(w, 1)))
    a = a.repeat(factor, axis=1).repeat(factor, axis=2)
    th, tw = h * factor, w * factor
    rows = math.ceil(n / cols)
    shape = (rows * (th + 1) + 1, cols * (tw + 1) + 1) + a.shape[3:]
    grid = np.ones(shape)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[1 + r * (th + 1): 1 + r * (th + 1) + th, 1 + c * (tw + 1): 1 + c * (tw + 1) + tw] = a[i]
    return np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8), n


def png_bytes(image: np.ndarray) -> bytes:
    """Encode a uint8 image (H, W) grey or (H, W, 3) RGB as PNG bytes (NumPy and zlib only).

    Examples
    --------
    >>> data = png_bytes(np.zeros((2, 3), dtype=np.uint8))
    >>> data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
    True
    """
    a = np.ascontiguousarray(image, dtype=np.uint8)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise KernelscopeError(f"a PNG image must be (H, W) or (H, W, 3) uint8; got shape {a.shape}")
    h, w = a.shape[:2]
    colour_type = 0 if a.ndim == 2 else 2
    raw = np.concatenate([np.zeros((h, 1), np.uint8), a.reshape(h, -1)], axis=1).tobytes()  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
            + chunk(b"IEND", b""))
