"""A sequential network of NumPy layers, and the LeNet-style network it trains.

Layer names and parameter names follow PyTorch's ``nn.Sequential`` so that a
state dict (``"features.0.weight"``, ...) means the same on both sides: weights
can be copied from a torch model, and a trained NumPy network can be loaded
back into the torch model of the same shape.
"""

from __future__ import annotations

import numpy as np

from kernelscope.errors import KernelscopeError
from kernelscope.npnet.layers import AvgPool2d, Conv2d, Flatten, Layer, Linear, MaxPool2d, ReLU

__all__ = ["Sequential", "lenet"]


class Sequential:
    """Named layers applied in order; backward runs them in reverse.

    Parameters
    ----------
    layers : list of (str, Layer)
        Dotted names (``"features.0"``) and layers, in the order they run.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> net = Sequential([("0", Linear(4, 3, rng=rng)), ("1", ReLU()), ("2", Linear(3, 2, rng=rng))])
    >>> sorted(net.parameters())
    ['0.bias', '0.weight', '2.bias', '2.weight']
    >>> logits = net.forward(np.ones((5, 4), dtype=np.float32))
    >>> net.backward(np.ones_like(logits)).shape
    (5, 4)
    """

    def __init__(self, layers: list[tuple[str, Layer]]) -> None:
        self.layers = list(layers)
        names = [name for name, _ in self.layers]
        if len(set(names)) != len(names):
            raise KernelscopeError(f"layer names must be unique; got {names}")

    def forward(self, x: np.ndarray) -> np.ndarray:
        for _, layer in self.layers:
            x = layer.forward(x)
        return x

    __call__ = forward

    def backward(self, grad_out: np.ndarray) -> np.ndarray | None:
        """Back-propagate ``grad_out`` (the loss gradient of the output); fills every layer's grads."""
        grad: np.ndarray | None = grad_out
        for _, layer in reversed(self.layers):
            if grad is None:  # a layer that does not need its input gradient ends the chain
                break
            grad = layer.backward(grad)
        return grad

    def parameters(self) -> dict[str, np.ndarray]:
        """The parameters by full name; the arrays themselves (updated in place by the optimiser)."""
        return {f"{name}.{key}": value for name, layer in self.layers for key, value in layer.params.items()}

    def gradients(self) -> dict[str, np.ndarray]:
        """The gradients of the last backward, by full parameter name."""
        return {f"{name}.{key}": value for name, layer in self.layers for key, value in layer.grads.items()}

    def conv_layers(self) -> list[str]:
        """Names of the convolution layers, in order."""
        return [name for name, layer in self.layers if isinstance(layer, Conv2d)]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters, by full name (a plain dict of arrays)."""
        return {name: value.copy() for name, value in self.parameters().items()}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the parameters (in place); names and shapes must match exactly."""
        params = self.parameters()
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise KernelscopeError(
                f"state dict does not match the network: missing {missing}, unexpected {unexpected}")
        for name, value in params.items():
            new = np.asarray(state[name])
            if new.shape != value.shape:
                raise KernelscopeError(
                    f"parameter {name!r} has shape {tuple(value.shape)}; the state dict gives {tuple(new.shape)}")
            value[...] = new

    def astype(self, dtype: np.dtype | type) -> Sequential:
        """Convert every parameter to ``dtype`` (in place on the layers); returns self."""
        for _, layer in self.layers:
            for key in layer.params:
                layer.params[key] = layer.params[key].astype(dtype)
        return self

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({name}): {layer!r}" for name, layer in self.layers)
        return f"Sequential(\n{inner}\n)"


def lenet(*, in_channels: int = 1, num_classes: int = 10, input_size: int = 28, conv1_channels: int = 6,
          conv2_channels: int = 16, kernel_size: int = 5, hidden: tuple[int, int] = (120, 84),
          pool: str = "avg", seed: int | None = 0, dtype: np.dtype | type = np.float32) -> Sequential:
    """LeNet-5 in NumPy (ReLU), laid out like the zoo's ``lenet5`` (same layer names and shapes).

    ::

        features.0   Conv2d(in, 6, 5, padding=2)   (N, 6, S, S)
        features.1   ReLU
        features.2   AvgPool2d(2)                  (N, 6, S/2, S/2)
        features.3   Conv2d(6, 16, 5)              (N, 16, S/2-4, S/2-4)
        features.4   ReLU
        features.5   AvgPool2d(2)                  (N, 16, (S/2-4)/2, ...)
        classifier.0 Flatten
        classifier.1 Linear(16*s*s, 120), classifier.2 ReLU
        classifier.3 Linear(120, 84),     classifier.4 ReLU
        classifier.5 Linear(84, num_classes)

    Parameters
    ----------
    in_channels, num_classes, input_size : int
        Input channels, classes and the side ``S`` of square inputs (>= 12).
    conv1_channels, conv2_channels, kernel_size : int
        Width of the two conv layers and their (odd) kernel side; the first layer
        pads by ``kernel_size // 2`` so it keeps the image size.
    hidden : (int, int)
        Widths of the two hidden linear layers.
    pool : {"avg", "max"}
        Average pooling (like the zoo's ``lenet5``) or max pooling.
    seed : int or None
        Seeds PyTorch's default initialisation drawn in NumPy.
    dtype : numpy dtype
        float32 (like PyTorch's default) or float64.

    Examples
    --------
    >>> net = lenet(input_size=28)
    >>> net.forward(np.zeros((2, 1, 28, 28), dtype=np.float32)).shape
    (2, 10)
    >>> net.conv_layers()
    ['features.0', 'features.3']
    """
    k = int(kernel_size)
    if k < 1 or k % 2 == 0:
        raise KernelscopeError(f"kernel_size must be a positive odd int; got {kernel_size!r}")
    side = (input_size // 2 - (k - 1)) // 2
    if side < 1:
        raise KernelscopeError(
            f"input_size={input_size} is too small for LeNet with kernel_size={k} "
            f"(needs at least {2 * (2 + k - 1)})")
    if pool not in ("avg", "max"):
        raise KernelscopeError(f"pool must be 'avg' or 'max'; got {pool!r}")
    pooling = AvgPool2d if pool == "avg" else MaxPool2d
    rng = np.random.default_rng(seed)
    conv1 = Conv2d(in_channels, conv1_channels, k, padding=k // 2, input_grad=False, rng=rng, dtype=dtype)
    conv2 = Conv2d(conv1_channels, conv2_channels, k, rng=rng, dtype=dtype)
    fc1 = Linear(conv2_channels * side * side, hidden[0], rng=rng, dtype=dtype)
    fc2 = Linear(hidden[0], hidden[1], rng=rng, dtype=dtype)
    fc3 = Linear(hidden[1], num_classes, rng=rng, dtype=dtype)
    return Sequential([
        ("features.0", conv1), ("features.1", ReLU()), ("features.2", pooling(2)),
        ("features.3", conv2), ("features.4", ReLU()), ("features.5", pooling(2)),
        ("classifier.0", Flatten()), ("classifier.1", fc1), ("classifier.2", ReLU()),
        ("classifier.3", fc2), ("classifier.4", ReLU()), ("classifier.5", fc3),
    ])
