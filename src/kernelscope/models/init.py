"""The one initialisation control: a network, or a layer, as PyTorch initialises it.

Every analysis that compares a trained network with "the same network at
initialisation" gets it from here (through :class:`kernelscope.sources.Source`): a
deep copy whose parameterised sub-modules are reset with PyTorch's default
initialisation under a fixed seed, without touching the caller's random stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from torch import nn

__all__ = ["reinitialised", "init_kernels"]


def reinitialised(model: nn.Module, *, seed: int = 0) -> nn.Module:
    """A deep copy of ``model`` with every sub-module that has ``reset_parameters`` reset, in eval mode.

    The resets run in ``model.modules()`` order under ``torch.manual_seed(seed)``; the
    original model and the caller's random state are untouched. For a model built
    under ``torch.manual_seed(seed)`` whose layers are created in the order
    ``modules()`` lists them, this gives exactly the weights of that build.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 2, 3))
    >>> a, b = reinitialised(net, seed=3), reinitialised(net, seed=3)
    >>> bool(torch.equal(a[0].weight, b[0].weight)), bool(torch.equal(a[0].weight, net[0].weight))
    (True, False)
    """
    import copy

    import torch

    clone = copy.deepcopy(model)
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        for module in clone.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    finally:
        torch.random.set_rng_state(state)
    return clone.eval()


def init_kernels(layer: nn.Module, n: int, *, seed: int = 0) -> np.ndarray | None:
    """At least ``n`` kernels (float64) drawn by re-initialising ``layer`` again and again (None if it can't be).

    Draw ``d`` is ``reinitialised(layer, seed=10_000 * seed + d)``: a large null of
    initial kernels for the atlas, from the same initialiser as the network's own.

    Returns
    -------
    ndarray of shape (n, C, kh, kw) or None

    Examples
    --------
    >>> from torch import nn
    >>> init_kernels(nn.Conv2d(3, 4, 5), 10).shape
    (10, 3, 5, 5)
    """
    import copy

    import torch

    if not callable(getattr(layer, "reset_parameters", None)):
        return None
    cpu = copy.deepcopy(layer).to("cpu", torch.float32)  # draws as float32 on the CPU, whatever the layer's
    out, total, draw = [], 0, 0
    while total < n:
        weight = reinitialised(cpu, seed=10_000 * seed + draw).weight.detach().numpy().astype(np.float64)
        out.append(weight)
        total += weight.shape[0]
        draw += 1
    return np.concatenate(out)[: max(n, 1)]
