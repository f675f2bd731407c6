"""Top activations projected back into pixels: deconvnet (Zeiler & Fergus, 2014) and guided backpropagation
(Springenberg et al., 2015).

Both are the gradient of one unit (channel ``c`` at position ``(y, x)`` of a layer) with respect
to the input image, with a different rule at every ReLU on the way back. With ``g`` the
gradient arriving at a ReLU's output and ``z`` its input:

=====================  ====================================
method                 gradient passed to the ReLU's input
=====================  ====================================
plain gradient         ``g * (z > 0)``
deconvnet              ``max(g, 0)`` (the forward mask is not used)
guided backpropagation ``max(g, 0) * (z > 0)``
=====================  ====================================

Max pooling routes the gradient through the position that won in the forward pass: the
deconvnet's "switches". Convolutions are transposed by autograd (the deconvnet's
"filtering with the transposed filters"). These are the rules of Captum's
``Deconvolution`` and ``GuidedBackprop``; the tests check against Captum and against a
network small enough to do by hand. Only ``nn.ReLU`` *modules* are overridden (as in
Captum); a ReLU applied as a function in ``forward`` keeps its plain gradient, and
:func:`project_top_patches` reports how many ReLU modules it overrode.

The override is a forward hook on every ``nn.ReLU`` that replaces the module's output by
a custom autograd function of its input (kept by a pre-hook before an in-place ReLU can
overwrite it); every hook is removed in ``finally``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kernelscope._display import Displayed, Picture, Summary
from kernelscope.analysis.hooks import _to_tensor, capture, read_point
from kernelscope.errors import KernelscopeError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from kernelscope.analysis.toppatches import TopPatches

__all__ = ["METHODS", "unit_gradient", "project_top_patches", "Projections"]

METHODS = ("gradient", "deconvnet", "guided")


def _relu_function(method: str):
    import torch

    class _Rule(torch.autograd.Function):
        @staticmethod
        def forward(ctx, z):
            ctx.save_for_backward(z)
            return z.clamp(min=0)

        @staticmethod
        def backward(ctx, g):
            (z,) = ctx.saved_tensors
            if method == "deconvnet":
                return g.clamp(min=0)
            return g.clamp(min=0) * (z > 0).to(g.dtype)  # guided

    return _Rule


@contextmanager
def _relu_rules(model: nn.Module, method: str) -> Iterator[int]:
    """Override every ``nn.ReLU`` module's backward with ``method``'s rule; yields how many were overridden."""
    from torch import nn

    handles = []
    if method == "gradient":
        yield 0
        return
    rule = _relu_function(method)
    kept: dict[int, Any] = {}

    def keep(module, inputs):
        kept[id(module)] = inputs[0]
        return (inputs[0].clone(), *inputs[1:])  # an in-place ReLU overwrites the copy, not the kept input

    def replace(module, inputs, output):
        return rule.apply(kept.pop(id(module)))

    try:
        relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
        for module in relus:
            handles.append(module.register_forward_pre_hook(keep))
            handles.append(module.register_forward_hook(replace))
        yield len(relus)
    finally:
        for handle in handles:
            handle.remove()


class _Stop(Exception):
    pass


def unit_gradient(model: nn.Module, layer: str, x: Any, units: np.ndarray, *, method: str = "guided",
                  at: str = "activation") -> np.ndarray:
    """``d a[b, c_b, y_b, x_b] / d x[b]`` for each image ``b`` under ``method``'s ReLU rule, (B, C_in, H, W).

    Parameters
    ----------
    x : ndarray or Tensor of shape (B, C_in, H, W)
        Model inputs (normalised as the model expects).
    units : ndarray of shape (B, 3)
        ``(channel, y, x)`` per image, at the layer's output (read as ``at`` says).
    method : {"gradient", "deconvnet", "guided"}

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 1, bias=False), nn.ReLU(), nn.Conv2d(2, 1, 1, bias=False))
    >>> with torch.no_grad():
    ...     _ = net[0].weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
    ...     _ = net[2].weight.copy_(torch.tensor([1.0, 1.0]).view(1, 2, 1, 1))
    >>> x = np.full((1, 1, 1, 1), 2.0, np.float32)
    >>> [float(unit_gradient(net, "2", x, np.array([[0, 0, 0]]), method=m).squeeze()) for m in METHODS]
    [1.0, 0.0, 1.0]
    """
    import torch

    if method not in METHODS:
        raise KernelscopeError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    hooked, _ = read_point(model, layer, at)
    inputs = _to_tensor(x, model).detach().clone().requires_grad_(True)  # (B, C_in, H, W)
    units = np.asarray(units, dtype=np.int64)
    if units.shape != (inputs.shape[0], 3):
        raise KernelscopeError(f"units must have shape ({inputs.shape[0]}, 3) (channel, y, x), got {units.shape}")
    held: dict[str, Any] = {}

    def stop(name: str, output: torch.Tensor) -> None:
        held["out"] = output
        raise _Stop

    with _relu_rules(model, method), capture(model, hooked, callback=stop, detach=False):
        try:
            model(inputs)
        except _Stop:
            pass
    out = held.get("out")
    if out is None:
        raise KernelscopeError(f"layer {hooked!r} did not run in the forward pass; choose a layer that does")
    if not out.requires_grad:
        raise KernelscopeError(f"layer {layer!r} gives no gradient with respect to the input; projections need a "
                               "differentiable model")
    b = torch.arange(inputs.shape[0], device=out.device)
    c, y, xx = (torch.from_numpy(units[:, i]).to(out.device) for i in range(3))
    selected = out[b, c, y, xx]  # (B,) one unit per image: images do not mix (eval mode)
    (grad,) = torch.autograd.grad(selected.sum(), inputs)
    return grad.float().cpu().numpy()


@dataclass(repr=False)
class Projections(Displayed):
    """Projections of each channel's top-k patches into pixel space, cropped like the patches."""

    layer: str
    method: str
    crops: np.ndarray  # (C, k, C_in, rh, rw) gradient crops (NaN outside the image)
    relus_overridden: int

    def _display_summary(self) -> Summary:
        c, k = self.crops.shape[:2]
        return Summary(f"{self.method} projections of {self.layer}: {c} channel(s) x {k} top patches",
                       [("method", self.method), ("ReLUs overridden", self.relus_overridden),
                        ("crop", "x".join(map(str, self.crops.shape[2:])))])

    def _display_picture(self) -> Picture:
        crops = np.nan_to_num(self.crops.reshape(-1, *self.crops.shape[2:]))  # (C*k, C_in, rh, rw)
        tiles = crops.transpose(0, 2, 3, 1) if crops.shape[1] == 3 else crops.sum(axis=1)
        return Picture(tiles, caption="rows: channels; columns: top patches", columns=self.crops.shape[1])

    def to_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "method": self.method, "relus_overridden": self.relus_overridden,
                "shape": list(self.crops.shape)}


def project_top_patches(model: nn.Module, layer: str, images: Any, top: TopPatches, *, method: str = "guided",
                        channels: list[int] | None = None, batch_size: int = 64) -> Projections:
    """Project every top patch of ``top`` (from :func:`~kernelscope.analysis.toppatches.top_patches` on the same
    ``images`` and ``model``) back into pixels, cropped to the unit's receptive field.

    ``channels`` (default all) selects rows of ``top``; the result's rows follow it.
    """
    from torch import nn as _nn

    from kernelscope.analysis.receptive import unit_field_box
    from kernelscope.analysis.toppatches import crop_field

    array = np.asarray(images, dtype=np.float32)
    channels = list(range(top.values.shape[0])) if channels is None else list(channels)
    k = top.image_index.shape[1]
    jobs = [(c, j) for c in channels for j in range(k)]
    crops = np.full((len(channels), k, array.shape[1], *top.field.size), np.nan, dtype=np.float32)
    relus = sum(isinstance(m, _nn.ReLU) for m in model.modules()) if method != "gradient" else 0
    for start in range(0, len(jobs), batch_size):
        chunk = jobs[start:start + batch_size]
        index = np.array([top.image_index[c, j] for c, j in chunk])
        units = np.array([[c, *top.position[c, j]] for c, j in chunk])
        grads = unit_gradient(model, layer, array[index], units, method=method, at=top.at)  # (B, C_in, H, W)
        for g, (c, j) in zip(grads, chunk, strict=True):
            y, x = top.position[c, j]
            crops[channels.index(c), j] = crop_field(g, unit_field_box(top.field, int(y), int(x)))
    return Projections(layer, method, crops, relus)
