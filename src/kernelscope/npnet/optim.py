"""SGD with momentum and weight decay, and Adam/AdamW: PyTorch's exact update rules, in NumPy."""

from __future__ import annotations

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["SGD", "Adam"]


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


class Adam:
    """Adam (or AdamW with ``decoupled=True``) as ``torch.optim.Adam``/``AdamW`` compute it.

    For every parameter ``p`` with gradient ``g``, at step ``t`` (from 1)::

        g  = g + weight_decay * p            (Adam: L2 penalty in the gradient)
        p *= 1 - lr * weight_decay           (AdamW instead: decoupled decay)
        m  = m + (1 - beta1) * (g - m)
        v  = beta2 * v + (1 - beta2) * g * g
        p -= lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    Parameters
    ----------
    params : dict of str to ndarray
        Updated in place.
    lr, betas, eps, weight_decay : float
        PyTorch's defaults.
    decoupled : bool
        AdamW's decoupled weight decay.

    Examples
    --------
    >>> p = {"w": np.array([1.0, -1.0])}
    >>> opt = Adam(p, lr=0.1)
    >>> opt.step({"w": np.array([0.5, -2.0])}); p["w"]   # the first step moves each entry by ~lr
    array([ 0.9, -0.9])
    """

    def __init__(self, params: dict[str, np.ndarray], *, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 decoupled: bool = False) -> None:
        for name, value in (("lr", lr), ("eps", eps), ("weight_decay", weight_decay)):
            if not np.isfinite(value) or value < 0:
                raise KernelscopeError(f"Adam {name}={value!r} must be a finite number >= 0")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise KernelscopeError(f"Adam betas={betas!r} must lie in [0, 1)")
        self.params = params
        self.lr, self.betas, self.eps = float(lr), (float(betas[0]), float(betas[1])), float(eps)
        self.weight_decay, self.decoupled = float(weight_decay), bool(decoupled)
        self.t = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Apply one update with ``grads`` (same names and shapes as the parameters)."""
        self.t += 1
        beta1, beta2 = self.betas
        step_size = self.lr / (1 - beta1 ** self.t)
        correction2_sqrt = (1 - beta2 ** self.t) ** 0.5
        for name, p in self.params.items():
            g = grads.get(name)
            if g is None:
                continue
            if g.shape != p.shape:
                raise KernelscopeError(
                    f"gradient of {name!r} has shape {tuple(g.shape)}, the parameter {tuple(p.shape)}")
            if self.weight_decay and self.decoupled:
                p *= 1 - self.lr * self.weight_decay
            elif self.weight_decay:
                g = g + self.weight_decay * p
            m = self.m.setdefault(name, np.zeros_like(p))
            v = self.v.setdefault(name, np.zeros_like(p))
            m += (1 - beta1) * (g - m)
            v *= beta2
            v += (1 - beta2) * g * g
            p -= step_size * m / (np.sqrt(v) / correction2_sqrt + self.eps)

    def state_dict(self) -> dict:
        """Step count and moment estimates, by parameter name (a plain dict of arrays)."""
        return {"t": self.t, "m": {k: v.copy() for k, v in self.m.items()},
                "v": {k: v.copy() for k, v in self.v.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` wrote."""
        self.t = int(state["t"])
        self.m = {k: np.array(v, copy=True) for k, v in state["m"].items()}
        self.v = {k: np.array(v, copy=True) for k, v in state["v"].items()}
