"""Addressing layers of any ``nn.Module`` by dotted name (``features.0``, ``layer2.1.conv1``).

Shared by training (the recorder), the atlas and every channel analysis, so that
all of them accept the same names and fail with the same helpful message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernelscope.errors import KernelscopeError, suggest

if TYPE_CHECKING:  # torch is imported only by the functions that need it
    from torch import nn

__all__ = ["conv_layer_names", "get_layer", "get_conv_layer"]


def conv_layer_names(model: nn.Module) -> list[str]:
    """Dotted names of the 2-D convolution layers of ``model``, in definition order.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 8, 3)))
    >>> conv_layer_names(net)
    ['0', '2.0']
    """
    from torch import nn

    return [name for name, module in model.named_modules() if isinstance(module, nn.Conv2d)]


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """Return the sub-module called ``name``; unknown names list the valid ones.

    Examples
    --------
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    >>> get_layer(net, "0")
    Conv2d(1, 4, kernel_size=(3, 3), stride=(1, 1))
    """
    modules = dict(model.named_modules())
    modules.pop("", None)
    if name not in modules:
        raise KernelscopeError(suggest(name, modules, what="layer"))
    return modules[name]


def get_conv_layer(model: nn.Module, name: str | None = None) -> tuple[str, nn.Conv2d]:
    """Return ``(name, layer)`` for the conv layer ``name`` (default: the first one).

    Raises :class:`KernelscopeError` when the model has no ``Conv2d``, when the
    name is unknown (listing the conv layers), when the layer is a 1-D or 3-D
    convolution (not supported yet) or not a convolution at all.
    """
    from torch import nn

    names = conv_layer_names(model)
    if name is None:
        if not names:
            raise KernelscopeError(
                f"model {type(model).__name__} has no Conv2d layer; kernelscope analyses 2-D convolutions"
            )
        name = names[0]
    layer = get_layer(model, name)
    if isinstance(layer, (nn.Conv1d, nn.Conv3d)):
        raise KernelscopeError(
            f"layer {name!r} is a {type(layer).__name__}: 1-D and 3-D convolutions are not supported yet "
            f"(2-D conv layers: {', '.join(names) or 'none'})"
        )
    if not isinstance(layer, nn.Conv2d):
        raise KernelscopeError(
            f"layer {name!r} is a {type(layer).__name__}, not a convolution "
            f"(conv layers: {', '.join(names) or 'none'})"
        )
    return name, layer
