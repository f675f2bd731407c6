"""Top-k patches per channel, in one streaming pass (Zeiler & Fergus, 2014).

For every channel of a layer, the ``k`` images whose spatial maximum of that channel
is largest, each cropped to the receptive field of the maximising position. The pass
keeps only the running top-k (values, positions and the ``k`` crops per channel),
never the activations: memory does not grow with the dataset. The forward pass stops
at the layer (:func:`kernelscope.analysis.hooks.forward_until`).

Ties are broken by the earlier image, so the result does not depend on batch size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._display import Displayed, Picture, Summary
from kernelscope.analysis.hooks import _to_tensor, forward_until, read_point
from kernelscope.analysis.passes import Batch, Checkpoint, PassReport, run_pass
from kernelscope.analysis.receptive import LayerField, receptive_field, unit_field_box
from kernelscope.errors import KernelscopeError

if TYPE_CHECKING:
    from torch import nn

    from kernelscope.train.distributed import Context

__all__ = ["TopPatches", "TopK", "TopPatchesReducer", "top_patches", "crop_field"]


def fit_box(box: tuple[int, int, int, int], height: int, width: int) -> tuple[int, int, int, int]:
    """A receptive-field box cut down to the image where the field is larger than the image.

    Deep layers of real networks see more than the whole input (dlib's face ResNet: 355 px at
    ``layer3`` on a 150 px chip); their crop is then the image itself along that axis, not a
    mostly empty canvas the size of the field. Boxes no larger than the image are unchanged
    (they may still reach past its border; :func:`crop_field` fills that part).

    Examples
    --------
    >>> fit_box((-100, 254, 10, 14), 150, 150)
    (0, 149, 10, 14)
    """
    top, bottom, left, right = box
    if bottom - top + 1 > height:
        top, bottom = 0, height - 1
    if right - left + 1 > width:
        left, right = 0, width - 1
    return top, bottom, left, right


def crop_field(image: np.ndarray, box: tuple[int, int, int, int], fill: float = np.nan) -> np.ndarray:
    """Crop ``image`` ``(C, H, W)`` to the inclusive box ``(top, bottom, left, right)``; outside -> ``fill``.

    Examples
    --------
    >>> crop_field(np.arange(9.0).reshape(1, 3, 3), (-1, 0, 1, 2), fill=-1)
    array([[[-1., -1.],
            [ 1.,  2.]]], dtype=float32)
    """
    top, bottom, left, right = box
    channels, height, width = image.shape
    out = np.full((channels, bottom - top + 1, right - left + 1), fill, dtype=np.float32)
    y0, y1 = max(top, 0), min(bottom + 1, height)
    x0, x1 = max(left, 0), min(right + 1, width)
    if y0 < y1 and x0 < x1:
        out[:, y0 - top : y1 - top, x0 - left : x1 - left] = image[:, y0:y1, x0:x1]
    return out


class TopK:
    """Running top-k of per-image channel maxima, with the crops of the winners.

    Parameters
    ----------
    channels, k : int
    field : LayerField
        The layer's receptive field (gives the crop of each position).
    crop_shape : tuple (C_in, rh, rw)

    Examples
    --------
    >>> f = LayerField("c", "Conv2d", (1, 1), (1, 1), (0, 0), (1, 1), (1, 1), (1, 1), (0.0, 0.0), (2, 2))
    >>> top = TopK(1, 2, f, (1, 1, 1))
    >>> acts = np.array([[[[1, 5], [0, 0]]], [[[7, 0], [0, 0]]], [[[2, 0], [0, 6]]]], dtype=np.float32)
    >>> top.update(None, acts, 0, acts)
    >>> top.values, top.image_index, top.position.tolist()
    (array([[7., 6.]], dtype=float32), array([[1, 2]]), [[[0, 0], [1, 1]]])
    """

    def __init__(self, channels: int, k: int, field: LayerField, crop_shape: tuple[int, int, int]):
        self.k = k
        self.field = field
        self.values = np.full((channels, 0), -np.inf, dtype=np.float32)  # (C, k_so_far)
        self.image_index = np.zeros((channels, 0), dtype=np.int64)  # (C, k_so_far)
        self.position = np.zeros((channels, 0, 2), dtype=np.int64)  # (C, k_so_far, 2) = (y, x)
        self.crops = np.zeros((channels, 0, *crop_shape), dtype=np.float32)  # (C, k_so_far, C_in, rh, rw)

    def update(self, maxima: np.ndarray | None, argmax_or_acts: np.ndarray, start_index: int | np.ndarray,
               display: np.ndarray) -> None:
        """Merge a batch of ``B`` images starting at ``start_index`` in the stream (or with the
        global indices ``start_index`` (B,), in increasing order).

        ``maxima`` (B, C) are the spatial maxima and ``argmax_or_acts`` (B, C) the flat
        argmax positions, or ``argmax_or_acts`` is the full maps (B, C, H', W') and
        ``maxima`` is ignored; ``display`` (B, C_in, H, W) are the images to crop.
        """
        if argmax_or_acts.ndim == 4:  # maps given: compute maxima and argmax here
            batch, channels = argmax_or_acts.shape[:2]
            flat = argmax_or_acts.reshape(batch, channels, -1)
            argmax = flat.argmax(axis=2)  # (B, C)
            maxima = np.take_along_axis(flat, argmax[..., None], axis=2)[..., 0]
        else:
            argmax = argmax_or_acts
        width = self.field.output_size[1]
        batch = maxima.shape[0]
        values = np.concatenate([self.values, maxima.T.astype(np.float32)], axis=1)  # (C, k + B)
        order = np.argsort(-values, axis=1, kind="stable")[:, : self.k]  # (C, k)
        index = (np.asarray(start_index, dtype=np.int64) if np.ndim(start_index)
                 else start_index + np.arange(batch, dtype=np.int64))  # (B,) global indices
        new_index = np.concatenate([self.image_index, np.broadcast_to(index, (values.shape[0], batch))], axis=1)
        pos_batch = np.stack([argmax.T // width, argmax.T % width], axis=-1)  # (C, B, 2)
        new_position = np.concatenate([self.position, pos_batch], axis=1)
        old = self.values.shape[1]
        channels = values.shape[0]
        crops = np.empty((channels, order.shape[1], *self.crops.shape[2:]), dtype=np.float32)
        kept = order < old  # (C, k): winners already held keep their crop
        rows = np.broadcast_to(np.arange(channels)[:, None], order.shape)
        crops[kept] = self.crops[rows[kept], order[kept]]
        for channel, slot in zip(*np.nonzero(~kept), strict=True):  # only new winners are cropped
            j = order[channel, slot]
            y, x = new_position[channel, j]
            image = display[j - old]  # (C_in, H, W)
            box = fit_box(unit_field_box(self.field, int(y), int(x)), *image.shape[1:])
            crops[channel, slot] = crop_field(image, box)
        self.values = np.take_along_axis(values, order, axis=1)
        self.image_index = np.take_along_axis(new_index, order, axis=1)
        self.position = np.take_along_axis(new_position, order[..., None], axis=1)
        self.crops = crops


@dataclass(repr=False)
class TopPatches(Displayed):
    """The result of :func:`top_patches` for one layer.

    In a notebook: the headline numbers, one row per channel (its top values and images) and each
    channel's most activating patch.
    """

    layer: str
    k: int
    values: np.ndarray  # (C, k) spatial maxima, descending
    image_index: np.ndarray  # (C, k) index of the image in the dataset stream
    position: np.ndarray  # (C, k, 2) (y, x) of the maximum in the layer's output
    crops: np.ndarray  # (C, k, C_in, rh, rw) receptive-field crops of the display images (NaN outside)
    field: LayerField
    n_images: int
    at: str = "activation"
    read: str = ""  # what was read, e.g. "features.5 (ReLU after conv features.4)"
    data: dict[str, Any] | None = None  # what the pass read (PassReport.to_dict: images used, skipped, processes)

    def _display_summary(self) -> Summary:
        channels = self.values.shape[0]
        items = [("channels", channels), ("k", self.k), ("images", self.n_images),
                 ("receptive field", f"{self.field.size[0]}x{self.field.size[1]}"),
                 ("largest maximum", float(np.max(self.values)) if self.values.size else None)]
        if self.data is not None:
            items += [("images skipped", self.data["n_skipped"]), ("processes", self.data["processes"])]
        table = [{"channel": c, "top value": float(self.values[c, 0]) if self.values.shape[1] else None,
                  "images": self.image_index[c].tolist()} for c in range(channels)]
        return Summary(f"top-{self.k} patches of {channels} channels of {self.read or self.layer} over "
                       f"{self.n_images} images", items, table)

    def _display_picture(self) -> Picture | None:
        if self.crops.shape[1] == 0:
            return None
        best = np.nan_to_num(self.crops[:, 0])  # (C, C_in, rh, rw): each channel's top patch, outside -> 0
        tiles = best.transpose(0, 2, 3, 1) if best.shape[1] == 3 else best[:, 0]
        return Picture(tiles, caption="each channel's most activating patch", signed=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer, "at": self.at, "read": self.read, "k": self.k, "n_images": self.n_images,
            **({"data": self.data} if self.data is not None else {}),
            "receptive_field": self.field.to_dict(),
            "channels": [
                {"channel": c, "values": self.values[c].tolist(), "image_index": self.image_index[c].tolist(),
                 "position": self.position[c].tolist()}
                for c in range(self.values.shape[0])
            ],
        }


def top_patches(model: nn.Module, layer: str, images: Any, *, k: int = 9, display: Any = None,
                batch_size: int = 64, n_images: int | None = None, desc: str | None = None,
                at: str = "activation", context: Context | None = None, workers: int = 0,
                checkpoint: Checkpoint | None = None) -> TopPatches:
    """The ``k`` most activating images of every channel of ``layer``, cropped by the receptive field.

    Parameters
    ----------
    model : nn.Module
    layer : str
        Dotted name of a layer with a (N, C, H', W') output.
    images : ndarray (N, C, H, W) or iterable of batches
        Model inputs (normalised as the model expects). An iterable may yield
        arrays or ``(inputs, display)`` pairs; it is consumed once (a stream).
    k : int
        Patches per channel.
    display : ndarray (N, C, H, W), optional
        Images to crop for display (e.g. the raw [0, 1] images); default the inputs.
    n_images : int, optional
        Length of a stream, for the progress bar.
    at : {"activation", "conv"}
        Read a conv ``layer`` after the nonlinearity that follows it, or its own output
        (:func:`~kernelscope.analysis.hooks.read_point`). The receptive field is the same.
    context, workers, checkpoint
        Run sharded over ``torchrun`` ranks, read a folder with workers, save and resume
        (:func:`kernelscope.analysis.passes.run_pass`); ``images`` may then be an image folder.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.fill_(1.0)
    >>> x = np.zeros((3, 1, 4, 4), dtype=np.float32); x[1, 0, 2, 3] = 5; x[2, 0, 0, 0] = 2
    >>> result = top_patches(net, "0", x, k=2)
    >>> result.image_index.tolist(), result.position.tolist(), result.crops[0, :, 0, 0, 0].tolist()
    ([[1, 2]], [[[2, 3], [0, 0]]], [5.0, 2.0])
    """
    if k < 1:
        raise KernelscopeError(f"k must be >= 1, got {k}")
    reducer = TopPatchesReducer(model, layer, k, at=at)
    report = run_pass({"top": reducer}, images, display=display, batch_size=batch_size, context=context,
                      workers=workers, checkpoint=checkpoint, name=f"patches-{layer}",
                      desc=desc or f"top patches {layer}", total=n_images)
    return reducer.result(report)


class TopPatchesReducer:
    """:func:`top_patches` as a reducer of :func:`kernelscope.analysis.passes.run_pass`.

    The state is the running top-k (values, global image indices, positions, crops); the merge
    of several re-selects the top ``k`` of their union per channel, ties broken by the lower
    global index, which is the order one process keeps (so the sets and their order are equal).

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from kernelscope.analysis.passes import run_pass, shard
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 1))
    >>> x = np.random.default_rng(0).random((10, 1, 4, 4)).astype(np.float32)
    >>> halves = []
    >>> for rank in range(2):                        # two "ranks", each on its half, then merged
    ...     part = TopPatchesReducer(net, "0", 3)
    ...     index = shard(10, rank, 2)
    ...     part.update(Batch(index, x[index], x[index]))
    ...     halves.append(part.state())
    >>> merged = TopPatchesReducer(net, "0", 3)
    >>> merged.merge(halves)
    >>> one = top_patches(net, "0", x, k=3)
    >>> bool((merged.top.image_index == one.image_index).all())
    True
    """

    def __init__(self, model: nn.Module, layer: str, k: int, *, at: str = "activation"):
        self.model, self.layer, self.k, self.at = model, layer, k, at
        self.hooked, self.read = read_point(model, layer, at)
        self.top: TopK | None = None
        self.input_shape: tuple[int, ...] | None = None
        self.seen = 0

    def _start(self, input_shape: tuple[int, ...], crop_shape: tuple[int, ...], channels: int) -> None:
        self.input_shape = tuple(int(v) for v in input_shape)
        field = receptive_field(self.model, self.layer, self.input_shape)
        self.top = TopK(channels, self.k, field, tuple(int(v) for v in crop_shape))

    def update(self, batch: Batch) -> None:
        x, shown = batch.inputs, batch.raw
        acts = forward_until(self.model, self.hooked, _to_tensor(x, self.model))  # (B, C, H', W')
        if acts.dim() != 4:
            raise KernelscopeError(f"layer {self.layer!r} output has shape {tuple(acts.shape)}, not (N, C, H, W)")
        if self.top is None:
            field = receptive_field(self.model, self.layer, tuple(x.shape[1:]))
            crop = (shown.shape[1], min(field.size[0], shown.shape[2]), min(field.size[1], shown.shape[3]))
            self._start(x.shape[1:], crop, acts.shape[1])
        maxima, argmax = acts.flatten(2).max(dim=2)  # (B, C) each
        self.top.update(maxima.float().cpu().numpy(), argmax.cpu().numpy(), batch.indices, shown)
        self.seen += x.shape[0]

    def state(self) -> dict[str, Any]:
        if self.top is None:
            return {"seen": self.seen}
        return {"seen": self.seen, "input_shape": list(self.input_shape), "crop_shape": list(self.top.crops.shape[2:]),
                "values": self.top.values, "image_index": self.top.image_index, "position": self.top.position,
                "crops": self.top.crops}

    def load(self, state: dict[str, Any]) -> None:
        self.seen = int(state["seen"])
        self.top = None
        if "values" in state:
            self._start(state["input_shape"], state["crop_shape"], state["values"].shape[0])
            self.top.values, self.top.image_index = state["values"], state["image_index"]
            self.top.position, self.top.crops = state["position"], state["crops"]

    def merge(self, states: list[dict[str, Any]]) -> None:
        held = [s for s in states if "values" in s]
        seen = sum(int(s["seen"]) for s in states)
        if not held:
            self.load({"seen": seen})
            return
        values = np.concatenate([s["values"] for s in held], axis=1)  # (C, sum k_r)
        index = np.concatenate([s["image_index"] for s in held], axis=1)
        order = np.lexsort((index, -values), axis=1)[:, : self.k]  # value down, then the earlier image
        rows = np.arange(values.shape[0])[:, None]
        self.load({**held[0], "seen": seen, "values": values[rows, order], "image_index": index[rows, order],
                   "position": np.concatenate([s["position"] for s in held], axis=1)[rows, order],
                   "crops": np.concatenate([s["crops"] for s in held], axis=1)[rows, order]})

    def result(self, report: PassReport | None = None) -> TopPatches:
        if self.top is None:
            raise KernelscopeError("the dataset has no images (0 given); give at least one image")
        return TopPatches(self.layer, min(self.k, self.seen), self.top.values, self.top.image_index,
                          self.top.position, self.top.crops, self.top.field, self.seen, self.at, self.read,
                          report.to_dict() if report is not None else None)
