"""Figures of a recorded run: training curves, kernel grids, kernel evolution, feature maps.

Each function takes arrays (or the manifest's metrics) and returns a matplotlib
Figure; nothing is drawn on screen. Kernels and feature maps are signed, so they
are drawn diverging around zero with one symmetric limit shared by every panel
that is compared (see :mod:`kernelscope.report.figures.common`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kernelscope.report.figures.common import (
    imshow_signed,
    imshow_unsigned,
    new_figure,
    symmetric_limit,
)

__all__ = ["training_curves", "kernel_grid", "kernel_evolution", "feature_map_grid", "kernel_drift", "match_pairs"]


def mosaic(tiles: np.ndarray, columns: int, pad: int = 1) -> np.ndarray:
    """Tile ``(n, h, w)`` maps into one ``(rows*(h+pad)-pad, columns*(w+pad)-pad)`` array, NaN between tiles.

    One image per grid instead of one axes per tile: drawing stays fast for large layers.

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


def _label_tiles(ax, n: int, columns: int, h: int, w: int, pad: int = 1, labels=None, fontsize: int = 6) -> None:
    for index in range(n):
        r, c = divmod(index, columns)
        text = str(index) if labels is None else labels[index]
        ax.text(c * (w + pad) + w / 2 - 0.5, r * (h + pad) - 0.6, text, ha="center", va="bottom",
                fontsize=fontsize)


def _display_kernels(kernels: np.ndarray) -> np.ndarray:
    """(O, C, kh, kw) -> (O, kh, kw[, 3]): RGB kernels as colour, others as their channel mean."""
    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim == 2:
        kernels = kernels[None, None]
    if kernels.ndim != 4:
        raise ValueError(f"kernels must have shape (O, C, kh, kw) (got {kernels.shape})")
    if kernels.shape[1] == 1:
        return kernels[:, 0]
    return kernels.mean(axis=1)


def kernel_grid(kernels: np.ndarray, *, title: str = "", limit: float | None = None,
                max_kernels: int = 64, columns: int | None = None):
    """Grid of a layer's kernels, diverging colour scale shared by all panels.

    Parameters
    ----------
    kernels : ndarray of shape (O, C, kh, kw)
        Three-channel kernels are drawn as RGB (zero at mid-grey); other multi-channel
        kernels as their mean over input channels.
    limit : float, optional
        The symmetric colour limit; pass the same one to compare two grids.

    Examples
    --------
    >>> fig = kernel_grid(np.random.default_rng(0).normal(size=(8, 1, 5, 5)), title="init")
    >>> len(fig.axes)  # the grid and its colour bar
    2
    >>> fig = kernel_grid(np.random.default_rng(0).normal(size=(4, 3, 5, 5)), title="colour")
    >>> len(fig.axes) >= 4
    True
    """
    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim == 4 and kernels.shape[1] == 3:  # colour first layer: RGB, zero at mid-grey (KERNELS' grid)
        from kernelscope.report.figures.kernels import draw_kernel_grid

        return draw_kernel_grid(kernels[:max_kernels], ncols=columns, annotate=False, suptitle=title or None,
                                limit="shared" if limit is None else limit, panel_size=0.8)
    shown = _display_kernels(kernels)[:max_kernels]
    n, kh, kw = shown.shape
    columns = columns or int(np.ceil(np.sqrt(n * 2)))
    columns = max(1, min(columns, n))
    rows = int(np.ceil(n / columns))
    limit = symmetric_limit([shown]) if limit is None else limit
    fig = new_figure(figsize=(0.75 * columns + 1.1, 0.8 * rows + 0.6))
    ax = fig.add_subplot()
    image = imshow_signed(ax, mosaic(shown, columns), limit=limit)
    _label_tiles(ax, n, columns, kh, kw)
    ax.set_frame_on(False)
    fig.colorbar(image, ax=ax, shrink=0.8, pad=0.02)
    if title:
        ax.set_title(title, fontsize=9, pad=8)
    return fig


def training_curves(metrics: Sequence[Mapping]):
    """Loss and accuracy per epoch (train and test) from the manifest's ``metrics`` list.

    Examples
    --------
    >>> fig = training_curves([{"epoch": 1, "train_loss": 1.0, "test_loss": 1.1, "train_acc": 0.5, "test_acc": 0.4},
    ...                        {"epoch": 2, "train_loss": 0.5, "test_loss": 0.6, "train_acc": 0.8, "test_acc": 0.7}])
    >>> [ax.get_ylabel() for ax in fig.axes]
    ['loss', 'accuracy']
    """
    epochs = [m.get("epoch", i + 1) for i, m in enumerate(metrics)]
    fig = new_figure(figsize=(8, 3))
    ax_loss, ax_acc = fig.subplots(1, 2)
    for key, style in (("train_loss", "-o"), ("test_loss", "--s")):
        values = [m.get(key) for m in metrics]
        if any(v is not None for v in values):
            ax_loss.plot(epochs, [np.nan if v is None else v for v in values], style, ms=3, label=key.split("_")[0])
    for key, style in (("train_acc", "-o"), ("test_acc", "--s")):
        values = [m.get(key) for m in metrics]
        if any(v is not None for v in values):
            ax_acc.plot(epochs, [np.nan if v is None else v for v in values], style, ms=3, label=key.split("_")[0])
    ax_loss.set_ylabel("loss")
    ax_acc.set_ylabel("accuracy")
    from matplotlib.ticker import MaxNLocator

    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    return fig


def kernel_drift(kernels_by_epoch: Mapping[int, np.ndarray]) -> np.ndarray:
    """Relative distance of each kernel from its initial value, per epoch.

    Returns an array of shape (E, O): ``||k_e - k_0|| / ||k_0||`` for the sorted epochs.

    Examples
    --------
    >>> k0 = np.ones((2, 1, 3, 3)); k1 = k0.copy(); k1[1] *= 2
    >>> kernel_drift({0: k0, 1: k1})
    array([[0., 0.],
           [0., 1.]])
    """
    epochs = sorted(kernels_by_epoch)
    first = np.asarray(kernels_by_epoch[epochs[0]], dtype=np.float64)
    base = np.linalg.norm(first.reshape(len(first), -1), axis=1)
    base = np.where(base > 0, base, 1.0)
    rows = []
    for epoch in epochs:
        diff = np.asarray(kernels_by_epoch[epoch], dtype=np.float64) - first
        rows.append(np.linalg.norm(diff.reshape(len(diff), -1), axis=1) / base)
    return np.array(rows)


def kernel_evolution(kernels_by_epoch: Mapping[int, np.ndarray], *, channels: Sequence[int] | None = None,
                     max_epochs: int = 10):
    """A few kernels across epochs (rows = kernels, columns = epochs) and their drift from initialisation.

    Each row shares one colour limit across its epochs, so a kernel that grows is seen to grow.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fig = kernel_evolution({e: rng.normal(size=(4, 1, 5, 5)) for e in range(3)}, channels=[0, 1])
    >>> len(fig.axes)  # one strip per kernel and the drift plot
    3
    """
    from matplotlib.ticker import MaxNLocator

    epochs = sorted(kernels_by_epoch)
    if len(epochs) > max_epochs:
        picks = np.unique(np.linspace(0, len(epochs) - 1, max_epochs).round().astype(int))
        shown_epochs = [epochs[i] for i in picks]
    else:
        shown_epochs = epochs
    shown = {e: _display_kernels(kernels_by_epoch[e]) for e in shown_epochs}
    n_kernels, kh, kw = shown[shown_epochs[0]].shape
    channels = list(channels) if channels is not None else list(range(min(n_kernels, 6)))
    fig = new_figure(figsize=(0.6 * len(shown_epochs) + 4.6, 0.7 * len(channels) + 0.9))
    grid = fig.add_gridspec(len(channels), 2, width_ratios=[0.6 * len(shown_epochs), 4.0])
    for row, channel in enumerate(channels):
        strip = np.stack([shown[e][channel] for e in shown_epochs])
        ax = fig.add_subplot(grid[row, 0])
        imshow_signed(ax, mosaic(strip, len(shown_epochs)), limit=symmetric_limit([strip]))
        ax.set_frame_on(False)
        ax.set_ylabel(f"#{channel}", fontsize=7)
        if row == 0:
            _label_tiles(ax, len(shown_epochs), len(shown_epochs), kh, kw,
                         labels=[f"ep {e}" for e in shown_epochs])
    drift = kernel_drift(kernels_by_epoch)
    ax = fig.add_subplot(grid[:, 1])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.plot(epochs, np.median(drift, axis=1), "-o", ms=3, color="k", label="median")
    ax.fill_between(epochs, drift.min(axis=1), drift.max(axis=1), alpha=0.2, color="tab:blue", label="min-max")
    ax.set_xlabel("epoch")
    ax.set_ylabel("||k - k_init|| / ||k_init||", fontsize=8)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return fig


def feature_map_grid(raw: np.ndarray, maps: Mapping[str, np.ndarray], *, max_channels: int = 16,
                     title: str = ""):
    """One probe image and its maps at every layer (one row per layer, one shared limit per row).

    Parameters
    ----------
    raw : ndarray of shape (C, H, W) or (H, W)
        The image for display, values in [0, 1].
    maps : dict of str to ndarray of shape (O, H', W')
        The image's feature maps per layer.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> fig = feature_map_grid(rng.random((1, 8, 8)), {"conv1": rng.normal(size=(4, 6, 6))})
    >>> len(fig.axes)  # the input, the row of maps, its colour bar
    3
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 3:
        raw = raw[0] if raw.shape[0] == 1 else np.moveaxis(raw[:3], 0, -1)
    layers = list(maps)
    columns = min(max_channels, max(np.asarray(maps[name]).shape[0] for name in layers))
    fig = new_figure(figsize=(0.62 * columns + 2.4, 0.85 * len(layers) + 0.6))
    grid = fig.add_gridspec(len(layers), 2, width_ratios=[1, columns])
    ax = fig.add_subplot(grid[0, 0])
    imshow_unsigned(ax, raw, vmin=0, vmax=1)
    ax.set_title("input", fontsize=7, pad=1)
    for row, name in enumerate(layers):
        layer_maps = np.asarray(maps[name], dtype=np.float64)[:columns]
        n, h, w = layer_maps.shape
        ax = fig.add_subplot(grid[row, 1])
        image = imshow_signed(ax, mosaic(layer_maps, columns), limit=symmetric_limit([layer_maps]))
        ax.set_frame_on(False)
        ax.set_ylabel(name, fontsize=7)
        if row == 0:
            _label_tiles(ax, n, columns, h, w)
        fig.colorbar(image, ax=ax, shrink=0.9, pad=0.01, aspect=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def match_pairs(kernels: np.ndarray, matches: np.ndarray, classes: Sequence[str], scores: Sequence[float],
                names: Sequence[str] | None = None, *, max_kernels: int = 32):
    """Each kernel beside its best classical match (both unit-norm signed maps), with class and score.

    Parameters
    ----------
    kernels : ndarray of shape (O, C, kh, kw)
    matches : ndarray of shape (O, kh, kw)
        The best matching template of each kernel (signed, unit norm).
    classes, scores, names : sequences of length O

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> k = rng.normal(size=(3, 1, 5, 5))
    >>> fig = match_pairs(k, k[:, 0], ["edge-like", "blob", "unexplained"], [0.9, 0.5, 0.3])
    >>> len(fig.axes)
    6
    """
    shown = _display_kernels(kernels)[:max_kernels]
    shown = shown - shown.mean(axis=(-2, -1), keepdims=True)
    norms = np.sqrt((shown.reshape(len(shown), -1) ** 2).sum(axis=1)).reshape(-1, 1, 1)
    shown = shown / np.where(norms > 0, norms, 1.0)
    matches = np.asarray(matches, dtype=np.float64)[: len(shown)]
    n = len(shown)
    pairs_per_row = 4
    rows = int(np.ceil(n / pairs_per_row))
    cols = min(n, pairs_per_row)
    fig = new_figure(figsize=(2.1 * cols + 0.3, 1.25 * rows + 0.3))
    axes = fig.subplots(rows, 2 * cols, squeeze=False)
    for index in range(rows * cols):
        ax_k, ax_m = axes[index // cols, 2 * (index % cols)], axes[index // cols, 2 * (index % cols) + 1]
        if index >= n:
            ax_k.set_axis_off()
            ax_m.set_axis_off()
            continue
        limit = symmetric_limit([shown[index], matches[index]])
        imshow_signed(ax_k, shown[index], limit=limit)
        imshow_signed(ax_m, matches[index], limit=limit)
        ax_k.set_title(f"#{index} {classes[index]}", fontsize=6, pad=1)
        label = f"{names[index]} " if names is not None else ""
        ax_m.set_title(f"{label}{scores[index]:.2f}", fontsize=6, pad=1)
    return fig
