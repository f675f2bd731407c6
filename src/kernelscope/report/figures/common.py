"""What every figure shares: an honest colour scale and safe saving.

Honest colour scales: a signed map (a kernel, an edge response) is drawn with a
diverging colour map centred on zero, with limits symmetric about zero and shared
by every panel that is compared; an unsigned map (an image, a magnitude) uses a
sequential map from its own minimum to maximum.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = ["new_figure", "symmetric_limit", "imshow_signed", "imshow_unsigned", "save_figure", "figure_png_bytes",
           "mosaic", "label_tiles"]

SIGNED_CMAP = "RdBu_r"
UNSIGNED_CMAP = "gray"


def new_figure(*args, **kwargs):
    """A matplotlib Figure that is not registered with pyplot (no GUI, no leaks)."""
    from matplotlib.figure import Figure

    kwargs.setdefault("layout", "constrained")
    return Figure(*args, **kwargs)


def symmetric_limit(arrays: Iterable[np.ndarray]) -> float:
    """The largest absolute finite value over ``arrays`` (1.0 when all are zero).

    Examples
    --------
    >>> symmetric_limit([np.array([-3.0, 1.0]), np.array([2.0])])
    3.0
    """
    limit = 0.0
    for array in arrays:
        array = np.asarray(array, dtype=float)
        finite = array[np.isfinite(array)]
        if finite.size:
            limit = max(limit, float(np.abs(finite).max()))
    return limit if limit > 0 else 1.0


def imshow_signed(ax, array: np.ndarray, limit: float | None = None, **kwargs):
    """Draw a signed map diverging around zero, limits ``[-limit, limit]``."""
    limit = symmetric_limit([array]) if limit is None else limit
    kwargs.setdefault("interpolation", "nearest")
    image = ax.imshow(array, cmap=SIGNED_CMAP, vmin=-limit, vmax=limit, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def imshow_unsigned(ax, array: np.ndarray, vmin: float | None = None, vmax: float | None = None, **kwargs):
    """Draw an unsigned image (grey, or RGB when the last axis has 3 channels)."""
    kwargs.setdefault("interpolation", "nearest")
    array = np.asarray(array)
    if array.ndim == 3:
        image = ax.imshow(np.clip(array, 0, 1), **kwargs)
    else:
        image = ax.imshow(array, cmap=kwargs.pop("cmap", UNSIGNED_CMAP), vmin=vmin, vmax=vmax, **kwargs)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def mosaic(tiles: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """Tile ``(n, h, w)`` maps into one ``(rows*(h+pad)-pad, columns*(w+pad)-pad)`` array, NaN between tiles.

    One image per grid instead of one axes per tile: drawing a 64-kernel layer takes
    a tenth of the time.

    Examples
    --------
    >>> mosaic(np.ones((3, 2, 2)), columns=2).shape
    (5, 5)
    >>> int(np.isnan(mosaic(np.ones((3, 2, 2)), columns=2)).sum())
    13
    """
    tiles = np.asarray(tiles, dtype=np.float64)
    n, h, w = tiles.shape
    rows = int(np.ceil(n / columns))
    out = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad), np.nan)
    for index in range(n):
        r, c = divmod(index, columns)
        out[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = tiles[index]
    return out


def label_tiles(ax, n: int, columns: int, h: int, w: int, pad: int = 1, labels=None, fontsize: int = 6) -> None:
    """Write a label (default: the index) above each tile of a :func:`mosaic` drawn on ``ax``."""
    for index in range(n):
        r, c = divmod(index, columns)
        text = str(index) if labels is None else labels[index]
        ax.text(c * (w + pad) + w / 2 - 0.5, r * (h + pad) - 0.6, text, ha="center", va="bottom",
                fontsize=fontsize)


def figure_png_bytes(fig, dpi: int = 100) -> bytes:
    """Render ``fig`` to PNG bytes (for embedding in the HTML report)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` atomically: a failure never leaves a half-written figure."""
    from kernelscope._io import atomic_write

    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    return atomic_write(path, lambda handle: fig.savefig(handle, format=fmt, dpi=dpi))
