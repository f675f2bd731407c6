"""Crossing between PyTorch and the NumPy network: layers and weights, both ways.

The only module of :mod:`kernelscope.npnet` that touches torch (imported inside the
functions). :func:`from_torch` turns a plain sequence of supported torch layers (the
zoo's ``lenet5``, ``tinyvgg`` and ``large-kernel``, or any ``nn.Sequential`` of them)
into a :class:`~kernelscope.npnet.network.Sequential` with the same dotted names and a
copy of the weights; :func:`state_dict_to_torch` goes back, so a network trained in
NumPy loads into the torch model with ``load_state_dict``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.npnet.layers import AvgPool2d, Conv2d, Flatten, Layer, Linear, MaxPool2d, ReLU
from kernelscope.npnet.network import Sequential
from kernelscope.ops.shapes import as_pair

__all__ = ["from_torch", "state_dict_to_torch", "SUPPORTED_LAYERS"]

SUPPORTED_LAYERS = ("Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten", "Linear")


def _convert(name: str, module: Any, dtype: np.dtype | type, input_grad: bool) -> Layer:
    from torch import nn

    kind = type(module).__name__
    if isinstance(module, nn.Conv2d):
        if isinstance(module.padding, str):
            padding: Any = module.padding  # "same" / "valid": the engine resolves them the same way
        else:
            padding = as_pair(module.padding, f"{name}.padding", minimum=0)
        layer = Conv2d(module.in_channels, module.out_channels,
                       as_pair(module.kernel_size, f"{name}.kernel_size"), stride=as_pair(module.stride, f"{name}.stride"), padding=padding,
                       dilation=as_pair(module.dilation, f"{name}.dilation"),
                       groups=module.groups, padding_mode=module.padding_mode,
                       bias=module.bias is not None, input_grad=input_grad, dtype=dtype)
    elif isinstance(module, nn.Linear):
        layer = Linear(module.in_features, module.out_features, bias=module.bias is not None, dtype=dtype)
    elif isinstance(module, nn.ReLU):
        layer = ReLU()
    elif isinstance(module, nn.Flatten):
        if module.start_dim != 1 or module.end_dim != -1:
            raise KernelscopeError(f"layer {name!r}: npnet supports Flatten(start_dim=1, end_dim=-1) only; "
                                   f"got start_dim={module.start_dim}, end_dim={module.end_dim}")
        layer = Flatten()
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = as_pair(module.kernel_size, f"{name}.kernel_size")
        s = as_pair(module.kernel_size if module.stride is None else module.stride, f"{name}.stride")
        padding = as_pair(module.padding, f"{name}.padding", minimum=0)
        plain = (k[0] == k[1] and s[0] == s[1] and padding == (0, 0) and not module.ceil_mode
                 and as_pair(getattr(module, "dilation", 1), f"{name}.dilation") == (1, 1))
        if isinstance(module, nn.AvgPool2d):
            plain = plain and s == k and module.divisor_override is None
        if not plain:
            raise KernelscopeError(
                f"layer {name!r}: npnet supports {kind} with square windows, no padding, no dilation, "
                f"ceil_mode=False{' and stride = kernel_size' if kind == 'AvgPool2d' else ''}; got {module}")
        layer = MaxPool2d(k[0], s[0]) if isinstance(module, nn.MaxPool2d) else AvgPool2d(k[0])
    else:
        raise KernelscopeError(
            f"layer {name!r} is a {kind}, which the NumPy network cannot run "
            f"(supported: {', '.join(SUPPORTED_LAYERS)})")
    for key, param in module.named_parameters(recurse=False):
        layer.params[key] = param.detach().cpu().numpy().astype(dtype, copy=True)
    return layer


def _leaves(module: Any, prefix: str) -> list[tuple[str, Any]]:
    """The layers of a plain sequence, in the order they run, with their dotted names."""
    from torch import nn

    children = list(module.named_children())
    if not children:
        return [(prefix, module)]
    names = [name for name, _ in children]
    sequential = isinstance(module, nn.Sequential) or names == ["features", "classifier"]
    if not sequential:
        raise KernelscopeError(
            f"{'model' if not prefix else f'module {prefix!r}'} ({type(module).__name__}) is not a plain "
            f"sequence of layers; the NumPy network runs nn.Sequential models and the zoo's lenet5, "
            f"tinyvgg and large-kernel (layers: {', '.join(SUPPORTED_LAYERS)})")
    out = []
    for name, child in children:
        out += _leaves(child, f"{prefix}.{name}" if prefix else name)
    return out


def from_torch(model: Any, *, dtype: np.dtype | type = np.float32) -> Sequential:
    """A NumPy network computing the same function as ``model``, with a copy of its weights.

    Parameters
    ----------
    model : torch.nn.Module
        An ``nn.Sequential`` (possibly nested) or a zoo model with ``features`` and
        ``classifier``, made of Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Linear.
    dtype : numpy dtype
        The parameters' dtype on the NumPy side.

    Returns
    -------
    Sequential
        Same dotted layer names as ``model``; the first conv layer skips its input gradient.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    >>> npnet = from_torch(net, dtype=np.float64)
    >>> x = np.random.default_rng(0).normal(size=(2, 1, 6, 6))
    >>> bool(np.allclose(npnet.forward(x), net.double()(torch.from_numpy(x)).detach().numpy()))
    True
    >>> from_torch(nn.Sequential(nn.BatchNorm2d(3)))
    Traceback (most recent call last):
    ...
    kernelscope.errors.KernelscopeError: layer '0' is a BatchNorm2d, which the NumPy network cannot run (supported: Conv2d, ReLU, MaxPool2d, AvgPool2d, Flatten, Linear)
    """
    layers = []
    first_conv = True
    for name, module in _leaves(model, ""):
        layer = _convert(name, module, dtype, input_grad=not first_conv)
        if isinstance(layer, Conv2d):
            first_conv = False
        layers.append((name, layer))
    return Sequential(layers)


def state_dict_to_torch(state: dict[str, np.ndarray], *, dtype: Any = None) -> dict[str, Any]:
    """A NumPy state dict as torch tensors (float32 unless ``dtype`` is given), for ``load_state_dict``.

    Examples
    --------
    >>> sd = state_dict_to_torch({"0.weight": np.ones((2, 3))})
    >>> sd["0.weight"].dtype, tuple(sd["0.weight"].shape)
    (torch.float32, (2, 3))
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    return {name: torch.from_numpy(np.ascontiguousarray(value)).to(dtype).clone() for name, value in state.items()}
