"""SGD with momentum and weight decay, PyTorch's exact update rule, in NumPy."""

from __future__ import annotations

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["SGD"]


class SGD:
    """Stochastic gradient descent as ``torch.optim.SGD`` computes it (dampening 0, not Nesterov).

    For every parameter ``p`` with gradient ``g``::

        d_p = g + weight_decay * p
        buf = d_p                       on the first step
        buf = momentum * buf + d_p      afterwards
        p  -= lr * buf                  (or lr * d_p when momentum is 0)

    Parameters are updated in place, so the layers see the new values.

    Parameters
    ----------
    params : dict of str to ndarray
        Named parameters (a network's ``parameters()``); updated in place.
    lr, momentum, weight_decay : float

    Examples
    --------
    >>> p = {"w": np.array([1.0])}
    >>> opt = SGD(p, lr=0.1, momentum=0.9)
    >>> opt.step({"w": np.array([1.0])}); p["w"]
    array([0.9])
    >>> opt.step({"w": np.array([1.0])}); p["w"]  # buf = 0.9 * 1 + 1 = 1.9
    array([0.71])
    """

    def __init__(self, params: dict[str, np.ndarray], *, lr: float, momentum: float = 0.0,
                 weight_decay: float = 0.0) -> None:
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if not np.isfinite(value) or value < 0:
                raise KernelscopeError(f"SGD {name}={value!r} must be a finite number >= 0")
        self.params = params
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.buffers: dict[str, np.ndarray] = {}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Apply one update with ``grads`` (same names and shapes as the parameters)."""
        for name, p in self.params.items():
            g = grads.get(name)
            if g is None:
                continue
            if g.shape != p.shape:
                raise KernelscopeError(
                    f"gradient of {name!r} has shape {tuple(g.shape)}, the parameter {tuple(p.shape)}")
            d_p = g + self.weight_decay * p if self.weight_decay else g.copy()
            if self.momentum:
                buf = self.buffers.get(name)
                if buf is None:
                    buf = self.buffers[name] = d_p.copy()
                else:
                    buf *= self.momentum
                    buf += d_p
                d_p = buf
            p -= (self.lr * d_p).astype(p.dtype, copy=False)

    def state_dict(self) -> dict:
        """The momentum buffers, by parameter name (a plain dict of arrays)."""
        return {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                "buffers": {name: buf.copy() for name, buf in self.buffers.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore the buffers written by :meth:`state_dict`."""
        self.buffers = {name: np.array(buf, copy=True) for name, buf in state.get("buffers", {}).items()}
