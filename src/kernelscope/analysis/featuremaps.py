"""Feature maps: every channel of chosen conv layers for an image, and a probe image across epochs.

A conv layer's output is read before any activation function, so it is signed: the
figures (:mod:`kernelscope.report.figures.channels`) draw it with a diverging colour
map centred on zero, with one symmetric scale shared by all channels of a layer (and,
across epochs, by all epochs), so that a weak channel looks weak. Maps that are never
negative (after a ReLU) use a sequential scale from 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope.analysis.hooks import _as_nchw, layer_outputs, read_point
from kernelscope.errors import KernelscopeError
from kernelscope.models.layers import conv_layer_names

if TYPE_CHECKING:
    from torch import nn

__all__ = ["feature_maps", "run_feature_maps", "is_signed"]


def feature_maps(model: nn.Module, image: Any, layers: list[str] | None = None, *,
                 at: str = "activation") -> dict[str, np.ndarray]:
    """All channels of ``layers`` (default: every Conv2d) for one image.

    Parameters
    ----------
    model : nn.Module
    image : ndarray of shape (C, H, W) or (1, C, H, W) (or (H, W) for one channel)
        As the model expects it (normalised).
    layers : list of str, optional
        Dotted layer names; default all 2-D conv layers in definition order.
    at : {"activation", "conv"}
        Read each conv layer after the nonlinearity that follows it, or its own signed
        output (:func:`~kernelscope.analysis.hooks.read_point`); keys stay the conv names.

    Returns
    -------
    dict of str to ndarray of shape (O, H', W')

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 3))
    >>> maps = feature_maps(net, np.random.default_rng(0).normal(size=(1, 8, 8)).astype(np.float32))
    >>> {name: m.shape for name, m in maps.items()}
    {'0': (2, 6, 6), '2': (1, 4, 4)}
    >>> bool(maps["0"].min() >= 0), bool(feature_maps(net, np.ones((8, 8)) , at="conv")["0"].min() < 0)
    (True, True)
    """
    array = np.asarray(image.detach().cpu().numpy() if hasattr(image, "detach") else image)
    if array.ndim == 2:
        array = array[None, None]
    elif array.ndim == 3:
        array = array[None]
    array = _as_nchw(array)
    if array.shape[0] != 1:
        raise KernelscopeError(f"feature_maps takes one image, got {array.shape[0]} (shape {array.shape})")
    if layers is None:
        layers = conv_layer_names(model)
        if not layers:
            raise KernelscopeError(f"model {type(model).__name__} has no Conv2d layer; name the layers to show")
    hooked = {name: read_point(model, name, at)[0] for name in layers}
    outputs = layer_outputs(model, array, sorted(set(hooked.values())))
    maps = {}
    for name in layers:
        value = outputs[hooked[name]]
        if value.ndim != 4:
            raise KernelscopeError(f"layer {name!r} output has shape {value.shape}, not (N, C, H, W)")
        maps[name] = value[0]
    return maps


def run_feature_maps(run: Any, layer: str, index: int = 0) -> tuple[list[int], np.ndarray]:
    """The recorded maps of probe image ``index`` for ``layer`` at every recorded epoch.

    Parameters
    ----------
    run : kernelscope.train.rundir.Run
    layer : str
        A conv layer recorded by the run.
    index : int
        Which probe image.

    Returns
    -------
    epochs : list of int
    maps : ndarray of shape (E, O, H', W')
    """
    from kernelscope.errors import suggest

    epochs = list(run.feature_map_epochs)
    if not epochs:
        raise KernelscopeError(f"run {str(run.path)!r} recorded no feature maps")
    stack = []
    for epoch in epochs:
        arrays = run.feature_maps(epoch)
        if layer not in arrays:
            raise KernelscopeError(suggest(layer, arrays, what="recorded layer"))
        maps = arrays[layer]
        if not 0 <= index < maps.shape[0]:
            raise KernelscopeError(f"probe index must be in 0..{maps.shape[0] - 1}, got {index}")
        stack.append(maps[index])
    return epochs, np.stack(stack)


def is_signed(maps: np.ndarray) -> bool:
    """True when any value is negative (draw on a diverging scale).

    Examples
    --------
    >>> is_signed(np.array([0.0, 1.0])), is_signed(np.array([-0.1, 1.0]))
    (False, True)
    """
    return bool(np.nanmin(maps) < 0)
