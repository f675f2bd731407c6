"""The layers of the first-principles network: NumPy in, NumPy out, no torch.

Every layer has ``forward(x)`` (which remembers what its backward needs) and
``backward(grad_out)`` (which returns the gradient with respect to its input and
stores the gradients of its parameters in ``.grads``, keyed like ``.params``).
Parameter names follow PyTorch (``weight``, ``bias``) so that a network's state
dict reads the same on both sides.

The convolution's forward is the engine's :func:`kernelscope.ops.correlate2d`,
its backward :func:`kernelscope.ops.backward.correlate2d_backward`: the
gradient with respect to the kernel is a cross-correlation of the input with
the output gradient, the gradient with respect to the input a true convolution
of the output gradient with the kernel.
"""

from __future__ import annotations

import math

import numpy as np

from kernelscope.errors import KernelscopeError

__all__ = ["NonFiniteError", "Layer", "Conv2d", "ReLU", "MaxPool2d", "AvgPool2d", "Flatten", "Linear", "kaiming_uniform_init"]


class NonFiniteError(KernelscopeError):
    """A loss, an activation or a parameter became NaN or infinite (training diverged)."""


class Layer:
    """Base of the layers: no parameters, identity bookkeeping."""

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.training = True

    def forward(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def kaiming_uniform_init(shape: tuple[int, ...], fan_in: int, rng: np.random.Generator,
                         dtype: np.dtype | type = np.float32) -> np.ndarray:
    """PyTorch's default initialisation of conv and linear layers, in NumPy.

    ``nn.Conv2d`` and ``nn.Linear`` draw weights with ``kaiming_uniform_(a=sqrt(5))``
    and biases from the same bound: both are ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``.

    Examples
    --------
    >>> w = kaiming_uniform_init((6, 1, 5, 5), 25, np.random.default_rng(0))
    >>> w.shape, w.dtype, bool(np.abs(w).max() <= 1 / 5)
    ((6, 1, 5, 5), dtype('float32'), True)
    """
    bound = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(dtype)


class Conv2d(Layer):
    """A 2-D convolution layer (cross-correlation, like ``torch.nn.Conv2d``).

    Parameters
    ----------
    in_channels, out_channels : int
        Channels of the input ``(N, C, H, W)`` and of the output ``(N, O, H', W')``.
    kernel_size : int or (int, int)
        Kernel size ``(kh, kw)``: the weight has shape ``(O, C/groups, kh, kw)``.
    stride, padding, dilation, groups
        As in :func:`kernelscope.ops.correlate2d` (``padding`` an int or ``"same"``...).
    padding_mode : str
        "zeros" | "reflect" | "replicate" | "circular".
    bias : bool
        Whether the layer adds a bias per output channel.
    input_grad : bool
        Whether ``backward`` computes the gradient with respect to the input; the
        first layer of a network does not need it (saves one transposed convolution).
    rng : numpy.random.Generator, optional
        Draws PyTorch's default initialisation (see :func:`kaiming_uniform_init`).
    dtype : numpy dtype
        float32 (default, like PyTorch) or float64.

    Examples
    --------
    >>> conv = Conv2d(1, 2, 3, rng=np.random.default_rng(0))
    >>> y = conv(np.ones((4, 1, 6, 6), dtype=np.float32))
    >>> y.shape
    (4, 2, 4, 4)
    >>> conv.backward(np.ones_like(y)).shape, conv.grads["weight"].shape
    ((4, 1, 6, 6), (2, 1, 3, 3))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int], *,
                 stride: int | tuple[int, int] = 1, padding: int | str | tuple = 0,
                 dilation: int | tuple[int, int] = 1, groups: int = 1,
                 padding_mode: str = "zeros", bias: bool = True, input_grad: bool = True,
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float32) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise KernelscopeError(
                f"groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        rng = np.random.default_rng() if rng is None else rng
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        fan_in = in_channels // groups * kh * kw
        self.params["weight"] = kaiming_uniform_init(
            (out_channels, in_channels // groups, kh, kw), fan_in, rng, dtype)
        if bias:
            self.params["bias"] = kaiming_uniform_init((out_channels,), fan_in, rng, dtype)
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.padding_mode = padding_mode
        self.input_grad = input_grad
        self._x: np.ndarray | None = None

    def _options(self) -> dict:
        return {"stride": self.stride, "padding": self.padding, "padding_mode": self.padding_mode,
                "dilation": self.dilation, "groups": self.groups}

    def forward(self, x: np.ndarray) -> np.ndarray:
        from kernelscope.ops import correlate2d

        if not np.isfinite(x).all():
            raise NonFiniteError("the input of a Conv2d layer holds NaN or infinity")
        self._x = x  # (N, C, H, W)
        return correlate2d(x, self.params["weight"], self.params.get("bias"),
                           **self._options())  # (N, O, H', W')

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        from kernelscope.ops.backward import correlate2d_backward

        if self._x is None:
            raise KernelscopeError("Conv2d.backward called before forward")
        grad_x, grad_w, grad_b = correlate2d_backward(
            self._x, self.params["weight"], grad_out, bias="bias" in self.params,
            input_grad=self.input_grad, **self._options())
        self.grads["weight"] = grad_w  # (O, C/groups, k, k)
        if grad_b is not None:
            self.grads["bias"] = grad_b  # (O,)
        return grad_x  # (N, C, H, W) or None

    def __repr__(self) -> str:
        return (f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding!r})")


class ReLU(Layer):
    """``max(x, 0)``; the gradient passes where the output is positive (PyTorch's rule at 0).

    Examples
    --------
    >>> relu = ReLU()
    >>> relu(np.array([-1.0, 0.0, 2.0])), relu.backward(np.array([5.0, 5.0, 5.0]))
    (array([0., 0., 2.]), array([0., 0., 5.]))
    """

    def forward(self, x: np.ndarray) -> np.ndarray:
        out = np.maximum(x, 0)  # same shape as x
        self._mask = out > 0
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out * self._mask  # same shape as x


class MaxPool2d(Layer):
    """Max pooling over ``k x k`` windows with stride ``s`` (default ``k``), no padding.

    The gradient of each window goes to its first maximum (row-major), the
    element PyTorch's CPU kernel picks; output sizes round down like PyTorch's
    default ``ceil_mode=False``.

    Examples
    --------
    >>> pool = MaxPool2d(2)
    >>> x = np.arange(16.0).reshape(1, 1, 4, 4)
    >>> pool(x)[0, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0]
    array([[0., 0., 0., 0.],
           [0., 1., 0., 1.],
           [0., 0., 0., 0.],
           [0., 1., 0., 1.]])
    """

    def __init__(self, kernel_size: int, stride: int | None = None) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        self.stride = int(stride) if stride is not None else self.kernel_size
        if self.kernel_size < 1 or self.stride < 1:
            raise KernelscopeError(
                f"MaxPool2d kernel_size={kernel_size} and stride={stride} must be >= 1")

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        k, s = self.kernel_size, self.stride
        if h < k or w < k:
            raise KernelscopeError(f"MaxPool2d kernel_size={k} is larger than the input {h}x{w}")
        ho, wo = (h - k) // s + 1, (w - k) // s + 1
        self._shape = x.shape
        if k == s:  # non-overlapping windows: tap by tap over strided slices, no window copies
            best = x[:, :, 0:ho * k:k, 0:wo * k:k].copy()  # (N, C, H', W'): tap (0, 0)
            self._argmax = np.zeros(best.shape, dtype=np.intp)  # (N, C, H', W')
            for tap in range(1, k * k):
                u, v = divmod(tap, k)
                candidate = x[:, :, u:ho * k:k, v:wo * k:k]  # (N, C, H', W')
                better = candidate > best  # strict: ties keep the first maximum, like PyTorch
                np.copyto(best, candidate, where=better)
                self._argmax[better] = tap
            return best
        else:
            view = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))
            windows = view[:, :, ::s, ::s][:, :, :ho, :wo].reshape(n, c, ho, wo, k * k)  # (N, C, H', W', k*k)
            self._argmax = windows.argmax(axis=-1)  # (N, C, H', W'): first maximum, like PyTorch
            return np.take_along_axis(windows, self._argmax[..., None], axis=-1)[..., 0]  # (N, C, H', W')

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        n, c, h, w = self._shape
        k, s = self.kernel_size, self.stride
        ho, wo = grad_out.shape[2:]
        if k == s:
            grad = np.zeros((n, c, ho, wo, k * k), dtype=grad_out.dtype)  # (N, C, H', W', k*k)
            np.put_along_axis(grad, self._argmax[..., None], grad_out[..., None], axis=-1)
            grad = grad.reshape(n, c, ho, wo, k, k).transpose(0, 1, 2, 4, 3, 5)  # (N, C, H', k, W', k)
            grad_x = np.zeros(self._shape, dtype=grad_out.dtype)  # (N, C, H, W)
            grad_x[:, :, :ho * k, :wo * k] = grad.reshape(n, c, ho * k, wo * k)
            return grad_x
        # overlapping windows: scatter-add every output gradient onto its argmax pixel
        rows = np.arange(ho)[:, None] * s + self._argmax // k  # (N, C, H', W')
        cols = np.arange(wo)[None, :] * s + self._argmax % k  # (N, C, H', W')
        flat = (np.arange(n * c).reshape(n, c, 1, 1) * (h * w) + rows * w + cols).ravel()
        grad_x = np.bincount(flat, weights=grad_out.ravel().astype(np.float64), minlength=n * c * h * w)
        return grad_x.reshape(self._shape).astype(grad_out.dtype)  # (N, C, H, W)

    def __repr__(self) -> str:
        return f"MaxPool2d(kernel_size={self.kernel_size}, stride={self.stride})"


class AvgPool2d(Layer):
    """Average pooling over non-overlapping ``k x k`` windows (stride ``k``), no padding.

    Each output is the mean of its window, so each input pixel of a window gets
    ``1 / k**2`` of that output's gradient. Sizes round down like PyTorch.

    Examples
    --------
    >>> pool = AvgPool2d(2)
    >>> pool(np.arange(16.0).reshape(1, 1, 4, 4))[0, 0]
    array([[ 2.5,  4.5],
           [10.5, 12.5]])
    >>> pool.backward(np.ones((1, 1, 2, 2)))[0, 0, :2]
    array([[0.25, 0.25, 0.25, 0.25],
           [0.25, 0.25, 0.25, 0.25]])
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = int(kernel_size)
        if self.kernel_size < 1:
            raise KernelscopeError(f"AvgPool2d kernel_size={kernel_size} must be >= 1")

    def forward(self, x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        k = self.kernel_size
        if h < k or w < k:
            raise KernelscopeError(f"AvgPool2d kernel_size={k} is larger than the input {h}x{w}")
        ho, wo = h // k, w // k
        self._shape = x.shape
        total = np.zeros((n, c, ho, wo), dtype=np.result_type(x.dtype, np.float32))  # (N, C, H', W')
        for u in range(k):  # window sums tap by tap, in PyTorch's row-major order
            for v in range(k):
                total += x[:, :, u:ho * k:k, v:wo * k:k]  # (N, C, H', W')
        total /= k * k
        return total

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        n, c, h, w = self._shape
        k = self.kernel_size
        ho, wo = grad_out.shape[2:]
        share = grad_out / (k * k)  # (N, C, H', W'): each of the k*k pixels gets an equal share
        grad_x = np.zeros(self._shape, dtype=grad_out.dtype)  # (N, C, H, W)
        grad_x[:, :, :ho * k, :wo * k] = np.broadcast_to(
            share[:, :, :, None, :, None], (n, c, ho, k, wo, k)).reshape(n, c, ho * k, wo * k)
        return grad_x

    def __repr__(self) -> str:
        return f"AvgPool2d(kernel_size={self.kernel_size})"


class Flatten(Layer):
    """``(N, C, H, W) -> (N, C*H*W)`` in C order, like ``torch.flatten(x, 1)``."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)  # (N, C*H*W)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        return grad_out.reshape(self._shape)  # (N, C, H, W)


class Linear(Layer):
    """``y = x @ W.T + b`` with ``W`` of shape ``(out_features, in_features)`` like PyTorch.

    Examples
    --------
    >>> fc = Linear(3, 2, rng=np.random.default_rng(0), dtype=np.float64)
    >>> y = fc(np.ones((5, 3)))
    >>> y.shape, fc.backward(np.ones((5, 2))).shape, fc.grads["bias"]
    ((5, 2), (5, 3), array([5., 5.]))
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 rng: np.random.Generator | None = None, dtype: np.dtype | type = np.float32) -> None:
        super().__init__()
        rng = np.random.default_rng() if rng is None else rng
        self.params["weight"] = kaiming_uniform_init((out_features, in_features), in_features, rng, dtype)
        if bias:
            self.params["bias"] = kaiming_uniform_init((out_features,), in_features, rng, dtype)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise KernelscopeError(
                f"Linear({self.in_features}, {self.out_features}) got input of shape {tuple(x.shape)}; "
                f"expected (N, {self.in_features})")
        self._x = x  # (N, in)
        out = x @ self.params["weight"].T  # (N, out)
        if "bias" in self.params:
            out = out + self.params["bias"]
        return out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        self.grads["weight"] = grad_out.T @ self._x  # (out, in)
        if "bias" in self.params:
            self.grads["bias"] = grad_out.sum(axis=0)  # (out,)
        return grad_out @ self.params["weight"]  # (N, in)

    def __repr__(self) -> str:
        return f"Linear({self.in_features}, {self.out_features})"
