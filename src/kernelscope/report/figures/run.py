"""Figures of a recorded run over time: training curves and kernel evolution.

Each function takes arrays (or the manifest's metrics) and returns a matplotlib
Figure; nothing is drawn on screen. Kernels are signed, so they are drawn diverging
around zero with one symmetric limit shared by every panel that is compared (see
:mod:`kernelscope.report.figures.common`). A layer's kernels at one epoch are drawn by
:func:`kernelscope.report.figures.kernels.draw_kernel_grid`, an image's feature maps by
:func:`kernelscope.report.figures.channels.feature_maps_figure`, kernels beside their best
classical match by :func:`kernelscope.report.figures.atlas.match_grid_figure`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kernelscope.report.figures.common import (
    imshow_signed,
    label_tiles,
    mosaic,
    new_figure,
    symmetric_limit,
)

__all__ = ["training_curves", "kernel_evolution", "kernel_drift"]


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
            label_tiles(ax, len(shown_epochs), len(shown_epochs), kh, kw,
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
