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

__all__ = ["training_curves", "kernel_grid", "kernel_evolution", "feature_map_grid", "kernel_drift"]


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
        Multi-channel kernels are shown as their mean over input channels.
    limit : float, optional
        The symmetric colour limit; pass the same one to compare two grids.

    Examples
    --------
    >>> fig = kernel_grid(np.random.default_rng(0).normal(size=(8, 1, 5, 5)), title="init")
    >>> len(fig.axes)
    9
    """
    shown = _display_kernels(kernels)[:max_kernels]
    n = len(shown)
    columns = columns or int(np.ceil(np.sqrt(n * 2)))
    columns = max(1, min(columns, n))
    rows = int(np.ceil(n / columns))
    limit = symmetric_limit([shown]) if limit is None else limit
    fig = new_figure(figsize=(0.8 * columns + 0.9, 0.8 * rows + 0.5))
    axes = fig.subplots(rows, columns, squeeze=False)
    image = None
    for index, ax in enumerate(axes.flat):
        if index < n:
            image = imshow_signed(ax, shown[index], limit=limit)
            ax.set_title(str(index), fontsize=7, pad=1)
        else:
            ax.set_axis_off()
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, pad=0.02)
    if title:
        fig.suptitle(title, fontsize=10)
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
    >>> len(fig.axes) >= 7
    True
    """
    epochs = sorted(kernels_by_epoch)
    if len(epochs) > max_epochs:
        picks = np.unique(np.linspace(0, len(epochs) - 1, max_epochs).round().astype(int))
        shown_epochs = [epochs[i] for i in picks]
    else:
        shown_epochs = epochs
    shown = {e: _display_kernels(kernels_by_epoch[e]) for e in shown_epochs}
    n_kernels = len(shown[shown_epochs[0]])
    channels = list(channels) if channels is not None else list(range(min(n_kernels, 6)))
    fig = new_figure(figsize=(0.75 * len(shown_epochs) + 4.2, 0.75 * len(channels) + 0.8))
    grid = fig.add_gridspec(len(channels), len(shown_epochs) + 1,
                            width_ratios=[1] * len(shown_epochs) + [4.5])
    for row, channel in enumerate(channels):
        limit = symmetric_limit([shown[e][channel] for e in shown_epochs])
        for col, epoch in enumerate(shown_epochs):
            ax = fig.add_subplot(grid[row, col])
            imshow_signed(ax, shown[epoch][channel], limit=limit)
            if row == 0:
                ax.set_title(f"ep {epoch}", fontsize=7, pad=1)
            if col == 0:
                ax.set_ylabel(f"#{channel}", fontsize=7)
    drift = kernel_drift(kernels_by_epoch)
    from matplotlib.ticker import MaxNLocator

    ax = fig.add_subplot(grid[:, -1])
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
    >>> len(fig.axes)
    6
    """
    raw = np.asarray(raw, dtype=np.float64)
    if raw.ndim == 3:
        raw = raw[0] if raw.shape[0] == 1 else np.moveaxis(raw[:3], 0, -1)
    layers = list(maps)
    columns = min(max_channels, max(np.asarray(maps[name]).shape[0] for name in layers))
    fig = new_figure(figsize=(0.85 * (columns + 1) + 0.8, 0.95 * len(layers) + 0.5))
    axes = fig.subplots(len(layers), columns + 1, squeeze=False)
    for row, name in enumerate(layers):
        layer_maps = np.asarray(maps[name], dtype=np.float64)[:columns]
        limit = symmetric_limit([layer_maps])
        ax = axes[row, 0]
        if row == 0:
            imshow_unsigned(ax, raw, vmin=0, vmax=1)
            ax.set_title("input", fontsize=7, pad=1)
        else:
            ax.set_axis_off()
        image = None
        for col in range(columns):
            ax = axes[row, col + 1]
            if col < len(layer_maps):
                image = imshow_signed(ax, layer_maps[col], limit=limit)
                if col == 0:
                    ax.set_ylabel(name, fontsize=7)
                ax.set_title(str(col), fontsize=6, pad=1)
            else:
                ax.set_axis_off()
        if image is not None:
            fig.colorbar(image, ax=axes[row, 1:], shrink=0.9, pad=0.01, aspect=10)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
