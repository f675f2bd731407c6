"""TensorBoard: a training callback that also writes each epoch as TensorBoard event files.

``kernelscope train --tensorboard DIR`` (``TrainConfig(tensorboard=DIR)``) adds a
:class:`TensorBoardWriter` after the recorder and the checkpointer, so an epoch reaches
TensorBoard only once the run directory has committed it. The run directory stays the
record: these files are a view of it for people who watch training in TensorBoard
(``tensorboard --logdir DIR``; kernelscope serves nothing).

Per epoch (``global_step`` = the epoch, 0 = the initialisation):

- scalars: the manifest's metrics under TensorBoard-style tags (:data:`SCALAR_TAGS`:
  ``loss/train``, ``loss/test``, ``accuracy/train``, ``accuracy/test``, ``time/epoch_seconds``);
- ``kernels/<layer>``: the first conv layer's kernels as one image (:func:`kernel_grid`: one
  symmetric limit over the layer, zero at mid-grey, three-channel kernels in colour);
- ``featuremaps/<layer>``: the probe images' maps of every conv layer
  (:func:`feature_map_grid`: a row per probe image, a column per channel, each map
  stretched to its own range);
- ``weights/<layer>``: a histogram of each conv layer's kernel values.

Each epoch is written by a writer opened and closed for it (one small event file per
epoch): nothing stays open when training fails, and what is on disk is complete.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["TensorBoardWriter", "kernel_grid", "feature_map_grid", "SCALAR_TAGS"]

#: The manifest's metric name -> its TensorBoard tag (``loss/...`` and ``accuracy/...`` share a chart).
SCALAR_TAGS = {
    "train_loss": "loss/train",
    "test_loss": "loss/test",
    "train_acc": "accuracy/train",
    "test_acc": "accuracy/test",
    "seconds": "time/epoch_seconds",
}


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """``values`` in [0, 1] -> uint8 0..255, rounded."""
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def _tile(panels: np.ndarray, ncols: int, gap_value: float) -> np.ndarray:
    """``(N, h, w[, 3])`` panels in [0, 1] -> one ``(H, W[, 3])`` image, ``ncols`` per row, 1-px gaps."""
    n, h, w = panels.shape[:3]
    nrows = -(-n // ncols)
    shape = (nrows * (h + 1) - 1, ncols * (w + 1) - 1, *panels.shape[3:])
    image = np.full(shape, gap_value, dtype=np.float64)
    for i, panel in enumerate(panels):
        r, c = divmod(i, ncols)
        image[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = panel
    return image


def kernel_grid(kernels: np.ndarray, *, ncols: int = 8, scale: int | None = None) -> np.ndarray:
    """One layer's kernels as one uint8 image: a tile per kernel, zero at mid-grey.

    Parameters
    ----------
    kernels : ndarray of shape (O, C, kh, kw)
        A conv layer's weights. ``C == 3`` is drawn in colour; any other ``C`` as the
        mean over input channels.
    ncols : int
        Tiles per row.
    scale : int, optional
        Each kernel cell becomes ``scale x scale`` pixels (default: tiles about 28 px wide,
        so TensorBoard shows 3x3 and 7x7 kernels at a readable size).

    Returns
    -------
    ndarray of shape (H, W) or (H, W, 3), dtype uint8
        Values map through one symmetric limit ``L`` = the largest absolute weight of the
        layer: ``-L`` -> 0, ``0`` -> 128, ``+L`` -> 255, so tiles compare within an epoch.
        Tiles are separated by 1-px white lines.

    Examples
    --------
    >>> k = np.zeros((2, 1, 2, 2), dtype=np.float32)
    >>> k[0, 0, 0, 0], k[1, 0, 1, 1] = 1.0, -0.5
    >>> kernel_grid(k, scale=1)
    array([[255, 128, 255, 128, 128],
           [128, 128, 255, 128,  64]], dtype=uint8)
    """
    kernels = np.asarray(kernels, dtype=np.float64)
    if kernels.ndim != 4 or 0 in kernels.shape:
        raise KernelscopeError(f"kernel_grid: kernels must have shape (O, C, kh, kw), got {kernels.shape}")
    colour = kernels.shape[1] == 3
    panels = np.moveaxis(kernels, 1, -1) if colour else kernels.mean(axis=1)  # (O, kh, kw[, 3])
    limit = float(np.abs(panels).max()) or 1.0
    panels = 0.5 + 0.5 * panels / limit  # [-L, L] -> [0, 1]
    if scale is None:
        scale = max(1, 28 // max(panels.shape[1:3]))
    panels = panels.repeat(scale, axis=1).repeat(scale, axis=2)  # (O, kh*s, kw*s[, 3])
    return _to_uint8(_tile(panels, min(ncols, len(panels)), 1.0))


def feature_map_grid(maps: np.ndarray, *, max_images: int = 4, max_channels: int = 16) -> np.ndarray:
    """Probe images' feature maps as one uint8 image: a row per image, a column per channel.

    Parameters
    ----------
    maps : ndarray of shape (P, O, H, W)
        One conv layer's output for the probe images.
    max_images, max_channels : int
        Draw the first ``max_images`` images and the first ``max_channels`` channels.

    Returns
    -------
    ndarray of shape (rows * (H + 1) - 1, cols * (W + 1) - 1), dtype uint8
        Each map stretched from its own minimum (0) to its own maximum (255); a constant map
        is mid-grey. White 1-px lines between maps.

    Examples
    --------
    >>> m = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    >>> feature_map_grid(m)
    array([[  0,  85, 255,   0,  85],
           [170, 255, 255, 170, 255]], dtype=uint8)
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4 or 0 in maps.shape:
        raise KernelscopeError(f"feature_map_grid: maps must have shape (P, O, H, W), got {maps.shape}")
    maps = maps[:max_images, :max_channels]  # (p, o, H, W)
    p, o = maps.shape[:2]
    low = maps.min(axis=(2, 3), keepdims=True)
    span = maps.max(axis=(2, 3), keepdims=True) - low
    stretched = np.where(span > 0, (maps - low) / np.where(span > 0, span, 1.0), 0.5)  # (p, o, H, W)
    return _to_uint8(_tile(stretched.reshape(p * o, *maps.shape[2:]), o, 1.0))


def _summary_writer() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as error:  # torch's module needs the tensorboard package
        raise KernelscopeError("--tensorboard needs the tensorboard package: pip install tensorboard "
                               f"({error})") from None
    return SummaryWriter


class TensorBoardWriter:
    """Training callback: write scalars, kernel grids and probe feature maps per epoch into ``log_dir``.

    Parameters
    ----------
    log_dir : str or Path
        Where the event files go (``tensorboard --logdir`` this folder or its parent).
    max_images, max_channels : int
        How many probe images and channels each feature-map image shows.

    Notes
    -----
    ``train`` adds it when ``config.tensorboard`` is set::

        train(TrainConfig(epochs=2, tensorboard="runs/tb/mnist"), "runs/mnist")

    Grey images are stored as three equal channels (TensorBoard's image summaries are RGB).
    """

    def __init__(self, log_dir: str | Path, *, max_images: int = 4, max_channels: int = 16) -> None:
        self.log_dir = Path(log_dir)
        self.max_images, self.max_channels = max_images, max_channels
        self._writer_class = _summary_writer()  # fails before training starts when tensorboard is missing
        self.log_dir.mkdir(parents=True, exist_ok=True)

    def on_train_begin(self, state: Any) -> None:
        if state.epoch == 0:  # a fresh run: the initialisation is step 0 (a resumed run has it already)
            self._write(state, 0, config=True)

    def on_epoch_end(self, state: Any) -> None:
        self._write(state, state.epoch)

    def _write(self, state: Any, epoch: int, *, config: bool = False) -> None:
        kernels = state.backend.kernels()  # layer -> (O, C, kh, kw)
        maps = state.backend.feature_maps()  # layer -> (P, O, H', W')
        first = state.conv_layers[0]
        with self._writer_class(log_dir=str(self.log_dir)) as writer:
            if config:
                writer.add_text("config", "```\n" + json.dumps(state.config.to_dict(), indent=1) + "\n```", 0)
            metrics = next((m for m in state.metrics if m.get("epoch") == epoch), None)
            for key, tag in SCALAR_TAGS.items():
                if metrics is not None and key in metrics:
                    writer.add_scalar(tag, float(metrics[key]), epoch)
            writer.add_image(f"kernels/{first}", kernel_grid(kernels[first]), epoch,
                             dataformats="HWC" if kernels[first].shape[1] == 3 else "HW")
            for layer in state.conv_layers:
                writer.add_histogram(f"weights/{layer}", np.asarray(kernels[layer], dtype=np.float64), epoch)
                writer.add_image(f"featuremaps/{layer}",
                                 feature_map_grid(maps[layer], max_images=self.max_images,
                                                  max_channels=self.max_channels), epoch, dataformats="HW")
